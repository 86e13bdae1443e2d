"""The keyring: AES-256-GCM, fresh nonces, ciphertexts bound to their row, one opaque error."""

from __future__ import annotations

import base64

import pytest

from token_vault import DecryptionError, Key, Keyring, KeyringError, generate_key_spec
from token_vault.crypto.keyring import Sealed

TOKEN = "eyJhbGciOiJSUzI1NiJ9.refresh-token-payload.signature"


def ring(*ids: str, primary: str) -> Keyring:
    return Keyring([Key.generate(i) for i in ids], primary=primary)


def test_seal_then_open_round_trips() -> None:
    keyring = ring("k1", primary="k1")
    sealed = keyring.seal(TOKEN, user_id="alice", token_type="refresh")
    assert sealed.key_id == "k1"
    assert len(sealed.nonce) == 12
    assert TOKEN.encode() not in sealed.ciphertext
    assert keyring.open(sealed, user_id="alice", token_type="refresh") == TOKEN


def test_two_encryptions_of_one_token_differ() -> None:
    keyring = ring("k1", primary="k1")
    a = keyring.seal(TOKEN, user_id="alice", token_type="refresh")
    b = keyring.seal(TOKEN, user_id="alice", token_type="refresh")
    assert a.nonce != b.nonce
    assert a.ciphertext != b.ciphertext


def test_every_flipped_byte_fails_to_decrypt() -> None:
    keyring = ring("k1", primary="k1")
    sealed = keyring.seal(TOKEN, user_id="alice", token_type="refresh")
    failures = 0
    for field in ("nonce", "ciphertext"):
        data = getattr(sealed, field)
        for index in range(len(data)):
            for bit in (0x01, 0x80):
                tampered = bytearray(data)
                tampered[index] ^= bit
                parts = {
                    "nonce": sealed.nonce,
                    "ciphertext": sealed.ciphertext,
                    field: bytes(tampered),
                }
                with pytest.raises(DecryptionError):
                    keyring.open(
                        Sealed(parts["ciphertext"], parts["nonce"], sealed.key_id),
                        user_id="alice",
                        token_type="refresh",
                    )
                failures += 1
    assert failures == 2 * (len(sealed.nonce) + len(sealed.ciphertext))


@pytest.mark.parametrize(
    ("user_id", "token_type"), [("bob", "refresh"), ("alice", "offline"), ("alice ", "refresh")]
)
def test_ciphertext_moved_to_another_row_fails(user_id: str, token_type: str) -> None:
    keyring = ring("k1", primary="k1")
    sealed = keyring.seal(TOKEN, user_id="alice", token_type="refresh")
    with pytest.raises(DecryptionError):
        keyring.open(sealed, user_id=user_id, token_type=token_type)


def test_wrong_key_and_unknown_key_id_give_the_same_opaque_error() -> None:
    sealed = ring("k1", primary="k1").seal(TOKEN, user_id="alice", token_type="refresh")
    other = ring("k1", primary="k1")  # same id, different material
    with pytest.raises(DecryptionError) as wrong:
        other.open(sealed, user_id="alice", token_type="refresh")
    with pytest.raises(DecryptionError) as unknown:
        ring("k2", primary="k2").open(sealed, user_id="alice", token_type="refresh")
    relabelled = Sealed(sealed.ciphertext, sealed.nonce, "k2")
    keyring = Keyring([other.key("k1"), Key.generate("k2")], primary="k2")
    with pytest.raises(DecryptionError) as moved_key:
        keyring.open(relabelled, user_id="alice", token_type="refresh")
    assert str(wrong.value) == str(unknown.value) == str(moved_key.value)


def test_primary_seals_and_every_key_opens() -> None:
    old = Key.generate("old")
    before = Keyring([old], primary="old")
    sealed_old = before.seal(TOKEN, user_id="u", token_type="refresh")
    after = before.with_primary(Key.generate("new"))
    assert after.primary == "new"
    assert after.open(sealed_old, user_id="u", token_type="refresh") == TOKEN
    assert after.seal(TOKEN, user_id="u", token_type="refresh").key_id == "new"
    with pytest.raises(KeyringError):
        after.without("new")
    assert after.without("old").key_ids == {"new"}


def test_spec_round_trip_names_primary_explicitly() -> None:
    spec = generate_key_spec()
    keyring = Keyring.from_spec(spec)
    assert spec.startswith(f"primary={keyring.primary},")
    assert Keyring.from_spec(keyring.to_spec()).primary == keyring.primary
    a, b = Key.generate("a"), Key.generate("b")
    two = Keyring.from_spec(f"{a.encoded()}\n{b.encoded()}\nprimary=b")
    assert two.primary == "b"
    assert two.key_ids == {"a", "b"}


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "   ",
        "primary=k1",
        "k1=" + base64.b64encode(b"x" * 32).decode(),  # no primary
        "primary=k2,k1=" + base64.b64encode(b"x" * 32).decode(),  # primary not in ring
        "primary=k1,k1=" + base64.b64encode(b"x" * 16).decode(),  # 128-bit key
        "primary=k1,k1=" + base64.b64encode(b"x" * 33).decode(),
        "primary=k1,k1=not*base64*at*all",
        "primary=k1,k1",
        "primary=bad id,bad id=" + base64.b64encode(b"x" * 32).decode(),
        "primary=k1,primary=k1,k1=" + base64.b64encode(b"x" * 32).decode(),
    ],
)
def test_bad_key_specs_refuse_to_open(spec: str) -> None:
    with pytest.raises(KeyringError):
        Keyring.from_spec(spec)


def test_reprs_never_show_key_material() -> None:
    key = Key.generate("k1")
    keyring = Keyring([key], primary="k1")
    sealed = keyring.seal(TOKEN, user_id="u", token_type="refresh")
    material = base64.b64encode(key.material).decode()
    for text in (repr(key), repr(keyring), str(keyring), repr(sealed)):
        assert material not in text
        assert key.material.hex() not in text
        assert TOKEN not in text
