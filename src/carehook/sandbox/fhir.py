"""A small in-memory FHIR R4 server (JSON only) for the sandbox and the tests, meant to be
mounted under ``/fhir``.

Interactions, enough for :class:`carehook.connectors.fhir.client.FhirClient`::

    GET  /metadata                        a minimal CapabilityStatement (no token needed)
    POST /{type}                          create; with If-None-Exist: identifier=<system>|<value>
                                          0 matches -> 201 created, 1 -> 200 the existing, >1 -> 412
    GET  /{type}?identifier=<sys>|<val>   searchset Bundle (no identifier: every resource)
    GET  /{type}/{id}                     read (404 when unknown; the fictional
                                          ``sandbox-patient-*`` / ``sandbox-encounter-*`` exist)
    PUT  /{type}/{id}                     update or create-on-update (201); meta.versionId + 1

Every incoming resource is validated with the ``fhir.resources`` R4B model of its type; an
invalid one gets 400 and an OperationOutcome whose issues name field locations only (code
``invalid``, ``expression``), never values. ``Prefer: return=minimal`` answers a write with an
empty body and its ``Location``. With ``token=``, requests must carry ``Authorization: Bearer
<token>`` (401 otherwise); :attr:`FhirServer.token` may be changed at any time, e.g. to make a
client's cached token stale.

SMART Backend Services: ``POST /auth/token`` verifies client assertions
(:mod:`carehook.sandbox.fhir_auth`; register a client with :meth:`FhirServer.register_client`)
and ``GET /.well-known/smart-configuration`` names it. An access token it issued is accepted
beside the static ``token``.

Epic-like mode (``conditional_create = False``): the CapabilityStatement says
``conditionalCreate: false`` and a create ignores ``If-None-Exist`` and always creates, as Epic
and Oracle Health do; a client must search by identifier first.

Test hooks, for tests in the same process (the app runs in uvicorn's thread, the store is
locked): :meth:`FhirServer.fail_next`, :meth:`FhirServer.resources`, :attr:`FhirServer.requests`,
:attr:`FhirServer.on_create` (called with each created resource after it is stored and before the
answer is sent: a test can kill the client there).
"""

from __future__ import annotations

import copy
import hmac
import itertools
import json
import re
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from carehook.connectors.fhir.mapping import invalid_locations
from carehook.sandbox.fhir_auth import AssertionRefused, TokenIssuer

FHIR_JSON = "application/fhir+json"
#: the types the CapabilityStatement lists (any R4B resource type is served)
LISTED_TYPES = ("DocumentReference", "Composition", "Practitioner", "Patient", "Encounter")
_FAILURE_CODES = {429: "throttled", 401: "login", 403: "forbidden", 404: "not-found"}
_FICTIONAL: dict[str, dict[str, Any]] = {
    "Patient": {"active": True},
    "Encounter": {"status": "finished", "class": {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}},
}  # fmt: skip
_SYSTEM_VALUE = re.compile(r"((?:[^\\|]|\\.)*)\|(.*)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class _Failure:
    status: int
    retry_after: float | None


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text, flags=re.DOTALL)


def split_token(token: str) -> tuple[str | None, str]:
    """A search token ``system|value`` (``\\`` escapes) as (system, value); (None, value) bare."""
    match = _SYSTEM_VALUE.fullmatch(token)
    if match is None:
        return None, _unescape(token)
    return _unescape(match[1]), _unescape(match[2])


def _has(resource: dict[str, Any], system: str | None, value: str) -> bool:
    found = resource.get("identifier")  # a list, or one Identifier (Composition)
    return any(
        isinstance(item, dict)
        and item.get("value") == value
        and (system is None or item.get("system", "") == system)
        for item in (found if isinstance(found, list) else [found])
    )


def _unknown(kind: str) -> Response | None:
    """None for a resource type R4B knows, else a 404 OperationOutcome."""
    try:
        if issubclass(get_fhir_model_class(kind), Resource):
            return None
    except ValueError:
        pass
    return outcome(404, "not-supported")


def outcome(
    status: int, code: str, expressions: Sequence[str] = (), headers: dict[str, str] | None = None
) -> Response:
    """An OperationOutcome response: one error issue per expression (or one bare issue)."""
    issues = [{"severity": "error", "code": code, "expression": [e]} for e in expressions]
    body = {"resourceType": "OperationOutcome", "issue": issues or [{"severity": "error",
                                                                    "code": code}]}  # fmt: skip
    return JSONResponse(body, status, headers=headers, media_type=FHIR_JSON)


def _base_url(request: Request) -> str:
    """The server's base URL: where it is mounted (``request.base_url`` ignores mounts)."""
    root: str = request.scope.get("root_path", "")
    return str(request.url.replace(path=root, query="")).rstrip("/")


def _mount_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class FhirServer:
    """The in-memory FHIR server: an ASGI app (call it, or mount :attr:`app`) with test hooks."""

    def __init__(
        self, token: str | None = None, *, clock: Callable[[], datetime] | None = None,
        conditional_create: bool = True,
    ) -> None:
        self.token = token
        #: False: Epic-like, If-None-Exist ignored and conditionalCreate false in /metadata
        self.conditional_create = conditional_create
        #: the SMART Backend Services token endpoint's clients, jti and tokens
        self.issuer = TokenIssuer()
        #: called with each created resource once stored, before the answer goes out
        self.on_create: Callable[[dict[str, Any]], None] | None = None
        #: every request seen, as ``(method, path below the mount point)``
        self.requests: list[tuple[str, str]] = []
        self._clock = clock or (lambda: datetime.now(UTC))
        self._store: dict[str, dict[str, dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._failures: deque[_Failure] = deque()
        self._lock = threading.Lock()
        self._app = self.build_app()

    @property
    def app(self) -> Starlette:
        """The ASGI app, built once."""
        return self._app

    def build_app(self) -> Starlette:
        """A new ASGI app over this server's store."""
        return Starlette(
            routes=[
                Route("/metadata", self._metadata, methods=["GET"]),
                Route("/.well-known/smart-configuration", self._smart, methods=["GET"]),
                Route("/auth/token", self._token_endpoint, methods=["POST"]),
                Route("/{kind}", self._type_level, methods=["GET", "POST"]),
                Route("/{kind}/{rid}", self._instance_level, methods=["GET", "PUT"]),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection."""
        await self._app(scope, receive, send)

    # -- test hooks ----------------------------------------------------------------------------

    def fail_next(
        self, count: int = 1, status: int = 503, retry_after: float | None = None
    ) -> None:
        """Answer the next ``count`` requests with ``status`` (and ``Retry-After`` seconds)."""
        self._failures.extend([_Failure(status, retry_after)] * count)

    def register_client(self, client_id: str, jwks_url: str) -> None:
        """Let ``client_id`` get tokens with assertions signed by a key at ``jwks_url``."""
        self.issuer.register(client_id, jwks_url)

    def resources(self, kind: str) -> list[dict[str, Any]]:
        """Copies of every stored resource of type ``kind``, in creation order."""
        with self._lock:
            return copy.deepcopy(list(self._store.get(kind, {}).values()))

    # -- routes --------------------------------------------------------------------------------

    async def _metadata(self, request: Request) -> Response:
        refused = self._admit(request, authenticate=False)
        if refused is not None:
            return refused
        interactions = [{"code": c} for c in ("read", "create", "update", "search-type")]
        conditional = self.conditional_create
        listed = [{"type": kind, "interaction": interactions, "conditionalCreate": conditional,
                   "searchParam": [{"name": "identifier", "type": "token"}]}
                  for kind in LISTED_TYPES]  # fmt: skip
        body = {"resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
                "date": self._clock().date().isoformat(), "fhirVersion": "4.0.1",
                "format": ["json"], "software": {"name": "carehook sandbox FHIR server"},
                "rest": [{"mode": "server", "resource": listed}]}  # fmt: skip
        return JSONResponse(body, media_type=FHIR_JSON)

    async def _smart(self, request: Request) -> Response:
        base = _base_url(request)
        return JSONResponse({
            "token_endpoint": f"{base}/auth/token",
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "grant_types_supported": ["client_credentials"],
            "scopes_supported": ["system/*.cruds"],
            "capabilities": ["client-confidential-asymmetric"],
        })  # fmt: skip

    async def _token_endpoint(self, request: Request) -> Response:
        self.requests.append((request.method, _mount_path(request.scope)))
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        audience = f"{_base_url(request)}/auth/token"
        try:
            body = await self.issuer.grant(form, audience, self._clock().timestamp())
        except AssertionRefused as exc:
            return JSONResponse({"error": "invalid_client", "error_description": str(exc)}, 400)
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def _type_level(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        refused = self._admit(request) or _unknown(kind)
        if refused is not None:
            return refused
        if request.method == "POST":
            return await self._create(request, kind)
        return self._search(request, kind)

    async def _instance_level(self, request: Request) -> Response:
        kind, rid = request.path_params["kind"], request.path_params["rid"]
        refused = self._admit(request) or _unknown(kind)
        if refused is not None:
            return refused
        if request.method == "PUT":
            return await self._update(request, kind, rid)
        with self._lock:
            stored = copy.deepcopy(self._store.get(kind, {}).get(rid) or self._fictional(kind, rid))
        if stored is None:
            return outcome(404, "not-found")
        return self._answer(request, stored, 200)

    # -- interactions --------------------------------------------------------------------------

    async def _create(self, request: Request, kind: str) -> Response:
        resource = await self._incoming(request, kind)
        if isinstance(resource, Response):
            return resource
        condition = request.headers.get("if-none-exist") if self.conditional_create else None
        with self._lock:
            if condition is not None:
                params = parse_qsl(condition, keep_blank_values=True)
                if len(params) != 1 or params[0][0] != "identifier":
                    return outcome(400, "not-supported")
                matches = self._matching(kind, params[0][1])
                if len(matches) > 1:
                    return outcome(412, "duplicate")
                if matches:
                    return self._answer(request, copy.deepcopy(matches[0]), 200)
            rid = next(i for i in map(str, self._ids) if i not in self._store.get(kind, {}))
            stored = self._put(kind, rid, resource, version=1)
        if self.on_create is not None:
            self.on_create(copy.deepcopy(stored))
        return self._answer(request, stored, 201)

    async def _update(self, request: Request, kind: str, rid: str) -> Response:
        resource = await self._incoming(request, kind)
        if isinstance(resource, Response):
            return resource
        if resource.get("id") != rid:
            return outcome(400, "invalid", [f"{kind}.id"])
        with self._lock:
            previous = self._store.get(kind, {}).get(rid)
            version = 1 if previous is None else int(previous["meta"]["versionId"]) + 1
            stored = self._put(kind, rid, resource, version)
        return self._answer(request, stored, 201 if previous is None else 200)

    def _search(self, request: Request, kind: str) -> Response:
        params = [key for key in request.query_params if not key.startswith("_")]
        if any(key != "identifier" for key in params):
            return outcome(400, "not-supported")
        with self._lock:
            found = copy.deepcopy(self._matching(kind, request.query_params.get("identifier")))
        base = _base_url(request)
        entries = [{"fullUrl": f"{base}/{kind}/{r['id']}", "resource": r,
                    "search": {"mode": "match"}} for r in found]  # fmt: skip
        body = {"resourceType": "Bundle", "type": "searchset", "total": len(found),
                "entry": entries}  # fmt: skip
        return JSONResponse(body, media_type=FHIR_JSON)

    # -- parts ---------------------------------------------------------------------------------

    def _admit(self, request: Request, *, authenticate: bool = True) -> Response | None:
        """Record the request, then answer an injected failure or refuse a wrong token."""
        self.requests.append((request.method, _mount_path(request.scope)))
        if self._failures:
            failure = self._failures.popleft()
            wait = failure.retry_after
            headers = {} if wait is None else {"Retry-After": f"{wait:g}"}
            code = _FAILURE_CODES.get(failure.status, "transient")
            return outcome(failure.status, code, headers=headers)
        if not authenticate or (self.token is None and not self.issuer.clients):
            return None
        given = request.headers.get("authorization", "")
        if self.token is not None and hmac.compare_digest(given.encode(),
                                                          f"Bearer {self.token}".encode()):
            return None
        bearer = given.removeprefix("Bearer ")
        if bearer != given and self.issuer.valid(bearer, self._clock().timestamp()):
            return None
        return outcome(401, "login", headers={"WWW-Authenticate": "Bearer"})

    @staticmethod
    async def _incoming(request: Request, kind: str) -> dict[str, Any] | Response:
        """The request's resource, validated; or the 400 OperationOutcome saying where not."""
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return outcome(400, "structure")
        if not isinstance(body, dict):
            return outcome(400, "structure")
        if body.get("resourceType") != kind:
            return outcome(400, "invalid", [f"{kind}.resourceType"])
        problems = invalid_locations(body)
        return outcome(400, "invalid", problems) if problems else body

    def _fictional(self, kind: str, rid: str) -> dict[str, Any] | None:
        """The sandbox's fictional patients and encounters (``sandbox-patient-*``,
        ``sandbox-encounter-*``: the ids the fake Abridge API hands out) exist once read."""
        made = _FICTIONAL.get(kind)
        if made is None or not rid.startswith(f"sandbox-{kind.lower()}-"):
            return None
        return self._put(kind, rid, {"resourceType": kind, **made}, version=1)

    def _matching(self, kind: str, token: str | None) -> list[dict[str, Any]]:
        """The stored resources with identifier ``token`` (every one when None)."""
        stored = list(self._store.get(kind, {}).values())
        if token is None:
            return stored
        system, value = split_token(token)
        return [r for r in stored if _has(r, system, value)]

    def _put(self, kind: str, rid: str, resource: dict[str, Any], version: int) -> dict[str, Any]:
        """Store a copy with its id and meta (the caller holds the lock); return another."""
        given = resource.get("meta")
        meta: dict[str, Any] = given if isinstance(given, dict) else {}
        updated = self._clock().isoformat(timespec="milliseconds")
        meta = {**meta, "versionId": str(version), "lastUpdated": updated}
        stored = {**copy.deepcopy(resource), "id": rid, "meta": meta}
        self._store.setdefault(kind, {})[rid] = stored
        return copy.deepcopy(stored)

    @staticmethod
    def _answer(request: Request, resource: dict[str, Any], status: int) -> Response:
        kind, rid, version = resource["resourceType"], resource["id"], resource["meta"]["versionId"]
        base = _base_url(request)
        headers = {"Location": f"{base}/{kind}/{rid}/_history/{version}", "ETag": f'W/"{version}"'}
        if request.method != "GET" and "return=minimal" in request.headers.get("prefer", ""):
            return Response(status_code=status, headers=headers)
        return JSONResponse(resource, status, headers=headers, media_type=FHIR_JSON)
