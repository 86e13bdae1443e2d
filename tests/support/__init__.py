"""Helpers the tests import: databases, the OpenID world, the leak watch, subprocesses.

Nothing here is collected as a test; test files import from here, never from each other.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The checkout: where ``make``, ``python -m benchmarks.run`` and ``-m tests...`` run."""
