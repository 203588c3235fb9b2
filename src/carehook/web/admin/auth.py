"""Admin tokens, dashboard sessions and CSRF tokens.

A token is ``chk_<random>``; the config keeps only ``sha256:<hex>`` of it. Checking hashes the
presented token and compares it with *every* configured hash in constant time (no early exit,
so the time taken says nothing about which token nearly matched).

A dashboard session is a cookie ``<payload>.<mac>``: the payload (token name, the first bytes
of its hash, expiry, CSRF secret) is base64 JSON, the MAC an HMAC-SHA256 under a key derived
from the data key ring. Removing or re-issuing the token ends its sessions; scopes are read from
the config on every request, never from the cookie. Logging out ends one session: the dashboard
stores the hash of its cookie (:attr:`Principal.session`) until the cookie's expiry and refuses
a copy of it meanwhile (``Store.end_session``), in every process sharing the database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from carehook.settings import AdminToken

TOKEN_PREFIX = "chk_"  # noqa: S105 (a prefix, not a secret)
SESSION_COOKIE = "carehook_admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's name (the audit actor) and its scopes."""

    name: str
    scopes: frozenset[str]
    csrf: str = ""
    #: the session's id: a hash of its cookie's MAC (what logout stores; never the cookie)
    session: str = ""
    #: when the session's cookie expires (Unix time)
    expires: int = 0

    def can(self, scope: str) -> bool:
        """Whether the token holds ``scope``."""
        return scope in self.scopes


def new_token() -> str:
    """A fresh random admin token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the config keeps of a token."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def check_token(tokens: list[AdminToken], presented: str) -> AdminToken | None:
    """The configured token ``presented`` is, compared in constant time against every hash."""
    digest = token_hash(presented).encode()
    found: AdminToken | None = None
    for token in tokens:
        if hmac.compare_digest(digest, token.hash.encode()):
            found = token
    return found


class Sessions:
    """Signs and checks dashboard session cookies."""

    def __init__(self, key: bytes, lifetime_seconds: int) -> None:
        self._key = key
        self.lifetime = lifetime_seconds

    def issue(self, token: AdminToken, now: float | None = None) -> str:
        """A session cookie value for ``token``."""
        issued = time.time() if now is None else now
        body = {"n": token.name, "h": token.hash[7:23], "exp": int(issued + self.lifetime),
                "csrf": secrets.token_urlsafe(24)}  # fmt: skip
        data = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode())
        return f"{data.decode()}.{self._mac(data)}"

    def check(self, tokens: list[AdminToken], cookie: str, now: float | None = None
              ) -> Principal | None:  # fmt: skip
        """The session's principal, or None (bad MAC, expired, token gone or re-issued)."""
        data, _, mac = cookie.partition(".")
        if not (data.isascii() and mac.isascii()):  # compare_digest refuses non-ASCII text
            return None
        if not hmac.compare_digest(self._mac(data.encode()), mac):
            return None
        try:
            body = json.loads(base64.urlsafe_b64decode(data))
        except ValueError:
            return None
        if not isinstance(body, dict) or not isinstance(expires := body.get("exp", 0), int):
            return None
        if expires < (time.time() if now is None else now):
            return None
        session = self.session_of(cookie)
        for token in tokens:
            if token.name == body.get("n") and token.hash[7:23] == body.get("h"):
                return Principal(token.name, frozenset(token.scopes), str(body.get("csrf", "")),
                                 session, expires)  # fmt: skip
        return None

    @staticmethod
    def session_of(cookie: str) -> str:
        """The session's id: a hash of the cookie's MAC (what logout stores and the audit trail
        names; the cookie cannot be rebuilt from it)."""
        return hashlib.sha256(cookie.partition(".")[2].encode()).hexdigest()[:32]

    def _mac(self, data: bytes) -> str:
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()


def session_key(data_key: bytes) -> bytes:
    """The session-signing key, derived from a data key (separate purpose, same secret)."""
    return hmac.new(data_key, b"carehook admin session v1", hashlib.sha256).digest()
