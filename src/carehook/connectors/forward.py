"""Forwarding to a team's own services: Standard Webhooks signed POSTs (a :class:`Destination`).

Each delivery is one ``POST`` of compact JSON with the three Standard Webhooks headers, signed by
:class:`carehook.signatures.standard_webhooks.StandardWebhooksScheme` (the same code that
verifies inbound Standard Webhooks):

- ``webhook-id``: the caller's ``message_id``, unchanged across retries so the receiver can
  de-duplicate;
- ``webhook-timestamp``: unix seconds of this attempt (the caller's ``timestamp``, else now);
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``.

Secrets (:func:`signing_secret`): ``whsec_<base64>`` is the Standard Webhooks form, the key is the
decoded bytes. Any other string is a passphrase and its UTF-8 bytes are the key, which is the
secret ``"whsec_" + base64(utf8)``. A receiver using the ``standardwebhooks`` package verifies with
``Webhook("whsec_...")`` for the first and ``Webhook(passphrase.encode())`` (bytes are taken as the
raw key), or that ``whsec_`` form, for the second. Note that a bare base64 string is a passphrase
here, whereas the inbound verifier reads a bare secret as base64: give the receiver the whsec_
form to avoid the ambiguity.

Outcomes: 2xx is a :class:`Delivery`; 408, 425, 429, 5xx, timeouts and connection errors are
:class:`RetryableError` (``retry_after`` from a ``Retry-After`` in seconds or as an HTTP date);
3xx (redirects are not followed), 410 and other 4xx are :class:`PermanentError`. The response body
is never read (it might echo the payload) and no message quotes it: messages name the
destination, the message id and the status or error class only.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from carehook.connectors._http import retry_after_seconds
from carehook.envelope import SignedRequest
from carehook.errors import ConfigError, PermanentError, RetryableError, VerificationError
from carehook.signatures.standard_webhooks import (
    ID_HEADER,
    SECRET_PREFIX,
    StandardWebhooksScheme,
    secret_key,
)
from carehook.workflows.ports import Delivery

_MESSAGE_ID = re.compile(r"[!-~]{1,256}")  # visible ASCII: it is a header and is signed
_RETRYABLE = frozenset({408, 425, 429})
_SCHEME = StandardWebhooksScheme()


def signing_secret(secret: str) -> str:
    """The ``whsec_`` form of a destination secret (see the module docstring).

    ``whsec_<base64>`` is returned as is once its base64 is checked; any other non-empty string
    becomes ``whsec_`` + base64 of its UTF-8 bytes. Raises :class:`ConfigError` without the secret.
    """
    if not secret:
        raise ConfigError("webhook destination secret is empty")
    if not secret.startswith(SECRET_PREFIX):
        return SECRET_PREFIX + base64.b64encode(secret.encode()).decode()
    try:
        secret_key(secret)
    except VerificationError:
        raise ConfigError("webhook secret starts with whsec_ but is not base64") from None
    return secret


def _encode(body: Mapping[str, Any], what: str) -> bytes:
    try:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise PermanentError(f"{what}: body is not JSON-serialisable") from None
    return text.encode()


def _outcome(what: str, response: httpx.Response, message_id: str, now: float) -> Delivery:
    status = response.status_code
    if 200 <= status < 300:
        return Delivery(status=status, message_id=message_id)
    if status in _RETRYABLE or status >= 500:
        wait = retry_after_seconds(response.headers.get("retry-after"), now)
        raise RetryableError(f"{what}: status {status}", retry_after=wait)
    raise PermanentError(f"{what}: status {status}")


class WebhookDestination:
    """A team's endpoint receiving Standard Webhooks signed POSTs (implements ``Destination``).

    ``http`` should come from :func:`carehook.connectors.outbound.outbound_client` (SSRF guard,
    no redirects, the destination's timeout); ``clock`` gives unix seconds (tests freeze it).
    """

    def __init__(
        self,
        name: str,
        http: httpx.AsyncClient,
        url: str,
        secret: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._http = http
        self._url = url
        self._secret = _named(name, secret)
        self._clock = clock

    def __repr__(self) -> str:
        return f"WebhookDestination(name={self.name!r})"

    def _headers(self, message_id: str, content: bytes, now: float) -> dict[str, str]:
        request = SignedRequest(
            method="POST", path="", query="", headers={ID_HEADER: message_id}, body=content
        )
        headers = _SCHEME.sign(request, self._secret, now)
        headers["content-type"] = "application/json"
        return headers

    async def deliver(
        self, message_id: str, body: Mapping[str, Any], *, timestamp: float | None = None
    ) -> Delivery:
        """POST ``body`` signed; ``message_id`` is the ``webhook-id`` (stable across retries)."""
        what = f"forward {self.name}: message {message_id}"
        if not _MESSAGE_ID.fullmatch(message_id):
            raise PermanentError(f"forward {self.name}: message id is not 1-256 visible ASCII")
        content = _encode(body, what)
        now = self._clock()
        headers = self._headers(message_id, content, now if timestamp is None else timestamp)
        try:
            async with self._http.stream(
                "POST", self._url, content=content, headers=headers
            ) as response:
                return _outcome(what, response, message_id, now)
        except httpx.TimeoutException as exc:
            raise RetryableError(f"{what}: {type(exc).__name__}") from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise PermanentError(f"{what}: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise RetryableError(f"{what}: {type(exc).__name__}") from exc


def _named(name: str, secret: str) -> str:
    try:
        return signing_secret(secret)
    except ConfigError as exc:
        raise ConfigError(f"destination {name}: {exc}") from None
