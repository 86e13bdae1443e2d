"""Online key rotation: re-seal every row with the primary key, in small batches.

Each batch is one read of at most ``batch_size`` rows still on another key, then one
``UPDATE`` per row that applies only if the row was not written in the meantime (a
concurrent upsert already sealed it with whichever key its writer holds) and is not
leased by a refresh in flight (whose outcome must not be lost). No long
transaction, no table lock; ``updated_at`` is left alone. Stopping at any point and
running again resumes where it stopped, because the next read finds what is left.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from token_vault.errors import KeyringError
from token_vault.storage.record import SealedColumns
from token_vault.vault.core import ACCESS_TOKEN_TYPE, TokenVault

__all__ = ["RotationReport", "keys_in_use", "rotate_keys"]

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class RotationReport:
    resealed: int
    skipped_concurrent: int
    batches: int


async def keys_in_use(vault: TokenVault) -> dict[str, int]:
    """How many ciphertexts (tokens and cached access tokens) each key id seals."""
    return await vault.backend.count_by_key()


async def rotate_keys(
    vault: TokenVault,
    *,
    batch_size: int = 500,
    progress: Progress | None = None,
    max_batches: int | None = None,
) -> RotationReport:
    """Re-seal every row not on the primary key; ``progress`` gets rows done per batch."""
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    primary = vault.keyring.primary
    backend = vault.backend
    resealed = skipped = batches = 0
    while max_batches is None or batches < max_batches:
        rows = await backend.rows_on_other_keys(primary, batch_size, vault.now())
        if not rows:
            break
        batches += 1
        done = batch_skipped = 0
        for row in rows:
            entry = vault.entry_from_row(row)
            refresh = vault.seal(entry.token, user_id=row.user_id, token_type=row.token_type)
            access: SealedColumns | None = None
            cached = vault.open_access_token(row)
            if cached is not None:
                access = vault.seal(cached, user_id=row.user_id, token_type=ACCESS_TOKEN_TYPE)
            if await backend.reseal(row.id, row.nonce, refresh, access, vault.now()):
                resealed += 1
            else:
                batch_skipped += 1
            done += 1
        if progress is not None:
            progress(done)
        skipped += batch_skipped
        if batch_skipped == len(rows):
            # Every row of the batch was rewritten under us by writers holding an older
            # primary: rotating further would chase them forever.
            raise KeyringError(
                "rows keep being written with another key: give every instance the new "
                "primary key before rotating"
            )
    return RotationReport(resealed=resealed, skipped_concurrent=skipped, batches=batches)
