"""SMART Backend Services client authentication (``private_key_jwt``), what Epic and Oracle
Health require of backend apps.

The client assertion (HL7 SMART App Launch, "client-confidential-asymmetric")::

    header  {"alg": "RS384" | "ES384", "kid": <thumbprint>, "typ": "JWT",
             "jku": <public_url>/.well-known/jwks.json}
    claims  {"iss": client_id, "sub": client_id, "aud": <token URL>,
             "iat": now, "exp": now + 240 s (at most 5 minutes), "jti": <random, unique>}

posted to the token endpoint as ``grant_type=client_credentials``,
``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``,
``client_assertion`` and ``scope``. The JWS is made by ``joserfc``; the key comes from the
:class:`~carehook.connectors.fhir.keys.KeyStore` on every token request, so a retirement takes
effect at the next one. The token URL, unless configured, is the ``token_endpoint`` of
``{base}/.well-known/smart-configuration``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from joserfc import jwt

from carehook.connectors.fhir.keys import ALGS, Alg, KeyInfo, SigningKey

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWKS_PATH = "/.well-known/jwks.json"
SMART_CONFIGURATION = ".well-known/smart-configuration"
#: Epic and Oracle refuse an assertion whose exp is more than 5 minutes ahead
MAX_LIFETIME = 300


@dataclass(frozen=True, slots=True)
class OAuthClientCredentials:
    """Where and how to get an access token (OAuth2 ``client_credentials``, ``client_secret``
    in the form body, RFC 6749 4.4)."""

    token_url: str | None
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None

    def form(self, token_url: str, now: float) -> dict[str, str]:  # noqa: ARG002 (protocol)
        """The token request's form fields."""
        form = {"grant_type": "client_credentials", "client_id": self.client_id,
                "client_secret": self.client_secret}  # fmt: skip
        if self.scope:
            form["scope"] = self.scope
        return form


@dataclass(frozen=True, slots=True)
class SmartBackend:
    """SMART Backend Services credentials: a client id and a signing key lookup.

    ``key`` returns the current signing key (see :meth:`KeyStore.signing_key`); ``jku`` is the
    gateway's published JWKS URL; ``token_url`` None means "discover it".
    """

    client_id: str
    key: Callable[[], tuple[KeyInfo, SigningKey]] = field(repr=False)
    jku: str
    scope: str | None = None
    token_url: str | None = None
    lifetime: int = 240

    def form(self, token_url: str, now: float) -> dict[str, str]:
        """The token request's form fields, with a fresh assertion for ``token_url``."""
        form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
                "client_assertion": self.assertion(token_url, now)}  # fmt: skip
        if self.scope:
            form["scope"] = self.scope
        return form

    def assertion(self, audience: str, now: float) -> str:
        """A signed client assertion for ``audience`` (the token URL), valid ``lifetime`` s."""
        info, key = self.key()
        return sign_assertion(key, info.kid, info.alg, client_id=self.client_id,
                              audience=audience, jku=self.jku, now=now,
                              lifetime=min(self.lifetime, MAX_LIFETIME))  # fmt: skip


def sign_assertion(
    key: SigningKey, kid: str, alg: Alg, *, client_id: str, audience: str, jku: str | None,
    now: float, lifetime: int = 240, jti: str | None = None,
) -> str:  # fmt: skip
    """The compact JWS of one client assertion (tests use it to forge bad ones too)."""
    header: dict[str, Any] = {"alg": alg, "kid": kid, "typ": "JWT"}
    if jku is not None:
        header["jku"] = jku
    issued = int(now)
    claims = {"iss": client_id, "sub": client_id, "aud": audience, "iat": issued,
              "exp": issued + lifetime, "jti": jti or secrets.token_urlsafe(24)}  # fmt: skip
    return jwt.encode(header, claims, key, algorithms=list(ALGS))


def token_endpoint(configuration: Mapping[str, Any]) -> str | None:
    """The ``token_endpoint`` of a smart-configuration document, if it is an http(s) URL."""
    url = configuration.get("token_endpoint")
    if isinstance(url, str) and url.startswith(("https://", "http://")):
        return url
    return None


def jwks_url(public_url: str) -> str:
    """The gateway's JWKS URL under its public base URL."""
    return public_url.rstrip("/") + JWKS_PATH
