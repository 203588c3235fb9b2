"""Payload encryption at rest: AES-GCM key ring, key spec parsing, the key file."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from carehook.crypto import (
    KEY_FILE_NAME,
    KeyRing,
    load_key_ring,
    new_key_spec,
    parse_key_spec,
    payload_aad,
)
from carehook.errors import ConfigError, CryptoError

AAD = payload_aad("abridge-prod", "evt_1")


def _key(byte: int) -> bytes:
    return bytes([byte]) * 32


def _kid_of(blob: bytes) -> str:
    """The key id a ciphertext names (format: b"CH1" | len | kid | nonce | ct)."""
    return blob[4 : 4 + blob[3]].decode()


def test_round_trip_returns_the_plaintext() -> None:
    """What is encrypted decrypts to the same bytes, and the ciphertext does not show them."""
    ring = KeyRing(keys={"k1": _key(1)}, active="k1")
    plaintext = b'{"patient": "Jane Doe"}'
    blob = ring.encrypt(plaintext, AAD)
    assert b"Jane Doe" not in blob
    assert ring.decrypt(blob, AAD) == plaintext


def test_two_encryptions_differ() -> None:
    """A fresh nonce each time: equal payloads do not give equal ciphertexts."""
    ring = KeyRing(keys={"k1": _key(1)}, active="k1")
    assert ring.encrypt(b"same", AAD) != ring.encrypt(b"same", AAD)


def test_wrong_aad_is_refused() -> None:
    """A payload moved to another event (other source or event id) fails authentication."""
    ring = KeyRing(keys={"k1": _key(1)}, active="k1")
    blob = ring.encrypt(b"payload", AAD)
    with pytest.raises(CryptoError):
        ring.decrypt(blob, payload_aad("abridge-prod", "evt_2"))
    with pytest.raises(CryptoError):
        ring.decrypt(blob, payload_aad("abridge-staging", "evt_1"))


def test_tampered_or_foreign_ciphertext_is_refused() -> None:
    """A flipped bit or bytes that are not a carehook ciphertext raise CryptoError."""
    ring = KeyRing(keys={"k1": _key(1)}, active="k1")
    blob = bytearray(ring.encrypt(b"payload", AAD))
    blob[-1] ^= 0x01
    with pytest.raises(CryptoError):
        ring.decrypt(bytes(blob), AAD)
    with pytest.raises(CryptoError):
        ring.decrypt(b'{"plain": "json"}', AAD)


def test_rotation_old_key_decrypts_new_key_encrypts() -> None:
    """After rotation the new key encrypts, and what the old key encrypted still decrypts."""
    old_ring = KeyRing(keys={"old": _key(1)}, active="old")
    old_blob = old_ring.encrypt(b"before rotation", AAD)
    rotated = KeyRing(keys={"new": _key(2), "old": _key(1)}, active="new")

    assert rotated.decrypt(old_blob, AAD) == b"before rotation"
    new_blob = rotated.encrypt(b"after rotation", AAD)
    assert _kid_of(new_blob) == "new"
    with pytest.raises(CryptoError, match="not in the key ring"):
        old_ring.decrypt(new_blob, AAD)


def test_key_spec_first_key_is_active() -> None:
    """In ``kid:key,kid:key`` the first key encrypts and every key decrypts."""
    spec = f"{new_key_spec('k2')}, {new_key_spec('k1')}"
    ring = parse_key_spec(spec)
    assert ring.active == "k2"
    assert set(ring.keys) == {"k1", "k2"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "holds no key"),
        (" , ", "holds no key"),
        ("k1", "kid:base64key"),
        ("k1:not base64!", "not valid base64"),
        ("k1:" + base64.b64encode(b"short").decode(), "32 bytes"),
        (":" + base64.b64encode(_key(1)).decode(), "key ids"),
    ],
)
def test_malformed_key_spec_is_a_config_error(spec: str, message: str) -> None:
    """Every malformed CAREHOOK_DATA_KEYS is a ConfigError that says what is wrong."""
    with pytest.raises(ConfigError, match=message):
        parse_key_spec(spec)


def test_key_spec_error_never_shows_the_key() -> None:
    """A refused key is not echoed back into logs through the error message."""
    secret = base64.b64encode(b"sixteen byte key").decode()
    with pytest.raises(ConfigError) as info:
        parse_key_spec(f"k1:{secret}")
    assert secret not in str(info.value)


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    """Without CAREHOOK_DATA_KEYS a 0600 key file is created once and read back after."""
    data_dir = tmp_path / "data"
    first = load_key_ring(data_dir, None)
    path = data_dir / KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = load_key_ring(data_dir, None)
    assert second.keys == first.keys
    assert second.decrypt(first.encrypt(b"x", AAD), AAD) == b"x"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    """A key file that group or others can read is refused rather than used."""
    load_key_ring(tmp_path, None)
    os.chmod(tmp_path / KEY_FILE_NAME, mode)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_key_ring(tmp_path, None)


def test_environment_keys_win_over_the_key_file(tmp_path: Path) -> None:
    """CAREHOOK_DATA_KEYS is used as given and no key file is written."""
    spec = new_key_spec("env")
    ring = load_key_ring(tmp_path, spec)
    assert ring.active == "env"
    assert not (tmp_path / KEY_FILE_NAME).exists()
