"""One of several processes asking for the same user's access token at the same moment.

Run as ``python -m tests.support.access_worker`` with the settings in the environment; prints a
JSON object: the tokens obtained and the errors raised.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime, timedelta

from token_vault import Keyring, TokenVault, VaultError
from token_vault.oidc.access import AccessTokens
from token_vault.oidc.provider import OpenIDProvider, ProviderSettings


async def main() -> None:
    env = os.environ
    # WORKER_LEASE_SECONDS: a short lease; WORKER_CLOCK_OFFSET: a replica whose clock is off.
    offset = timedelta(seconds=float(env.get("WORKER_CLOCK_OFFSET", "0")))

    def clock() -> datetime:
        return datetime.now(UTC) + offset

    vault = await TokenVault.open(
        env["WORKER_DATABASE_URL"], Keyring.from_spec(env["WORKER_KEYS"]), clock=clock
    )
    provider = OpenIDProvider(
        ProviderSettings(env["WORKER_ISSUER"], env["WORKER_CLIENT_ID"], env["WORKER_CLIENT_SECRET"])
    )
    access = AccessTokens(
        vault,
        provider,
        lease=timedelta(seconds=float(env.get("WORKER_LEASE_SECONDS", "60"))),
        clock=clock,
    )
    await provider.metadata()  # warm up, so every process starts on the same footing
    delay = float(env["WORKER_START_AT"]) - time.time()
    if delay > 0:
        await asyncio.sleep(delay)

    async def one() -> str:
        try:
            return (await access.get_access_token(env["WORKER_USER"])).token
        except VaultError as error:
            return f"error:{type(error).__name__}"

    results = await asyncio.gather(*(one() for _ in range(int(env["WORKER_CALLS"]))))
    await provider.close()
    await vault.close()
    print(
        json.dumps(
            {
                "tokens": [r for r in results if not r.startswith("error:")],
                "errors": [r for r in results if r.startswith("error:")],
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
