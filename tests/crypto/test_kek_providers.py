"""Data keys wrapped by a real KEK: AWS KMS (moto's server) and PKCS#11 (a SoftHSM2 token).

Each test runs against both: the KEK is made there and never leaves it; the vault's
configuration holds only wrapped keys; the vault opens rows sealed before the keys were
wrapped; `keys rewrap` moves the keys to a new KEK without touching a row; and when the
KEK cannot unwrap, the vault refuses to start, saying which key and which KEK.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.support.cli import cli
from tests.support.databases import Databases
from tests.support.kek import KekHolder, MotoKms, SoftHsm
from token_vault import Key, Keyring, KeyringError, TokenVault, VaultSettings
from token_vault.crypto import unwrap_keyring, wrap_keyring
from token_vault.crypto.kms import AwsKmsWrapper
from token_vault.service.settings import ServiceSettings
from token_vault.testing.pgcluster import PgCluster, free_port

EXPIRES = datetime(2031, 1, 1, tzinfo=UTC)
USERS = 50

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def moto_kms() -> Iterator[MotoKms]:
    with MotoKms() as kms:
        yield kms


@pytest.fixture(scope="module")
def softhsm() -> Iterator[SoftHsm]:
    with SoftHsm() as hsm:
        yield hsm


@pytest.fixture(params=["aws-kms", "pkcs11"])
def holder(request: pytest.FixtureRequest) -> KekHolder:
    fixture = {"aws-kms": "moto_kms", "pkcs11": "softhsm"}[str(request.param)]
    held: KekHolder = request.getfixturevalue(fixture)
    return held


def configured(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> VaultSettings:
    """Settings read from exactly ``env`` (as the service reads its environment)."""
    for name in [n for n in os.environ if n.startswith("TOKEN_VAULT_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return VaultSettings(_env_file=None)


async def fill(url: str, keyring: Keyring) -> dict[str, str]:
    tokens = {
        f"user-{n}": f"rt-{n}-{base64.b64encode(bytes([n]) * 12).decode()}" for n in range(USERS)
    }
    async with await TokenVault.open(url, keyring) as vault:
        for user, token in tokens.items():
            await vault.upsert_refresh_token(user, token, EXPIRES)
    return tokens


async def read_all(url: str, keyring: Keyring) -> dict[str, str]:
    async with await TokenVault.open(url, keyring) as vault:
        entries = [await vault.get_refresh_token(f"user-{n}") for n in range(USERS)]
    return {e.user_id: e.token for e in entries if e is not None}


def fingerprint(cluster: PgCluster, url: str) -> str:
    """Every column of every row, hashed: equal only if no row changed at all."""
    name = url.rsplit("/", 1)[1]
    return cluster.psql(
        "SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY id)) FROM auth_vault t",
        database=name,
    ).strip()


def assert_no_key_material(text: str, keyring: Keyring) -> None:
    for key_id in keyring.key_ids:
        material = keyring.key(key_id).material
        for form in (base64.b64encode(material), base64.urlsafe_b64encode(material)):
            assert form.decode().rstrip("=") not in text
        assert material.hex() not in text


async def test_wrapped_keys_open_rows_sealed_before_they_were_wrapped(
    holder: KekHolder, databases: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = databases.fresh("postgresql")
    plain = Keyring([Key.generate("k1"), Key.generate("k2")], primary="k2")
    tokens = await fill(url, plain)
    kek = holder.create_kek()
    wrapped = configured(monkeypatch, holder.env(kek)).key_spec_for(plain)
    assert wrapped.startswith("primary=k2,k2=wrapped:")
    assert_no_key_material(wrapped, plain)

    env = {**holder.env(kek), "TOKEN_VAULT_KEYS": wrapped, "TOKEN_VAULT_DATABASE_URL": url}
    settings = configured(monkeypatch, env)
    started = time.perf_counter()
    keyring = settings.keyring()
    unwrapped_in = time.perf_counter() - started
    assert keyring.key_ids == {"k1", "k2"}
    assert await read_all(url, keyring) == tokens
    async with await settings.open_vault() as vault:
        assert await vault.keys_in_use() == {"k2": USERS}
    print(f"{holder.provider}: 2 data keys unwrapped in {unwrapped_in * 1000:.1f} ms")


def test_keys_wrap_then_rewrap_moves_the_keys_to_a_new_kek_without_touching_a_row(
    holder: KekHolder, databases: Databases, pg_cluster: PgCluster
) -> None:
    import asyncio

    url = databases.fresh("postgresql")
    plain = Keyring([Key.generate("k1"), Key.generate("k2")], primary="k2")
    tokens = asyncio.run(fill(url, plain))
    before = fingerprint(pg_cluster, url)
    old_kek, new_kek = holder.create_kek(), holder.create_kek()
    base = {"TOKEN_VAULT_DATABASE_URL": url}

    wrapped = cli(
        "keys", "wrap", env={**base, **holder.env(old_kek), "TOKEN_VAULT_KEYS": plain.to_spec()}
    )
    assert wrapped.returncode == 0, wrapped.stderr
    name, _, old_spec = wrapped.stdout.strip().partition("=")
    assert name == "TOKEN_VAULT_KEYS"
    assert_no_key_material(wrapped.stdout + wrapped.stderr, plain)

    old_env = {**base, **holder.env(old_kek), "TOKEN_VAULT_KEYS": old_spec}
    status = cli("keys", "status", env=old_env)
    assert status.returncode == 0, status.stderr
    assert f"data keys wrapped by {holder.provider}:" in status.stdout
    assert f"k2 (primary): {USERS} ciphertext(s)" in status.stdout

    started = time.perf_counter()
    rewrapped = cli("keys", "rewrap", "--kek", new_kek, env=old_env)
    took = time.perf_counter() - started
    assert rewrapped.returncode == 0, rewrapped.stderr
    lines = rewrapped.stdout.strip().splitlines()
    assert len(lines) == 2
    new_spec = lines[0].removeprefix("TOKEN_VAULT_KEYS=")
    setting, _, value = lines[1].partition("=")
    assert value == new_kek
    assert new_spec != old_spec
    assert_no_key_material(rewrapped.stdout + rewrapped.stderr, plain)

    new_env = {**base, **holder.env(new_kek), "TOKEN_VAULT_KEYS": new_spec, setting: value}
    assert f"k2 (primary): {USERS} ciphertext(s)" in cli("keys", "status", env=new_env).stdout
    assert asyncio.run(read_all(url, _keyring_from(new_env))) == tokens
    assert fingerprint(pg_cluster, url) == before  # not one row re-encrypted or rewritten

    # The new spec is wrapped by the new KEK only.
    mixed = cli("keys", "status", env={**old_env, "TOKEN_VAULT_KEYS": new_spec})
    assert mixed.returncode == 3
    assert "cannot unwrap data key 'k2'" in mixed.stderr
    if isinstance(holder, SoftHsm):  # the old KEK destroyed: the old spec no longer opens
        holder.remove_kek(old_kek)
        gone = cli("keys", "status", env=old_env)
        assert gone.returncode == 3
        assert f"no AES key labelled {old_kek!r}" in gone.stderr
        assert cli("keys", "status", env=new_env).returncode == 0
    print(f"{holder.provider}: keys rewrap of 2 keys in {took:.2f} s (CLI process included)")


def _keyring_from(env: dict[str, str]) -> Keyring:
    mp = pytest.MonkeyPatch()
    try:
        return configured(mp, env).keyring()
    finally:
        mp.undo()


async def test_the_vault_refuses_to_start_when_the_kek_cannot_unwrap(
    holder: KekHolder, databases: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = databases.fresh("postgresql")
    plain = Keyring([Key.generate("k1")], primary="k1")
    wrapped_by, other = holder.create_kek(), holder.create_kek()
    spec = configured(monkeypatch, holder.env(wrapped_by)).key_spec_for(plain)
    env = {**holder.env(other), "TOKEN_VAULT_KEYS": spec, "TOKEN_VAULT_DATABASE_URL": url}

    with pytest.raises(KeyringError) as refused:
        configured(monkeypatch, env).keyring()
    assert f"cannot unwrap data key 'k1' with {holder.provider}:" in str(refused.value)
    service = ServiceSettings(_env_file=None)
    assert any("cannot unwrap data key 'k1'" in p for p in service.problems())

    stats = cli("stats", env=env)
    assert stats.returncode == 3
    assert stats.stderr.startswith("error: cannot unwrap data key 'k1'")
    assert_no_key_material(stats.stdout + stats.stderr, plain)


@pytest.mark.parametrize("change", ["flipped byte", "moved to another key id"])
async def test_an_altered_wrapped_key_does_not_unwrap(
    holder: KekHolder, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    kek = holder.create_kek()
    wrapper = configured(monkeypatch, holder.env(kek)).key_wrapper()
    assert wrapper is not None
    spec = wrap_keyring(Keyring([Key.generate("k1"), Key.generate("k2")], primary="k1"), wrapper)
    entries = dict(e.split("=", 1) for e in spec.split(","))
    if change == "flipped byte":
        blob = bytearray(base64.urlsafe_b64decode(entries["k1"][8:] + "=="))
        blob[len(blob) // 2] ^= 0x01
        entries["k1"] = "wrapped:" + base64.urlsafe_b64encode(bytes(blob)).decode()
    else:
        entries["k1"], entries["k2"] = entries["k2"], entries["k1"]
    altered = ",".join(f"{k}={v}" for k, v in entries.items())
    with pytest.raises(KeyringError, match="cannot unwrap data key"):
        unwrap_keyring(altered, wrapper)


async def test_an_unreachable_kms_stops_the_vault_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "TOKEN_VAULT_KEK_PROVIDER": "aws-kms",
        "TOKEN_VAULT_KMS_KEY_ID": "arn:aws:kms:eu-west-1:111122223333:key/gone",
        "TOKEN_VAULT_KMS_ENDPOINT_URL": closed,
        "TOKEN_VAULT_KEYS": "primary=k1,k1=wrapped:AAAA",
    }
    started = time.perf_counter()
    with pytest.raises(KeyringError) as refused:
        configured(monkeypatch, env).keyring()
    took = time.perf_counter() - started
    assert "cannot unwrap data key 'k1' with aws-kms:arn:aws:kms:eu-west-1" in str(refused.value)
    assert "Could not connect to the endpoint URL" in str(refused.value)
    assert took < 15
    print(f"unreachable KMS: refused after {took:.2f} s")


async def test_a_refused_pin_a_missing_token_or_module_stop_the_vault(
    softhsm: SoftHsm, monkeypatch: pytest.MonkeyPatch
) -> None:
    kek = softhsm.create_kek()
    spec = configured(monkeypatch, softhsm.env(kek)).key_spec_for(
        Keyring([Key.generate("k1")], primary="k1")
    )
    cases = {
        "refused the PIN": {"TOKEN_VAULT_PKCS11_PIN": "00000000"},
        "no token 'elsewhere'": {"TOKEN_VAULT_PKCS11_TOKEN_LABEL": "elsewhere"},
        "no AES key labelled 'absent'": {"TOKEN_VAULT_PKCS11_KEY_LABEL": "absent"},
    }
    for reason, change in cases.items():
        env = {**softhsm.env(kek), "TOKEN_VAULT_KEYS": spec, **change}
        with pytest.raises(KeyringError, match=reason):
            configured(monkeypatch, env).keyring()
    missing = cli(
        "keys",
        "status",
        env={**softhsm.env(kek), "TOKEN_VAULT_KEYS": spec, "TOKEN_VAULT_PKCS11_MODULE": "/nope.so"},
    )
    assert missing.returncode == 3
    assert "cannot load the PKCS#11 module '/nope.so'" in missing.stderr
    assert softhsm.pin not in missing.stderr


def test_no_data_key_reaches_a_log_even_at_debug(
    moto_kms: MotoKms, caplog: pytest.LogCaptureFixture
) -> None:
    keyring = Keyring([Key.generate("k1")], primary="k1")
    wrapper = AwsKmsWrapper(moto_kms.create_kek(), client=moto_kms.client())
    with caplog.at_level(logging.DEBUG):
        unwrap_keyring(wrap_keyring(keyring, wrapper), wrapper)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert any(r.name.startswith("botocore") for r in caplog.records)  # DEBUG was on
    assert_no_key_material(text, keyring)


def test_keys_rewrap_moves_the_keys_from_kms_to_a_pkcs11_token(
    moto_kms: MotoKms, softhsm: SoftHsm, databases: Databases, pg_cluster: PgCluster
) -> None:
    import asyncio

    url = databases.fresh("postgresql")
    plain = Keyring([Key.generate("k1")], primary="k1")
    tokens = asyncio.run(fill(url, plain))
    kms_key, label = moto_kms.create_kek(), softhsm.create_kek()
    both = {**softhsm.env(label), **moto_kms.env(kms_key), "TOKEN_VAULT_DATABASE_URL": url}
    wrapped = cli("keys", "wrap", env={**both, "TOKEN_VAULT_KEYS": plain.to_spec()})
    kms_spec = wrapped.stdout.strip().removeprefix("TOKEN_VAULT_KEYS=")

    moved = cli(
        "keys", "rewrap", "--provider", "pkcs11", "--kek", label,
        env={**both, "TOKEN_VAULT_KEYS": kms_spec},
    )  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    spec_line, provider_line, label_line = moved.stdout.strip().splitlines()
    assert provider_line == "TOKEN_VAULT_KEK_PROVIDER=pkcs11"
    assert label_line == f"TOKEN_VAULT_PKCS11_KEY_LABEL={label}"
    hsm_env = {
        **softhsm.env(label),
        "TOKEN_VAULT_DATABASE_URL": url,
        "TOKEN_VAULT_KEYS": spec_line.removeprefix("TOKEN_VAULT_KEYS="),
    }
    assert asyncio.run(read_all(url, _keyring_from(hsm_env))) == tokens
