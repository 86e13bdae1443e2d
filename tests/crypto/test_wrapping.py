"""Wrapped keys: the spec form, the KeyWrapper contract, the settings that choose a KEK.

A KEK held in a dict stands in for the KMS here; tests/crypto/test_kek_providers.py runs
the same paths against moto's KMS server and a SoftHSM2 token.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import Any

import pytest

from token_vault import ConfigurationError, Key, Keyring, KeyringError, VaultSettings
from token_vault.crypto import (
    KeyWrapper,
    is_wrapped_spec,
    rewrap_spec,
    unwrap_keyring,
    wrap_keyring,
)
from token_vault.crypto.hsm import Pkcs11Wrapper
from token_vault.crypto.kms import AwsKmsWrapper

TOKEN = "rt-eyJhbGciOiJSUzI1NiJ9.wrapped-keys-payload"


class DictKek:
    """A KEK in a dict: wrap hands out a random handle bound to the data key's id."""

    def __init__(self, name: str = "dict-kek") -> None:
        self.name = name
        self.wrapped: dict[bytes, tuple[str, bytes]] = {}
        self.calls = 0

    @property
    def kek_id(self) -> str:
        return f"dict:{self.name}"

    def wrap(self, material: bytes, *, key_id: str) -> bytes:
        handle = secrets.token_bytes(16)
        self.wrapped[handle] = (key_id, material)
        return handle

    def unwrap(self, blob: bytes, *, key_id: str) -> bytes:
        self.calls += 1
        bound_to, material = self.wrapped.get(blob, ("", b""))
        if bound_to != key_id:
            raise KeyringError("not wrapped by this KEK for this key id")
        return material


def two_keys() -> Keyring:
    return Keyring([Key.generate("k1"), Key.generate("k2")], primary="k2")


def settings(**fields: Any) -> VaultSettings:
    return VaultSettings(_env_file=None, **fields)


def test_every_provider_has_the_key_wrapper_shape() -> None:
    assert isinstance(DictKek(), KeyWrapper)
    assert isinstance(AwsKmsWrapper("alias/kek", client=object()), KeyWrapper)
    pkcs11 = Pkcs11Wrapper(module="/lib.so", token_label="t", pin="123456", key_label="kek")
    assert isinstance(pkcs11, KeyWrapper)


def test_wrapped_spec_names_the_primary_and_holds_no_key_material() -> None:
    keyring = two_keys()
    spec = wrap_keyring(keyring, DictKek())
    assert spec.startswith("primary=k2,k2=wrapped:")
    assert ",k1=wrapped:" in spec
    assert is_wrapped_spec(spec)
    assert not is_wrapped_spec(keyring.to_spec())
    for key_id in ("k1", "k2"):
        material = keyring.key(key_id).material
        for form in (base64.b64encode(material), base64.urlsafe_b64encode(material)):
            assert form.decode().rstrip("=") not in spec


def test_unwrapped_keys_open_what_the_plain_keys_sealed() -> None:
    keyring = two_keys()
    sealed = keyring.seal(TOKEN, user_id="alice", token_type="refresh")
    kek = DictKek()
    opened = unwrap_keyring(wrap_keyring(keyring, kek), kek)
    assert opened.primary == "k2"
    assert opened.key_ids == {"k1", "k2"}
    assert opened.open(sealed, user_id="alice", token_type="refresh") == TOKEN


def test_a_wrapped_key_moved_to_another_id_does_not_unwrap() -> None:
    kek = DictKek()
    spec = wrap_keyring(two_keys(), kek)
    entries = dict(entry.split("=", 1) for entry in spec.split(","))
    swapped = f"primary=k2,k2={entries['k1']},k1={entries['k2']}"
    with pytest.raises(KeyringError, match="cannot unwrap data key 'k2' with dict:dict-kek"):
        unwrap_keyring(swapped, kek)


def test_a_kek_that_cannot_unwrap_stops_the_keyring_naming_key_and_kek() -> None:
    spec = wrap_keyring(two_keys(), DictKek("old"))
    with pytest.raises(KeyringError) as refused:
        unwrap_keyring(spec, DictKek("other"))
    message = str(refused.value)
    assert "cannot unwrap data key 'k2' with dict:other" in message
    assert "does not start without its keys" in message


def test_plain_keys_are_refused_once_a_kek_is_configured() -> None:
    keyring = two_keys()
    kek = DictKek()
    mixed = wrap_keyring(keyring, kek) + "," + Key.generate("k0").encoded()
    with pytest.raises(KeyringError, match=r"key\(s\) k0 are not wrapped"):
        unwrap_keyring(mixed, kek)
    with pytest.raises(KeyringError, match="keys wrap"):
        unwrap_keyring(keyring.to_spec(), kek)


def test_wrapped_keys_without_a_kek_are_refused_with_the_setting_to_set() -> None:
    spec = wrap_keyring(two_keys(), DictKek())
    with pytest.raises(KeyringError, match="TOKEN_VAULT_KEK_PROVIDER"):
        Keyring.from_spec(spec)
    with pytest.raises(KeyringError, match="TOKEN_VAULT_KEK_PROVIDER"):
        settings(keys=spec).keyring()


@pytest.mark.parametrize("value", ["wrapped:", "wrapped:***", "wrapped:QUJD"])
def test_a_malformed_wrapped_key_is_refused(value: str) -> None:
    with pytest.raises(KeyringError):
        unwrap_keyring(f"primary=k1,k1={value}", DictKek())


def test_rewrap_changes_the_kek_not_the_keys() -> None:
    keyring = two_keys()
    old, new = DictKek("old"), DictKek("new")
    spec = wrap_keyring(keyring, old)
    rewrapped = rewrap_spec(spec, old, new)
    assert rewrapped != spec
    with pytest.raises(KeyringError):
        unwrap_keyring(rewrapped, old)
    opened = unwrap_keyring(rewrapped, new)
    for key_id in keyring.key_ids:
        assert opened.key(key_id).material == keyring.key(key_id).material


def test_settings_unwrap_each_key_once_and_keep_the_keyring() -> None:
    dict_kek = DictKek()

    class WithDictKek(VaultSettings):
        def key_wrapper(
            self, *, provider: str | None = None, kek: str | None = None
        ) -> KeyWrapper | None:
            return dict_kek

    configured = WithDictKek(_env_file=None, keys=wrap_keyring(two_keys(), dict_kek))
    calls = dict_kek.calls  # wrap_keyring unwraps each key once to check it
    first = configured.keyring()
    assert configured.keyring() is first
    assert first.key_ids == {"k1", "k2"}
    assert dict_kek.calls == calls + 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kek_provider": "vault-transit"}, "must be one of aws-kms, pkcs11"),
        ({"kek_provider": "aws-kms"}, "TOKEN_VAULT_KMS_KEY_ID is required"),
        ({"kek_provider": "pkcs11"}, "TOKEN_VAULT_PKCS11_KEY_LABEL is required"),
        (
            {"kek_provider": "pkcs11", "pkcs11_key_label": "kek"},
            "TOKEN_VAULT_PKCS11_MODULE and TOKEN_VAULT_PKCS11_TOKEN_LABEL are required",
        ),
        (
            {
                "kek_provider": "pkcs11",
                "pkcs11_key_label": "kek",
                "pkcs11_module": "/lib.so",
                "pkcs11_token_label": "t",
            },
            "TOKEN_VAULT_PKCS11_PIN",
        ),
    ],
)
def test_incomplete_kek_settings_refuse_with_the_missing_setting(
    fields: dict[str, str], message: str
) -> None:
    spec = wrap_keyring(two_keys(), DictKek())
    with pytest.raises(ConfigurationError, match=message):
        settings(keys=spec, **fields).keyring()


def test_the_pin_can_come_from_a_file(tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text("87654321\n", encoding="utf-8")
    wrapper = settings(
        kek_provider="pkcs11",
        pkcs11_key_label="kek",
        pkcs11_module="/lib.so",
        pkcs11_token_label="t",
        pkcs11_pin_file=pin_file,
    ).key_wrapper()
    assert isinstance(wrapper, Pkcs11Wrapper)
    assert wrapper.kek_id == "pkcs11:t/kek"


def test_wrapper_reprs_name_the_kek_and_never_the_pin() -> None:
    pin = "a-pin-of-some-length"
    wrapper = Pkcs11Wrapper(module="/lib.so", token_label="t", pin=pin, key_label="kek")
    assert pin not in repr(wrapper)
    assert "kek" in repr(wrapper)
    kms = AwsKmsWrapper("arn:aws:kms:eu-west-1:111122223333:key/abc", client=object())
    assert repr(kms) == "AwsKmsWrapper(key_id='arn:aws:kms:eu-west-1:111122223333:key/abc')"
    assert kms.kek_id == "aws-kms:arn:aws:kms:eu-west-1:111122223333:key/abc"
