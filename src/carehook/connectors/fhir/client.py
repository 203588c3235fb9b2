"""The FHIR R4 client behind :class:`~carehook.workflows.ports.Ehr`, on an injected
``httpx.AsyncClient`` (it never creates one: the composition root builds it, SSRF guard and all).

Requests (``Accept`` and ``Content-Type`` ``application/fhir+json``)::

    search  GET  {base}/{type}?identifier=<system>|<value>   0 matches -> None, 1 -> it, >1 -> error
    create  POST {base}/{type}      If-None-Exist: identifier=<system>|<value>
                                    201 -> (stored, True); 200 -> (existing, False)
    update  PUT  {base}/{type}/{id}
    read    GET  {base}/{type}/{id}

Writes ask for ``Prefer: return=representation``; a server that still answers with an empty body
and a ``Location`` is read back from ``{base}/{type}/{id}`` (only the type and id are taken from
the Location, so a server cannot aim the client, and its token, at another host).

Authentication: a static bearer ``token``, OAuth2 client credentials
(:class:`OAuthClientCredentials`, ``client_secret`` in the form body) or SMART Backend Services
(:class:`SmartBackend`, a signed JWT client assertion; see :mod:`carehook.connectors.fhir.smart`).
Without a configured token URL, the ``token_endpoint`` of ``{base}/.well-known/smart-configuration``
is used. The access token is cached until ``refresh_margin`` seconds
before ``expires_in``; a 401 from the FHIR server drops it and the request is tried once more with a
fresh one.

Errors (messages name the operation, type, id and status only: never resource contents, query
values, URLs or tokens; an OperationOutcome is summarised by
:func:`~carehook.connectors.fhir.mapping.operation_outcome_summary`)::

    timeout, connection error, 408, 425, 429, 5xx -> RetryableError (retry_after = Retry-After)
    other 3xx and 4xx                             -> PermanentError, e.g. "fhir create
                          DocumentReference: 422 (error/invalid at DocumentReference.subject)"
    a 2xx body that is not JSON or not valid FHIR -> PermanentError
    a search with more than one match             -> PermanentError
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from carehook.connectors._http import retry_after_seconds
from carehook.connectors.fhir.mapping import (
    identifier_token,
    invalid_locations,
    operation_outcome_summary,
)
from carehook.connectors.fhir.smart import (
    SMART_CONFIGURATION,
    OAuthClientCredentials,
    SmartBackend,
    token_endpoint,
)
from carehook.errors import ConfigError, PermanentError, RetryableError, StepError

FHIR_JSON = "application/fhir+json"
_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_LOCATION = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]{1,63})/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/[A-Za-z0-9\-.]{1,64})?/?$"
)
_OAUTH_ERROR = re.compile(r"[a-z_]{1,40}")
_RETRYABLE = frozenset({408, 425, 429})
_DEFAULT_TOKEN_LIFETIME = 300.0
_RETRYABLE_TRANSPORT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
#: how the client gets an access token: a client secret, or a signed assertion (SMART backend)
TokenGrant = OAuthClientCredentials | SmartBackend
__all__ = ["FhirClient", "OAuthClientCredentials", "SmartBackend", "TokenGrant"]


@dataclass(frozen=True, slots=True)
class _Token:
    value: str = field(repr=False)
    expires_at: float


# -- failure mapping ---------------------------------------------------------------------------


def _outcome(response: httpx.Response) -> str:
    try:
        return operation_outcome_summary(response.json())
    except (ValueError, UnicodeDecodeError):
        return "no OperationOutcome"


def status_failure(op: str, response: httpx.Response, now: float) -> StepError | None:
    """The error a non-2xx response means (None for a 2xx)."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    message = f"{op}: {status} ({_outcome(response)})"
    if status in _RETRYABLE or status >= 500:
        wait = retry_after_seconds(response.headers.get("Retry-After"), now)
        return RetryableError(message, retry_after=wait)
    return PermanentError(message)


def transport_failure(op: str, exc: Exception) -> StepError:
    """A timeout or connection error is worth retrying; a bad URL or protocol is not."""
    if isinstance(exc, _RETRYABLE_TRANSPORT):
        return RetryableError(f"{op}: {type(exc).__name__}")
    return PermanentError(f"{op}: {type(exc).__name__}")


def _kind(resource: Mapping[str, Any]) -> str:
    kind = resource.get("resourceType")
    if not isinstance(kind, str) or not _TYPE.fullmatch(kind):
        raise ValueError("the resource has no valid resourceType")
    return kind


def _location_id(location: str, kind: str) -> str | None:
    """The id in a ``Location`` naming a resource of ``kind`` (host and base are ignored)."""
    try:
        match = _LOCATION.search(httpx.URL(location).path)
    except httpx.InvalidURL:
        return None
    return match["id"] if match is not None and match["type"] == kind else None


def _check_id(logical_id: Any) -> str:
    if not isinstance(logical_id, str) or not _ID.fullmatch(logical_id):
        raise ValueError("the resource has no valid id")
    return logical_id


# -- the client --------------------------------------------------------------------------------


class FhirClient:
    """A FHIR R4 server reached over ``http`` at ``base_url`` (implements ``Ehr``).

    ``clock`` (unix seconds) times the cached OAuth2 token and HTTP-date ``Retry-After`` values;
    ``timeout`` (seconds) overrides the client's default per request.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        *,
        token: str | None = None,
        oauth: TokenGrant | None = None,
        timeout: float | None = None,
        refresh_margin: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if token is not None and oauth is not None:
            raise ValueError("give a bearer token or OAuth2 client credentials, not both")
        self._http = http
        self._base = base_url.rstrip("/")
        self._static = token
        self._oauth = oauth
        self._timeout = http.timeout if timeout is None else httpx.Timeout(timeout)
        self._margin = refresh_margin
        self._clock = clock
        self._token: _Token | None = None
        self._granted_scope: str | None = None
        self._token_lock = asyncio.Lock()
        self._token_url: str | None = None if oauth is None else oauth.token_url

    def __repr__(self) -> str:
        return f"FhirClient(base_url={self._base!r})"

    # -- Ehr -----------------------------------------------------------------------------------

    async def search(self, resource_type: str, system: str, value: str) -> dict[str, Any] | None:
        """The one resource of that type with that identifier, or None (>1: PermanentError)."""
        kind = _kind({"resourceType": resource_type})
        op = f"fhir search {kind}"
        params = {"identifier": identifier_token(system, value)}
        response = await self._send(op, "GET", kind, params=params)
        bundle = self._parse(op, response, "Bundle")
        matches = [
            entry["resource"]
            for entry in bundle.get("entry", [])
            if isinstance(entry.get("resource"), dict)
            and entry["resource"].get("resourceType") == kind
            and entry.get("search", {}).get("mode", "match") == "match"
        ]
        total = bundle.get("total")
        count = max(len(matches), total if isinstance(total, int) else 0)
        if count > 1:
            raise PermanentError(f"{op}: {count} resources share one identifier of {system}")
        return matches[0] if matches else None

    async def create(
        self, resource: Mapping[str, Any], *, if_none_exist: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Create (conditionally with ``If-None-Exist``); the stored resource and whether new."""
        kind = _kind(resource)
        op = f"fhir create {kind}"
        headers = {"Prefer": "return=representation"}
        if if_none_exist is not None:
            headers["If-None-Exist"] = if_none_exist
        response = await self._send(op, "POST", kind, body=resource, headers=headers)
        stored = await self._stored(op, response, kind, fallback_id=None)
        return stored, response.status_code == 201

    async def update(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        """Update by ``resource['id']``; the stored resource (with its new ``meta.versionId``)."""
        kind = _kind(resource)
        logical_id = _check_id(resource.get("id"))
        op = f"fhir update {kind}/{logical_id}"
        headers = {"Prefer": "return=representation"}
        path = f"{kind}/{logical_id}"
        response = await self._send(op, "PUT", path, body=resource, headers=headers)
        return await self._stored(op, response, kind, fallback_id=logical_id)

    async def read(self, resource_type: str, logical_id: str) -> dict[str, Any]:
        """One resource by type and id (404: PermanentError)."""
        kind = _kind({"resourceType": resource_type})
        op = f"fhir read {kind}/{_check_id(logical_id)}"
        response = await self._send(op, "GET", f"{kind}/{logical_id}")
        return self._parse(op, response, kind)

    # -- responses -----------------------------------------------------------------------------

    def _parse(self, op: str, response: httpx.Response, kind: str) -> dict[str, Any]:
        """The body as a valid resource of ``kind``, or PermanentError."""
        status = response.status_code
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            raise PermanentError(f"{op}: {status} response is not JSON") from None
        if not isinstance(body, dict) or body.get("resourceType") != kind:
            raise PermanentError(f"{op}: {status} response is not a {kind}")
        problems = invalid_locations(body)
        if problems:
            where = ", ".join(problems[:3])
            raise PermanentError(f"{op}: {status} response is not a valid {kind} ({where})")
        return body

    async def _stored(
        self, op: str, response: httpx.Response, kind: str, fallback_id: str | None
    ) -> dict[str, Any]:
        """The resource a write answered with, read back when the body does not carry it."""
        if response.content.strip():
            try:
                return self._parse(op, response, kind)
            except PermanentError:
                if "Location" not in response.headers:
                    raise
        logical_id = _location_id(response.headers.get("Location", ""), kind) or fallback_id
        if logical_id is None:
            status = response.status_code
            raise PermanentError(f"{op}: {status} response has no {kind} nor Location")
        return await self.read(kind, logical_id)

    # -- requests ------------------------------------------------------------------------------

    async def _send(
        self,
        op: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        authenticate: bool = True,
    ) -> httpx.Response:
        """One request, retried once with a fresh OAuth2 token after a 401; errors mapped."""
        all_headers = {"Accept": FHIR_JSON, **(headers or {})}
        content = None
        if body is not None:
            all_headers["Content-Type"] = FHIR_JSON
            content = json.dumps(body).encode("utf-8")
        try:
            request = self._http.build_request(method, f"{self._base}/{path}", params=params,
                                               content=content, headers=all_headers,
                                               timeout=self._timeout)  # fmt: skip
        except httpx.InvalidURL:
            raise PermanentError(f"{op}: the FHIR base URL is not a valid URL") from None
        token = await self._authorize(op, request) if authenticate else None
        response = await self._exchange(op, request)
        if response.status_code == 401 and self._oauth is not None and authenticate:
            self._drop_token(token)
            await self._authorize(op, request)
            response = await self._exchange(op, request)
        failure = status_failure(op, response, self._clock())
        if failure is not None:
            raise failure
        return response

    async def _exchange(self, op: str, request: httpx.Request) -> httpx.Response:
        try:
            return await self._http.send(request)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise transport_failure(op, exc) from exc

    async def _authorize(self, op: str, request: httpx.Request) -> _Token | None:
        """Set the ``Authorization`` header; the OAuth2 token used, if any."""
        if self._static is not None:
            request.headers["Authorization"] = f"Bearer {self._static}"
            return None
        if self._oauth is None:
            return None
        token = await self._access_token(op, self._oauth)
        request.headers["Authorization"] = f"Bearer {token.value}"
        return token

    def _drop_token(self, token: _Token | None) -> None:
        if self._token is token:
            self._token = None

    async def _access_token(self, op: str, oauth: TokenGrant) -> _Token:
        token = self._token
        if token is not None and self._clock() < token.expires_at:
            return token
        async with self._token_lock:  # one refresh, however many requests are waiting
            token = self._token
            if token is None or self._clock() >= token.expires_at:
                token = self._token = await self._fetch_token(op, oauth)
            return token

    async def _fetch_token(self, op: str, oauth: TokenGrant) -> _Token:
        """POST the grant's form (client secret or signed assertion) to the token endpoint."""
        op = f"{op}: oauth token"
        token_url = await self.token_url(op)
        try:
            form = oauth.form(token_url, self._clock())
        except ConfigError as exc:  # no signing key yet: the operator can add one, so retry
            raise RetryableError(f"{op}: {exc}") from None
        headers = {"Accept": "application/json"}
        try:
            response = await self._http.post(
                token_url, data=form, headers=headers, timeout=self._timeout
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise transport_failure(op, exc) from exc
        return self._token_from(op, response)

    async def token_url(self, op: str = "fhir token") -> str:
        """The configured token URL, else the one ``smart-configuration`` names (cached)."""
        if self._token_url is None:
            found = token_endpoint(await self.smart_configuration())
            if found is None:
                raise PermanentError(f"{op}: smart-configuration names no token_endpoint")
            self._token_url = found
        return self._token_url

    async def smart_configuration(self) -> dict[str, Any]:
        """``{base}/.well-known/smart-configuration`` (plain JSON, no token needed)."""
        op = "fhir smart-configuration"
        try:
            response = await self._http.get(f"{self._base}/{SMART_CONFIGURATION}",
                                            headers={"Accept": "application/json"},
                                            timeout=self._timeout)  # fmt: skip
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise transport_failure(op, exc) from exc
        failure = status_failure(op, response, self._clock())
        if failure is not None:
            raise failure
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            raise PermanentError(f"{op}: {response.status_code} response is not a JSON object")
        return body

    async def capabilities(self) -> dict[str, Any]:
        """The server's CapabilityStatement (``GET {base}/metadata``)."""
        op = "fhir metadata"
        response = await self._send(op, "GET", "metadata", authenticate=False)
        return self._parse(op, response, "CapabilityStatement")

    async def access_token_scope(self) -> str | None:
        """Get a token now (``ehr check``); the scope the server granted, if it said."""
        if self._oauth is None:
            return None
        await self._access_token("fhir token", self._oauth)
        return self._granted_scope

    def _token_from(self, op: str, response: httpx.Response) -> _Token:
        status = response.status_code
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        body = body if isinstance(body, dict) else {}
        if status >= 300:
            failure = status_failure(op, response, self._clock())
            code = body.get("error")
            reason = code if isinstance(code, str) and _OAUTH_ERROR.fullmatch(code) else "?"
            if isinstance(failure, RetryableError):
                raise failure
            raise PermanentError(f"{op}: {status} ({reason})")
        value, kind = body.get("access_token"), body.get("token_type", "bearer")
        if not isinstance(value, str) or not value or str(kind).lower() != "bearer":
            raise PermanentError(f"{op}: {status} response has no bearer access_token")
        lifetime = body.get("expires_in")
        if not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = _DEFAULT_TOKEN_LIFETIME
        granted = body.get("scope")
        self._granted_scope = granted if isinstance(granted, str) else None
        margin = min(self._margin, lifetime / 2)
        return _Token(value, self._clock() + lifetime - margin)
