"""Payload encryption at rest: AES-256-GCM with a key ring.

Keys come from ``CAREHOOK_DATA_KEYS`` (``kid:base64key,kid2:base64key``; the first is active and
encrypts, all decrypt) or, for the embedded default, from a key file in the data directory created
with mode 0600. A ciphertext is ``b"CH1" | len(kid) | kid | nonce(12) | AES-GCM(ct+tag)``; the
associated data binds it to its (source, event_id), so a row's payload cannot be moved to another.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from carehook.errors import ConfigError, CryptoError

_MAGIC = b"CH1"
_NONCE = 12
KEY_FILE_NAME = "data-keys"
#: nonces drawn from the OS at once, per thread
_NONCE_BLOCK = 4096


class _Nonces(threading.local):
    """One thread's block of random bytes, handed out 12 at a time (see :func:`random_nonce`)."""

    block = b""
    at = 0


_nonces = _Nonces()


def _forget_nonces() -> None:
    """In a forked child: drop the parent's block, or both would hand out the same nonces."""
    global _nonces
    _nonces = _Nonces()


os.register_at_fork(after_in_child=_forget_nonces)


def random_nonce() -> bytes:
    """A fresh random 96-bit AES-GCM nonce from the OS's CSPRNG.

    Random nonces as before, drawn ``_NONCE_BLOCK`` at a time: ``os.urandom`` lets go of the GIL
    (a ``getrandom`` call), and per payload on the event loop that hand-off to the store's writer
    thread cost more than the call itself. Each thread has its own block (no two threads can
    take the same bytes), and a forked child starts a new one. A nonce is public data: holding
    the next ones in memory reveals nothing about keys or plaintexts.
    """
    state = _nonces
    at = state.at
    if at + _NONCE > len(state.block):
        state.block, at = os.urandom(_NONCE * _NONCE_BLOCK), 0
    state.at = at + _NONCE
    return state.block[at : at + _NONCE]


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Encryption keys by id; ``active`` is the one that encrypts."""

    keys: dict[str, bytes] = field(repr=False)
    active: str
    _ciphers: dict[str, AESGCM] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise ConfigError("the active data key is not in the key ring")
        for kid, key in self.keys.items():
            if len(key) != 32:
                raise ConfigError(f"data key {kid!r} must be 32 bytes (AES-256)")
            if not kid or len(kid.encode()) > 255 or ":" in kid or "," in kid:
                raise ConfigError("data key ids must be 1-255 bytes without ':' or ','")
        # building an AESGCM context costs more than using it: build each key's once
        object.__setattr__(self, "_ciphers", {kid: AESGCM(k) for kid, k in self.keys.items()})

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt with the active key."""
        kid = self.active.encode()
        nonce = random_nonce()
        ct = self._ciphers[self.active].encrypt(nonce, plaintext, aad)
        return _MAGIC + bytes([len(kid)]) + kid + nonce + ct

    def decrypt(self, blob: bytes, aad: bytes) -> bytes:
        """Decrypt with whichever key encrypted ``blob``."""
        if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + 1:
            raise CryptoError("not a carehook ciphertext")
        n = blob[len(_MAGIC)]
        start = len(_MAGIC) + 1
        kid = blob[start : start + n].decode(errors="replace")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise CryptoError(f"data key {kid!r} is not in the key ring")
        nonce = blob[start + n : start + n + _NONCE]
        try:
            return cipher.decrypt(nonce, blob[start + n + _NONCE :], aad)
        except InvalidTag as exc:
            raise CryptoError("ciphertext failed authentication") from exc


def payload_aad(source: str, event_id: str) -> bytes:
    """Associated data binding a payload to its event."""
    return f"{source}\x00{event_id}".encode()


def subject_aad(subject: str) -> bytes:
    """Associated data binding a subject's working data to that subject."""
    return b"subject\x00" + subject.encode()


def parse_key_spec(spec: str) -> KeyRing:
    """Parse ``kid:base64key,...`` (first is active)."""
    keys: dict[str, bytes] = {}
    order: list[str] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kid, sep, b64 = part.partition(":")
        if not sep:
            raise ConfigError("CAREHOOK_DATA_KEYS entries must be kid:base64key")
        try:
            keys[kid] = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigError(f"data key {kid!r} is not valid base64") from exc
        order.append(kid)
    if not order:
        raise ConfigError("CAREHOOK_DATA_KEYS holds no key")
    return KeyRing(keys=keys, active=order[0])


def new_key_spec(kid: str = "k1") -> str:
    """A fresh random key in ``kid:base64key`` form."""
    return f"{kid}:{base64.b64encode(secrets.token_bytes(32)).decode()}"


def load_key_ring(data_dir: Path, env_spec: str | None) -> KeyRing:
    """The key ring from the environment, else from (a new) key file in ``data_dir``."""
    if env_spec:
        return parse_key_spec(env_spec)
    path = data_dir / KEY_FILE_NAME
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(new_key_spec() + "\n")
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"{path} must not be readable by group or others (chmod 600)")
    return parse_key_spec(path.read_text())
