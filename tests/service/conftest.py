"""The service fixtures: one running app per module on real PostgreSQL and a real provider."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.oidc import serve, write_jwks
from tests.support.service import Service, service_env
from token_vault import generate_key_spec
from token_vault.service.app import create_app
from token_vault.service.devprovider import DevProvider, free_port
from token_vault.service.settings import ServiceSettings
from token_vault.testing.pgcluster import PgCluster


@pytest.fixture(scope="module")
def service(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    name = f"svc_{secrets.token_hex(4)}"
    pg_cluster.psql(f"CREATE DATABASE {name} TEMPLATE template_vault", database="postgres")
    database_url = pg_cluster.url_for(name)
    tmp = tmp_path_factory.mktemp("service")
    signing_key = write_jwks(tmp / "jwks.json")
    ports = [free_port() for _ in range(3)]
    with DevProvider(
        redirect_uris=[f"http://127.0.0.1:{p}/auth/callback" for p in ports],
        backchannel_logout_uri=f"http://127.0.0.1:{ports[0]}/auth/backchannel-logout",
        jwks_path=tmp / "jwks.json",
    ) as provider:
        keys = generate_key_spec()
        env = service_env(database_url, keys, provider, ports[0])
        settings = ServiceSettings.model_validate(
            {k.removeprefix("TOKEN_VAULT_").lower(): v for k, v in env.items()}
        )
        running = Service(
            provider, f"http://127.0.0.1:{ports[0]}", database_url, keys, signing_key, env
        )
        running.env["EXTRA_PORTS"] = ",".join(map(str, ports[1:]))
        with serve(create_app(settings), ports[0]):
            yield running


@pytest.fixture
async def client(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.url, timeout=30.0) as http:
        yield http
