"""Admin tokens, dashboard sessions and CSRF tokens.

A token is ``chk_<random>``; the config keeps only ``sha256:<hex>`` of it. Checking hashes the
presented token and compares it with *every* configured hash in constant time (no early exit,
so the time taken says nothing about which token nearly matched).

A dashboard session is a cookie ``<payload>.<mac>``: the payload (token name, the first bytes
of its hash, a random session id, the idle and the absolute expiry, CSRF secret) is base64 JSON,
the MAC an HMAC-SHA256 under a key derived from the data key ring. Each page view renews the
cookie (:meth:`Sessions.renew`): a session unused for ``session_idle_minutes`` ends, and none
outlives ``session_minutes`` from its sign-in. Removing or re-issuing the token ends its
sessions; scopes are read from the config on every request, never from the cookie. Logging out
ends one session: the dashboard stores its id (:attr:`Principal.session`) until its absolute
end and refuses every copy and renewal of its cookie meanwhile (``Store.end_session``), in every
process sharing the database.
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
    #: the session's random id, the same in every renewal of its cookie (what logout stores
    #: and the audit trail names; never the cookie)
    session: str = ""
    #: when the session ends at the latest, renewed or not (Unix time)
    expires: int = 0
    #: the first bytes of the token's hash, as the cookie carries them (for a renewal)
    token_hash: str = ""

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

    def __init__(self, key: bytes, lifetime_seconds: int, idle_seconds: int | None = None
                 ) -> None:  # fmt: skip
        self._key = key
        self.lifetime = lifetime_seconds
        self.idle = lifetime_seconds if idle_seconds is None else min(idle_seconds,
                                                                       lifetime_seconds)

    def issue(self, token: AdminToken, now: float | None = None) -> str:
        """A new session's cookie value for ``token``."""
        issued = time.time() if now is None else now
        return self._signed({"n": token.name, "h": token.hash[7:23],
                             "sid": secrets.token_hex(16), "abs": int(issued + self.lifetime),
                             "exp": int(issued + self.idle), "csrf": secrets.token_urlsafe(24)})

    def renew(self, who: Principal, now: float | None = None) -> str:
        """The session's cookie again with its idle clock restarted, never past its absolute
        end; the same session id and CSRF token."""
        at = time.time() if now is None else now
        return self._signed({"n": who.name, "h": who.token_hash, "sid": who.session,
                             "abs": who.expires, "exp": min(int(at + self.idle), who.expires),
                             "csrf": who.csrf})  # fmt: skip

    def _signed(self, body: dict[str, object]) -> str:
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
        final = body.get("abs")  # absent from a cookie issued before sessions had an idle end
        if not isinstance(final, int):
            final = expires
        for token in tokens:
            if token.name == body.get("n") and token.hash[7:23] == body.get("h"):
                return Principal(token.name, frozenset(token.scopes), str(body.get("csrf", "")),
                                 self.session_of(cookie), final, token.hash[7:23])
        return None

    @staticmethod
    def session_of(cookie: str) -> str:
        """The session's id, as its cookie carries it (a cookie issued before sessions had
        ids: a hash of its MAC); never a secret, the cookie cannot be rebuilt from it."""
        data, _, mac = cookie.partition(".")
        try:
            sid = json.loads(base64.urlsafe_b64decode(data)).get("sid")
        except (ValueError, AttributeError):
            sid = None
        if isinstance(sid, str) and sid.isascii() and sid.isalnum():
            return sid[:32]
        return hashlib.sha256(mac.encode()).hexdigest()[:32]

    def _mac(self, data: bytes) -> str:
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()


def session_key(data_key: bytes) -> bytes:
    """The session-signing key, derived from a data key (separate purpose, same secret)."""
    return hmac.new(data_key, b"carehook admin session v1", hashlib.sha256).digest()
