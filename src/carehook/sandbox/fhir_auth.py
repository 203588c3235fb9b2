"""The sandbox FHIR server's SMART Backend Services token endpoint: what Epic does with a client
assertion, so carehook's side can be tested against a real verifier.

A client is registered with its id and JWKS URL (Epic: the "JWK Set URL" of the app). For each
token request the JWKS is fetched again from that URL (over loopback: the gateway's
``/.well-known/jwks.json``), so a new key verifies as soon as it is published and a retired one
stops verifying at once. An assertion is refused (400 ``invalid_client``, the reason in
``error_description``) when:

- its ``jku`` is not the registered JWKS URL, or its ``kid`` is not in the JWKS ("unknown kid");
- its signature does not verify, or its ``alg`` is not RS384 / ES384;
- ``iss`` or ``sub`` is not the client id, ``aud`` is not this token endpoint ("wrong aud");
- it has expired, or ``exp`` is more than 5 minutes ahead;
- its ``jti`` was seen before (until that assertion's ``exp``: "replayed jti").
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from carehook.connectors.fhir.smart import JWT_BEARER

ALGORITHMS = ["RS384", "ES384"]
MAX_AHEAD = 300
LEEWAY = 5


class AssertionRefused(Exception):
    """The client assertion is not acceptable; the message is the ``error_description``."""


@dataclass(slots=True)
class TokenIssuer:
    """Registered clients, seen ``jti`` values and issued access tokens (thread-safe)."""

    lifetime: int = 300
    clients: dict[str, str] = field(default_factory=dict)  # client_id -> JWKS URL
    scopes: dict[str, str] = field(default_factory=dict)  # access token -> granted scope
    _jti: dict[str, float] = field(default_factory=dict)
    _tokens: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def register(self, client_id: str, jwks_url: str) -> None:
        """Accept assertions of ``client_id`` signed by a key of the JWKS at ``jwks_url``."""
        self.clients[client_id] = jwks_url

    def valid(self, token: str, now: float) -> bool:
        """Whether ``token`` was issued here and has not expired."""
        with self._lock:
            expires = self._tokens.get(token)
        return expires is not None and now < expires

    def revoke_all(self) -> None:
        """Forget every issued access token (a client's cached token becomes stale)."""
        with self._lock:
            self._tokens.clear()

    async def grant(self, form: Mapping[str, str], audience: str, now: float) -> dict[str, Any]:
        """The token response for a ``client_credentials`` form, or AssertionRefused."""
        if form.get("grant_type") != "client_credentials":
            raise AssertionRefused("grant_type must be client_credentials")
        if form.get("client_assertion_type") != JWT_BEARER:
            raise AssertionRefused("client_assertion_type must be jwt-bearer")
        assertion = form.get("client_assertion", "")
        header = _header(assertion)
        client_id = _unverified_issuer(assertion)
        jwks_url = self.clients.get(client_id)
        if jwks_url is None:
            raise AssertionRefused("unknown client")
        if header.get("jku", jwks_url) != jwks_url:
            raise AssertionRefused("jku is not the registered JWKS URL")
        keys = await _fetch_jwks(jwks_url)
        claims = _verify(assertion, keys, client_id, audience, now)
        self._spend(str(claims["jti"]), float(claims["exp"]), now)
        token = secrets.token_urlsafe(32)
        scope = form.get("scope", "")
        with self._lock:
            self._tokens[token] = now + self.lifetime
            self.scopes[token] = scope
        return {"access_token": token, "token_type": "bearer", "expires_in": self.lifetime,
                "scope": scope}  # fmt: skip

    def _spend(self, jti: str, exp: float, now: float) -> None:
        with self._lock:
            self._jti = {k: v for k, v in self._jti.items() if v + LEEWAY > now}
            if jti in self._jti:
                raise AssertionRefused("replayed jti")
            self._jti[jti] = exp


def _header(assertion: str) -> dict[str, Any]:
    try:
        return dict(jws.extract_compact(assertion.encode()).headers())
    except (JoseError, ValueError) as exc:
        raise AssertionRefused("client_assertion is not a compact JWS") from exc


def _unverified_issuer(assertion: str) -> str:
    try:
        payload = json.loads(jws.extract_compact(assertion.encode()).payload)
    except (JoseError, ValueError) as exc:
        raise AssertionRefused("client_assertion payload is not JSON") from exc
    iss = payload.get("iss") if isinstance(payload, dict) else None
    return iss if isinstance(iss, str) else ""


async def _fetch_jwks(url: str) -> KeySet:
    async with httpx.AsyncClient(timeout=5) as http:
        try:
            response = await http.get(url)
            response.raise_for_status()
            return KeySet.import_key_set(response.json())
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            raise AssertionRefused("the JWKS URL did not answer a JWK Set") from exc


def _verify(
    assertion: str, keys: KeySet, client_id: str, audience: str, now: float
) -> dict[str, Any]:
    try:
        token = jwt.decode(assertion, keys, algorithms=ALGORITHMS)
    except InvalidKeyIdError as exc:
        raise AssertionRefused("unknown kid") from exc
    except BadSignatureError as exc:
        raise AssertionRefused("bad signature") from exc
    except JoseError as exc:
        raise AssertionRefused(f"not verifiable ({exc.error})") from exc
    if token.header.get("typ") not in (None, "JWT"):
        raise AssertionRefused("typ must be JWT")
    claims = dict(token.claims)
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise AssertionRefused("iss and sub must be the client id")
    aud = claims.get("aud")
    if aud != audience and not (isinstance(aud, list) and audience in aud):
        raise AssertionRefused("wrong aud")
    exp, jti = claims.get("exp"), claims.get("jti")
    if not isinstance(exp, int | float) or exp + LEEWAY <= now:
        raise AssertionRefused("expired")
    if exp > now + MAX_AHEAD + LEEWAY:
        raise AssertionRefused("exp is more than 5 minutes ahead")
    if not isinstance(jti, str) or not jti:
        raise AssertionRefused("jti is missing")
    return claims
