"""FhirClient against the sandbox FHIR server (and a few misbehaving peers) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from carehook.connectors._http import retry_after_seconds as retry_after
from carehook.connectors.fhir import mapping
from carehook.connectors.fhir.client import FhirClient, OAuthClientCredentials
from carehook.errors import PermanentError, RetryableError
from carehook.sandbox.fhir import FhirServer
from carehook.workflows.ports import ClinicalNote, NoteSection
from loopback import free_port, serve_app

TOKEN = "static-token-5d1e"
SECRET = "client-secret-9c2b"
CANARY = "CANARY-PHI-7731"
SYSTEM = mapping.NOTE_SYSTEM["abridge"]
NOTE = ClinicalNote(
    vendor="abridge",
    note_id="note-77",
    sections=(NoteSection("ASSESSMENT_AND_PLAN", "Assessment and plan", f"Plan. {CANARY}"),),
    title="Visit note",
    patient_id="pat-1",
    encounter_id="enc-1",
    created_at=datetime(2026, 2, 3, 10, 0, tzinfo=UTC),
)


@dataclass
class TokenEndpoint:
    """An OAuth2 token endpoint that grants ``tok-<n>`` and makes the FHIR server accept it."""

    server: FhirServer
    expires_in: int = 3600
    grant_access: bool = True
    status: int = 200
    forms: list[dict[str, str]] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        """Check the client secret and issue the next token."""
        form = dict(parse_qsl((await request.body()).decode()))
        self.forms.append(form)
        if self.status != 200:
            return JSONResponse({"error": "temporarily_unavailable"}, self.status)
        if form.get("client_secret") != SECRET:
            body = {"error": "invalid_client", "error_description": f"bad {form}"}
            return JSONResponse(body, 401)
        token = f"tok-{len(self.forms)}"
        if self.grant_access:
            self.server.token = token
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}
        return JSONResponse(body)


def _force_minimal(app: ASGIApp) -> ASGIApp:
    """Wrap ``app`` so every request asks for ``Prefer: return=minimal`` (empty write bodies)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope["headers"] if k != b"prefer"]
            scope = {**scope, "headers": [*headers, (b"prefer", b"return=minimal")]}
        await app(scope, receive, send)

    return wrapped


async def _not_json(request: Request) -> Response:
    return Response("<html>gateway page</html>", 201, media_type="text/html")


async def _not_valid(request: Request) -> Response:
    return JSONResponse({"resourceType": "DocumentReference", "status": "current"}, 201)


async def _echoing_outcome(request: Request) -> Response:
    """A server that echoes the input in diagnostics and a filtered expression."""
    filtered = f"DocumentReference.where(text='{CANARY}')"
    issue = {"severity": "error", "code": "invalid", "diagnostics": f"bad text {CANARY}",
             "expression": [filtered, "DocumentReference.date"]}  # fmt: skip
    return JSONResponse({"resourceType": "OperationOutcome", "issue": [issue]}, 422)


async def _away_location(request: Request) -> Response:
    """201 with no body and a Location on another host (the client must not go there)."""
    where = "http://attacker.invalid/x/DocumentReference/abc/_history/1"
    return Response(status_code=201, headers={"Location": where})


async def _relative_location(request: Request) -> Response:
    """201 with no body and a relative Location, as Epic answers."""
    return Response(status_code=201, headers={"Location": "DocumentReference/abc/_history/1"})


async def _away_read(request: Request) -> Response:
    return JSONResponse({**mapping.note_document_reference(NOTE, "final"), "id": "abc"})


@pytest.fixture
def server() -> FhirServer:
    """The sandbox server, wanting the static token."""
    return FhirServer(token=TOKEN)


@pytest.fixture
def tokens(server: FhirServer) -> TokenEndpoint:
    """The OAuth2 token endpoint of the test app."""
    return TokenEndpoint(server)


@pytest.fixture
def url(server: FhirServer, tokens: TokenEndpoint) -> Iterator[str]:
    """The test app on loopback: the server under /fhir and /minimal, a token endpoint, quirks."""
    app = Starlette(routes=[
        Mount("/fhir", app=server.app),
        Mount("/minimal", app=_force_minimal(server.app)),
        Route("/token", tokens.handle, methods=["POST"]),
        Route("/odd/notjson/DocumentReference", _not_json, methods=["POST"]),
        Route("/odd/invalid/DocumentReference", _not_valid, methods=["POST"]),
        Route("/odd/echo/DocumentReference", _echoing_outcome, methods=["POST"]),
        Route("/odd/away/DocumentReference", _away_location, methods=["POST"]),
        Route("/odd/away/DocumentReference/abc", _away_read, methods=["GET"]),
        Route("/odd/relative/DocumentReference", _relative_location, methods=["POST"]),
        Route("/odd/relative/DocumentReference/abc", _away_read, methods=["GET"]),
    ])  # fmt: skip
    with serve_app(app) as base:
        yield base


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The injected HTTP client."""
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
def ehr(http: httpx.AsyncClient, url: str) -> FhirClient:
    """A client of the sandbox server with the static bearer token."""
    return FhirClient(http, f"{url}/fhir", token=TOKEN)


def _oauth(url: str, secret: str = SECRET) -> OAuthClientCredentials:
    return OAuthClientCredentials(f"{url}/token", "carehook", secret, scope="system/*.write")


def _doc(status: str = "preliminary") -> dict[str, Any]:
    return mapping.note_document_reference(NOTE, status)


async def _create(ehr: FhirClient) -> tuple[dict[str, Any], bool]:
    return await ehr.create(_doc(), if_none_exist=mapping.if_none_exist(SYSTEM, NOTE.note_id))


# -- the Ehr interactions ------------------------------------------------------------------------


async def test_conditional_create_twice_stores_one(ehr: FhirClient, server: FhirServer) -> None:
    """The second conditional create returns the first resource, not a new one."""
    first, created = await _create(ehr)
    second, created_again = await _create(ehr)
    assert (created, created_again) == (True, False)
    assert second["id"] == first["id"]
    assert len(server.resources("DocumentReference")) == 1


async def test_update_bumps_the_version(ehr: FhirClient) -> None:
    """Updating the stored resource returns it with versionId 2 and the new docStatus."""
    stored, _ = await _create(ehr)
    amended = mapping.note_document_reference(NOTE, "amended", existing=stored)
    updated = await ehr.update(amended)
    assert (updated["id"], updated["meta"]["versionId"]) == (stored["id"], "2")
    assert mapping.doc_status(updated) == "amended"


async def test_search_finds_none_one_or_refuses_many(ehr: FhirClient) -> None:
    """0 matches: None; 1: the resource; 2: PermanentError (the identifier is not unique)."""
    assert await ehr.search("DocumentReference", SYSTEM, NOTE.note_id) is None
    stored, _ = await _create(ehr)
    found = await ehr.search("DocumentReference", SYSTEM, NOTE.note_id)
    assert found is not None
    assert found["id"] == stored["id"]
    await ehr.create(_doc())
    with pytest.raises(PermanentError, match="2 resources"):
        await ehr.search("DocumentReference", SYSTEM, NOTE.note_id)


async def test_empty_write_bodies_are_read_back(
    http: httpx.AsyncClient, url: str, server: FhirServer
) -> None:
    """A server answering writes with Location only: the client GETs the stored resource."""
    ehr = FhirClient(http, f"{url}/minimal", token=TOKEN)
    stored, created = await _create(ehr)
    updated = await ehr.update(mapping.note_document_reference(NOTE, "final", existing=stored))
    assert created
    assert (stored["meta"]["versionId"], updated["meta"]["versionId"]) == ("1", "2")
    assert [method for method, _ in server.requests] == ["POST", "GET", "PUT", "GET"]


async def test_location_on_another_host_is_not_followed(http: httpx.AsyncClient, url: str) -> None:
    """Only the type and id are taken from a Location; the read goes to the base URL."""
    ehr = FhirClient(http, f"{url}/odd/away", token=TOKEN)
    stored, created = await ehr.create(_doc())
    assert (stored["id"], created) == ("abc", True)


async def test_a_relative_location_is_read_back_under_the_base(
    http: httpx.AsyncClient, url: str
) -> None:
    """``Location: DocumentReference/abc/_history/1`` (relative) names the stored resource."""
    ehr = FhirClient(http, f"{url}/odd/relative", token=TOKEN)
    stored, created = await ehr.create(_doc())
    assert (stored["id"], created) == ("abc", True)


# -- failures ------------------------------------------------------------------------------------


async def test_503_is_retryable_with_retry_after(ehr: FhirClient, server: FhirServer) -> None:
    """A 503 with Retry-After: 7 raises RetryableError(retry_after=7)."""
    server.fail_next(1, status=503, retry_after=7)
    with pytest.raises(RetryableError) as info:
        await _create(ehr)
    assert info.value.retry_after == 7.0
    assert str(info.value) == "fhir create DocumentReference: 503 (error/transient)"


async def test_429_is_retryable(ehr: FhirClient, server: FhirServer) -> None:
    """A 429 is a rate limit: retry later."""
    server.fail_next(1, status=429)
    with pytest.raises(RetryableError, match="429") as info:
        await ehr.search("DocumentReference", SYSTEM, NOTE.note_id)
    assert info.value.retry_after is None


async def test_refused_resource_is_permanent_and_phi_free(ehr: FhirClient) -> None:
    """A 400 names the field the server refused; the note's text never reaches the message."""
    bad = {**_doc(), "date": CANARY}
    with pytest.raises(PermanentError) as info:
        await ehr.create(bad)
    message = str(info.value)
    assert message == "fhir create DocumentReference: 400 (error/invalid at DocumentReference.date)"
    assert CANARY not in message


async def test_422_echo_is_summarised_without_it(http: httpx.AsyncClient, url: str) -> None:
    """A server echoing input in diagnostics or expressions: only severity, code and paths."""
    ehr = FhirClient(http, f"{url}/odd/echo", token=TOKEN)
    with pytest.raises(PermanentError) as info:
        await ehr.create(_doc())
    assert str(info.value) == (
        "fhir create DocumentReference: 422 (error/invalid at DocumentReference.date)"
    )


async def test_query_values_stay_out_of_messages(ehr: FhirClient, server: FhirServer) -> None:
    """A failed search names the type and status, not the identifier searched for."""
    server.fail_next(1, status=500)
    with pytest.raises(RetryableError) as info:
        await ehr.search("DocumentReference", SYSTEM, CANARY)
    assert CANARY not in str(info.value)


@pytest.mark.parametrize(("quirk", "reason"), [("notjson", "not JSON"), ("invalid", "not a valid")])
async def test_a_2xx_that_is_not_fhir_is_permanent(
    http: httpx.AsyncClient, url: str, quirk: str, reason: str
) -> None:
    """A success status with an HTML page or an invalid resource cannot be trusted."""
    ehr = FhirClient(http, f"{url}/odd/{quirk}", token=TOKEN)
    with pytest.raises(PermanentError, match=reason):
        await ehr.create(_doc())


async def test_connection_refused_is_retryable(http: httpx.AsyncClient) -> None:
    """Nobody listening: try again later."""
    ehr = FhirClient(http, f"http://127.0.0.1:{free_port()}/fhir", token=TOKEN)
    with pytest.raises(RetryableError, match="ConnectError"):
        await _create(ehr)


async def test_timeout_is_retryable() -> None:
    """A read timeout is transient (transport stubbed: nothing sleeps)."""

    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(hang)) as http:
        ehr = FhirClient(http, "http://fhir.example/fhir", token=TOKEN)
        with pytest.raises(RetryableError, match="ReadTimeout"):
            await ehr.search("DocumentReference", SYSTEM, NOTE.note_id)


async def test_wrong_bearer_token_is_permanent(http: httpx.AsyncClient, url: str) -> None:
    """The server refuses the token: PermanentError, and the token is not in the message."""
    ehr = FhirClient(http, f"{url}/fhir", token="wrong-token-3f")
    with pytest.raises(PermanentError, match="401") as info:
        await _create(ehr)
    assert "wrong-token-3f" not in str(info.value)


def test_retry_after_reads_seconds_and_dates() -> None:
    """Delta seconds, an HTTP date relative to now, and junk."""
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC).timestamp()
    later = format_datetime(datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC), usegmt=True)
    assert retry_after("12", now) == 12.0
    assert retry_after(later, now) == 30.0
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None


# -- OAuth2 client credentials -------------------------------------------------------------------


async def test_oauth_token_is_fetched_once_and_reused(
    http: httpx.AsyncClient, url: str, tokens: TokenEndpoint
) -> None:
    """Client credentials are posted once; the token serves every following request."""
    ehr = FhirClient(http, f"{url}/fhir", oauth=_oauth(url))
    stored, _ = await _create(ehr)
    await ehr.search("DocumentReference", SYSTEM, NOTE.note_id)
    await ehr.update(stored)
    assert tokens.forms == [{"grant_type": "client_credentials", "client_id": "carehook",
                             "client_secret": SECRET, "scope": "system/*.write"}]  # fmt: skip


async def test_oauth_token_is_refreshed_after_a_401(
    http: httpx.AsyncClient, url: str, server: FhirServer, tokens: TokenEndpoint
) -> None:
    """The server stops accepting the cached token: one 401, a new token, the request succeeds."""
    ehr = FhirClient(http, f"{url}/fhir", oauth=_oauth(url))
    await _create(ehr)
    server.token = "revoked"
    found = await ehr.search("DocumentReference", SYSTEM, NOTE.note_id)
    assert found is not None
    assert len(tokens.forms) == 2
    assert [m for m, _ in server.requests] == ["POST", "GET", "GET"]


async def test_oauth_gives_up_after_one_refresh(
    http: httpx.AsyncClient, url: str, server: FhirServer, tokens: TokenEndpoint
) -> None:
    """A fresh token refused too: PermanentError, no loop."""
    tokens.grant_access = False
    ehr = FhirClient(http, f"{url}/fhir", oauth=_oauth(url))
    with pytest.raises(PermanentError, match="401"):
        await _create(ehr)
    assert len(tokens.forms) == 2


async def test_oauth_token_is_renewed_before_it_expires(
    http: httpx.AsyncClient, url: str, tokens: TokenEndpoint
) -> None:
    """expires_in 60 s, margin 30 s: 31 s later a new token is fetched without a 401."""
    now = [1_000.0]
    tokens.expires_in = 60
    ehr = FhirClient(http, f"{url}/fhir", oauth=_oauth(url), clock=lambda: now[0])
    await _create(ehr)
    now[0] += 29
    await _create(ehr)
    assert len(tokens.forms) == 1
    now[0] += 2
    await _create(ehr)
    assert len(tokens.forms) == 2


async def test_oauth_refused_credentials_are_permanent_and_secret_free(
    http: httpx.AsyncClient, url: str
) -> None:
    """A wrong secret: PermanentError with the OAuth error code, never the secret."""
    ehr = FhirClient(http, f"{url}/fhir", oauth=_oauth(url, secret="wrong-secret-77"))
    with pytest.raises(PermanentError, match=r"401 \(invalid_client\)") as info:
        await _create(ehr)
    assert "wrong-secret-77" not in str(info.value)


async def test_oauth_endpoint_outage_is_retryable(
    http: httpx.AsyncClient, url: str, tokens: TokenEndpoint
) -> None:
    """The token endpoint answering 503 is transient."""
    tokens.status = 503
    ehr = FhirClient(http, f"{url}/fhir", oauth=_oauth(url))
    with pytest.raises(RetryableError, match="oauth token: 503"):
        await _create(ehr)


def test_token_and_oauth_together_are_refused() -> None:
    """One way of authenticating, not two."""
    with pytest.raises(ValueError, match="not both"):
        FhirClient(httpx.AsyncClient(), "http://x", token=TOKEN, oauth=_oauth("http://x"))
