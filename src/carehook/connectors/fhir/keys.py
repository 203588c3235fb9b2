"""The gateway's signing keys for SMART Backend Services, under ``<data_dir>/keys/``.

One key is two files: ``<kid>.pem`` (the private key, PKCS#8 PEM, mode 0600) and ``<kid>.json``
(its destination, algorithm, creation and retirement times). The ``kid`` is the key's RFC 7638
thumbprint; a key whose thumbprint begins with ``-`` is never kept (one in 64 would otherwise be
read as an option by ``carehook keys retire KID``), another is generated. A private key file
that group or others may read is refused (a :class:`~carehook.errors.ConfigError`), never used.

Rotation without downtime (Epic fetches the JWKS from the ``jku`` and caches it):

1. ``carehook keys new ehr``: the new key is published at ``/.well-known/jwks.json`` at once,
   but does not sign yet: the **oldest** active key of a destination (and algorithm) signs;
2. once the EHR has seen the new JWKS, ``carehook keys retire OLD_KID``: the old key leaves the
   JWKS and the new one signs from the next token request on.

Keys are generated with ``cryptography`` through ``joserfc`` (RSA 2048 for RS384, P-384 for
ES384).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from joserfc.jwk import ECKey, RSAKey

from carehook.errors import ConfigError

Alg = Literal["RS384", "ES384"]
ALGS: tuple[Alg, ...] = ("RS384", "ES384")
SigningKey = RSAKey | ECKey


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One key's metadata (never its private part)."""

    kid: str
    destination: str
    alg: Alg
    created_at: datetime
    retired_at: datetime | None = None

    @property
    def active(self) -> bool:
        """Whether it is published (and may sign)."""
        return self.retired_at is None


def _generate(alg: Alg) -> SigningKey:
    if alg == "RS384":
        return RSAKey.generate_key(2048)
    return ECKey.generate_key("P-384")


def _load(alg: str, pem: bytes, kid: str) -> SigningKey:
    if alg == "RS384":
        return RSAKey.import_key(pem, {"kid": kid})
    return ECKey.import_key(pem, {"kid": kid})


class KeyStore:
    """The key files of one data directory."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def new(self, destination: str, alg: Alg, *, now: datetime | None = None) -> KeyInfo:
        """Generate a key for ``destination``, write it (0600) and return its metadata."""
        if alg not in ALGS:
            raise ConfigError(f"signing algorithm must be one of {', '.join(ALGS)}")
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.folder, 0o700)
        key = _generate(alg)
        while key.thumbprint().startswith("-"):  # it would read as an option: `keys retire -x`
            key = _generate(alg)
        info = KeyInfo(key.thumbprint(), destination, alg, now or datetime.now(UTC))
        pem = key.as_pem(private=True)
        fd = os.open(self._pem(info.kid), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        self._write_meta(info)
        return info

    def list(self) -> list[KeyInfo]:
        """Every key (retired ones too), oldest first."""
        if not self.folder.is_dir():
            return []
        infos = [self._read_meta(path) for path in self.folder.glob("*.json")]
        return sorted(infos, key=lambda i: (i.created_at, i.kid))

    def retire(self, kid: str, *, now: datetime | None = None) -> KeyInfo:
        """Unpublish ``kid``: it leaves the JWKS and never signs again."""
        found = [info for info in self.list() if info.kid == kid]
        if not found:
            raise ConfigError(f"no key with kid {kid}")
        info = found[0]
        if info.retired_at is None:
            info = KeyInfo(info.kid, info.destination, info.alg, info.created_at,
                           now or datetime.now(UTC))  # fmt: skip
            self._write_meta(info)
        return info

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set of every active key (what ``/.well-known/jwks.json`` serves)."""
        keys = []
        for info in self.list():
            if not info.active:
                continue
            try:
                public = self.private_key(info).as_dict(private=False)
            except ConfigError:  # a refused key file is not published (nor can it sign)
                continue
            keys.append({**public, "kid": info.kid, "alg": info.alg, "use": "sig"})
        return {"keys": keys}

    def signing_key(self, destination: str, alg: Alg) -> tuple[KeyInfo, SigningKey]:
        """The key that signs for ``destination``: its oldest active key of ``alg``."""
        for info in self.list():
            if info.active and info.destination == destination and info.alg == alg:
                return info, self.private_key(info)
        raise ConfigError(f"destinations.{destination}: no active {alg} signing key "
                          f"(run: carehook keys new {destination} --alg {alg})")  # fmt: skip

    def private_key(self, info: KeyInfo) -> SigningKey:
        """The private key of ``info``; refused if its file is readable by group or others."""
        path = self._pem(info.kid)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise ConfigError(f"key {info.kid}: private key file is missing") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"key {info.kid}: {path} is readable by others (chmod 600 it)")
        return _load(info.alg, path.read_bytes(), info.kid)

    # -- files ---------------------------------------------------------------------------------

    def _pem(self, kid: str) -> Path:
        return self.folder / f"{kid}.pem"

    def _write_meta(self, info: KeyInfo) -> None:
        data = {"kid": info.kid, "destination": info.destination, "alg": info.alg,
                "created_at": info.created_at.isoformat(),
                "retired_at": info.retired_at.isoformat() if info.retired_at else None}  # fmt: skip
        target = self.folder / f"{info.kid}.json"
        temporary = target.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(data, indent=2) + "\n")
        temporary.replace(target)

    @staticmethod
    def _read_meta(path: Path) -> KeyInfo:
        try:
            data = json.loads(path.read_text())
            retired = data.get("retired_at")
            return KeyInfo(str(data["kid"]), str(data["destination"]), data["alg"],
                           datetime.fromisoformat(data["created_at"]),
                           datetime.fromisoformat(retired) if retired else None)  # fmt: skip
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"key metadata {path.name} is not valid") from exc
