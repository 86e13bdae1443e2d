"""Online key rotation: re-seal every row with the primary key, in small batches.

Each batch is one read of at most ``batch_size`` rows still on another key, then one
``UPDATE`` per row that applies only if the row was not written in the meantime (a
concurrent upsert already sealed it with whichever key its writer holds) and is not
leased by a refresh in flight (whose outcome must not be lost). No long
transaction, no table lock; ``updated_at`` is left alone. Stopping at any point and
running again resumes where it stopped, because the next read finds what is left.

Reached through :meth:`TokenVault.rotate_keys` and :meth:`TokenVault.keys_in_use`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from token_vault.errors import KeyringError
from token_vault.storage.record import Backend
from token_vault.vault.sealer import RowSealer

__all__ = ["Progress", "RotationReport", "rotate"]

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class RotationReport:
    resealed: int
    skipped_concurrent: int
    batches: int


async def rotate(
    backend: Backend,
    sealer: RowSealer,
    now: Callable[[], datetime],
    *,
    batch_size: int,
    progress: Progress | None,
    max_batches: int | None,
) -> RotationReport:
    """Re-seal every row not on the primary key; ``progress`` gets rows done per batch."""
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    primary = sealer.keyring.primary
    resealed = skipped = batches = 0
    while max_batches is None or batches < max_batches:
        rows = await backend.rows_on_other_keys(primary, batch_size, now())
        if not rows:
            break
        batches += 1
        batch_skipped = 0
        for row in rows:
            entry = sealer.entry(row)
            refresh = sealer.seal(
                entry.token, user_id=row.user_id, token_type=row.token_type, entry_id=row.id
            )
            cached = sealer.access(row)
            access = (
                sealer.seal_access(
                    cached.token, user_id=row.user_id, entry_id=row.id, version=refresh.version
                )
                if cached
                else None
            )
            if await backend.reseal(row.id, row.sealed.nonce, refresh, access, now()):
                resealed += 1
            else:
                batch_skipped += 1
        if progress is not None:
            progress(len(rows))
        skipped += batch_skipped
        if batch_skipped == len(rows):
            # Every row of the batch was rewritten under us by writers holding an older
            # primary: rotating further would chase them forever.
            raise KeyringError(
                "rows keep being written with another key: give every instance the new "
                "primary key before rotating"
            )
    return RotationReport(resealed=resealed, skipped_concurrent=skipped, batches=batches)
