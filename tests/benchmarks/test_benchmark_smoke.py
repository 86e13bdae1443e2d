"""The benchmark keeps working: a smoke run at tiny sizes yields every case and target.

No timings are asserted here; the numbers live in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

CASES = {
    ("upsert", "limit"),
    ("upsert", "vault"),
    ("upsert", "usual"),
    ("read", "limit"),
    ("read", "vault"),
    ("access-token state read", "limit"),
    ("access-token state read", "vault"),
    ("sqlite upsert", "direct"),
    ("sqlite upsert", "vault"),
}
MANY_CALLERS_ONLY = {("upsert", "plain"), ("read", "plain")}  # the vault without coalescing


@pytest.mark.slow
def test_smoke_run_reports_every_case_and_target(tmp_path: Path) -> None:
    output, results_json = tmp_path / "BENCHMARKS.md", tmp_path / "results.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--smoke",
            "--duration=0.5",
            f"--output={output}",
            f"--json={results_json}",
        ],
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    report = json.loads(results_json.read_text())
    seen = {(r["case"], r["runner"], r["callers"]) for r in report["results"]}
    assert seen == {(case, runner, n) for case, runner in CASES for n in (1, 16)} | {
        (case, runner, 16) for case, runner in MANY_CALLERS_ONLY
    }
    for result in report["results"]:
        assert result["ops"] > 0
        assert result["rate"] > 0
        assert 0 < result["p50_ms"] <= result["p99_ms"]
        if result["runner"] in ("vault", "plain"):
            assert result["calls_per_statement"] >= 1
            assert result["largest_batch"] >= 1
    verdicts = {t["name"]: t["verdict"] for t in report["targets"]}
    assert len(verdicts) == 15
    assert all(v in {"PASS", "FAIL", "n/a"} for v in verdicts.values())
    # growth runs only with --growth (3); audit, HTTP and fan-in are measured elsewhere (4)
    assert sum(v == "n/a" for v in verdicts.values()) == 7
    markdown = output.read_text()
    assert "<!-- benchmark:begin -->" in markdown
    assert "<!-- benchmark:end -->" in markdown
    assert "| upsert | TokenVault | 16 |" in markdown
    assert "calls per statement (mean, max)" in markdown
    assert "| target | measured | needed | result | note |" in markdown
    assert "postgresql" in markdown
