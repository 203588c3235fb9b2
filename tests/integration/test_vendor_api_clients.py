"""The Abridge API client against the sandbox's fake, served on 127.0.0.1 (Healthie's:
``test_healthie_client.py``).

Each test gets a fresh fake under uvicorn and a real ``httpx.AsyncClient``; failures are
injected with the fakes' hooks. Canaries planted in bodies and GraphQL messages prove that no
clinical text reaches an error message (they are stored and shown to operators).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest

from carehook.connectors._http import retry_after_seconds
from carehook.connectors.abridge import AbridgeClient
from carehook.errors import PermanentError, RetryableError
from carehook.sandbox.abridge import FakeAbridgeApi
from loopback import free_port, serve_app

TOKEN = "abridge-test-token"
ORG = "org_test"
CANARY = "CANARY-Patient-reports-chest-pain-7f3a"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A real HTTP client, as the composition root would inject it."""
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
def abridge_fake() -> FakeAbridgeApi:
    """A fresh fake Abridge API."""
    return FakeAbridgeApi(TOKEN, ORG)


@pytest.fixture
def abridge_url(abridge_fake: FakeAbridgeApi) -> Iterator[str]:
    """The fake Abridge API served on loopback."""
    with serve_app(abridge_fake) as url:
        yield url


@pytest.fixture
def abridge(http: httpx.AsyncClient, abridge_url: str) -> AbridgeClient:
    """A client with the right credentials."""
    return AbridgeClient(http, abridge_url + "/", TOKEN, ORG)


# -- Abridge: happy paths -----------------------------------------------------------------------


async def test_session_note_becomes_a_clinical_note(
    abridge: AbridgeClient, abridge_fake: FakeAbridgeApi
) -> None:
    """A session's note arrives as a ClinicalNote with its sections, ids and EHR context."""
    note = await abridge.note("ses_7Qx2", None)
    served = abridge_fake.note_body("ses_7Qx2")
    assert (note.vendor, note.note_id, note.session_id) == ("abridge", "note_7Qx2", "ses_7Qx2")
    assert [s.key for s in note.sections] == [
        "CHIEF_COMPLAINT", "HPI", "ROS", "PHYSICAL_EXAM", "ASSESSMENT_AND_PLAN"]
    assert [s.text for s in note.sections] == [s["text"] for s in served["sections"]]
    assert note.patient_id == served["ehr"]["patient_id"]
    assert note.encounter_id == served["ehr"]["encounter_id"]
    assert note.created_at is not None
    assert note.created_at.tzinfo is not None
    assert note.title.startswith("Progress note: ")
    assert abridge_fake.requests == [("GET", "/v1/sessions/ses_7Qx2/note")]


async def test_note_by_id_is_the_same_note(abridge: AbridgeClient) -> None:
    """Fetching by note id gives the note fetched by its session id."""
    by_note = await abridge.note(None, "note_k9")
    by_session = await abridge.note("ses_k9", None)
    assert by_note.note_id == by_session.note_id == "note_k9"
    assert by_note.sections == by_session.sections


async def test_reviewed_note_comes_back_edited(
    abridge: AbridgeClient, abridge_fake: FakeAbridgeApi
) -> None:
    """After review the session's note is a new version with the clinician's edit."""
    draft = await abridge.note("ses_r1", "note_r1")
    abridge_fake.set_version("ses_r1", 2)
    final = await abridge.note("ses_r1", "note_r1")
    assert final.note_id == draft.note_id
    assert final.sections[:-1] == draft.sections[:-1]
    assert final.sections[-1].text.startswith(draft.sections[-1].text)
    assert "Clinician edit" in final.sections[-1].text
    assert final.sections[-1].text.endswith("(revision 2)")


async def test_patient_summary(abridge: AbridgeClient, abridge_fake: FakeAbridgeApi) -> None:
    """The patient summary keeps its id, session, language and text."""
    summary = await abridge.patient_summary("ses_42")
    assert (summary.summary_id, summary.session_id, summary.language) == (
        "sum_42", "ses_42", "en")
    assert summary.text == abridge_fake.summary_body("ses_42")["text"]
    assert summary.patient_id is not None


async def test_provider(abridge: AbridgeClient) -> None:
    """A provider has a name, a 10-digit NPI and is active."""
    provider = await abridge.provider("prov_0007")
    assert provider.provider_id == "prov_0007"
    assert provider.family_name
    assert provider.given_names
    assert provider.npi is not None
    assert len(provider.npi) == 10
    assert provider.npi.isdigit()
    assert provider.active


async def test_ids_cannot_steer_the_request(
    abridge: AbridgeClient, abridge_fake: FakeAbridgeApi
) -> None:
    """An id with slashes and dots stays one path segment: no other endpoint is reached."""
    with pytest.raises(PermanentError, match=r": 404$"):
        await abridge.note("../providers/p1", None)
    await abridge.note(None, "..")  # the notes endpoint with id "..", not a normalised /v1
    # the first request matched no route at all (so it was not recorded): only the second was
    assert abridge_fake.requests == [("GET", "/v1/notes/..")]


# -- Abridge: errors ----------------------------------------------------------------------------


async def test_wrong_token_is_permanent(http: httpx.AsyncClient, abridge_url: str) -> None:
    """401 for a wrong token is permanent; the message names the session, never the token."""
    client = AbridgeClient(http, abridge_url, "wrong-token-value", ORG)
    with pytest.raises(PermanentError) as caught:
        await client.note("ses_1", None)
    assert str(caught.value) == "abridge note for session ses_1: 401"
    assert "wrong-token-value" not in repr(client)


async def test_wrong_org_is_permanent(http: httpx.AsyncClient, abridge_url: str) -> None:
    """The fake refuses another organisation's requests; the client reports 403."""
    client = AbridgeClient(http, abridge_url, TOKEN, "org_other")
    with pytest.raises(PermanentError, match=r"^abridge provider p1: 403$"):
        await client.provider("p1")


async def test_not_found_is_permanent(abridge: AbridgeClient, abridge_fake: FakeAbridgeApi) -> None:
    """404 is permanent, with the message the workflows show."""
    abridge_fake.fail_next(1, status=404)
    with pytest.raises(PermanentError) as caught:
        await abridge.note("ses_gone", None)
    assert str(caught.value) == "abridge note for session ses_gone: 404"
    assert caught.value.retry_after is None


@pytest.mark.parametrize(("status", "header", "expected"),
                         [(503, 30, 30.0), (429, 2.5, 2.5), (500, None, None), (408, None, None)])
async def test_transient_statuses_are_retryable(
    abridge: AbridgeClient, abridge_fake: FakeAbridgeApi, status: int, header: float | None,
    expected: float | None,
) -> None:
    """408, 429 and 5xx are retryable, honouring Retry-After; the next try succeeds."""
    abridge_fake.fail_next(1, status=status, retry_after=header)
    with pytest.raises(RetryableError) as caught:
        await abridge.patient_summary("ses_1")
    assert caught.value.retry_after == expected
    assert str(caught.value) == f"abridge patient summary for session ses_1: {status}"
    assert (await abridge.patient_summary("ses_1")).session_id == "ses_1"


@pytest.mark.parametrize("status", [400, 403, 409, 422])
async def test_other_client_errors_are_permanent_and_quote_nothing(
    abridge: AbridgeClient, abridge_fake: FakeAbridgeApi, status: int
) -> None:
    """Other 4xx are permanent; a body echoing note text never reaches the message."""
    abridge_fake.fail_next(1, status=status, body=f"bad request: {CANARY}")
    with pytest.raises(PermanentError) as caught:
        await abridge.note("ses_1", None)
    assert str(caught.value) == f"abridge note for session ses_1: {status}"


async def test_invalid_note_names_locations_not_text(
    abridge: AbridgeClient, abridge_fake: FakeAbridgeApi
) -> None:
    """A note failing validation is permanent; the message names fields, never their values."""
    abridge_fake.set_response("/v1/sessions/ses_bad/note", {
        "id": "note_bad", "created_at": CANARY,
        "sections": [{"key": "HPI", "text": CANARY}, {"key": "PLAN", "title": "Plan"}],
    })  # fmt: skip
    with pytest.raises(PermanentError) as caught:
        await abridge.note("ses_bad", None)
    message = str(caught.value)
    assert message.startswith("abridge note for session ses_bad: invalid response at ")
    for location in ("created_at", "sections.0.title", "sections.1.text"):
        assert location in message
    assert "CANARY" not in message
    assert "chest" not in message


async def test_non_json_body_is_permanent(
    abridge: AbridgeClient, abridge_fake: FakeAbridgeApi
) -> None:
    """A 200 that is not JSON is permanent and not quoted."""
    abridge_fake.fail_next(1, status=200, body=f"<html>{CANARY}</html>")
    with pytest.raises(PermanentError) as caught:
        await abridge.provider("p1")
    assert str(caught.value) == "abridge provider p1: response is not JSON"


async def test_connection_refused_is_retryable(http: httpx.AsyncClient) -> None:
    """Nothing listening is a retryable connection failure."""
    client = AbridgeClient(http, f"http://127.0.0.1:{free_port()}", TOKEN, None)
    with pytest.raises(RetryableError, match=r"^abridge provider p1: request failed \(Connect"):
        await client.provider("p1")


async def test_timeout_is_retryable() -> None:
    """A timeout is retryable and says so."""

    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(hang)) as http:
        client = AbridgeClient(http, "https://abridge.example", TOKEN, ORG)
        with pytest.raises(RetryableError, match=r"^abridge note ntx: timeout \(ReadTimeout\)$"):
            await client.note(None, "ntx")


async def test_sends_bearer_token_and_org_header() -> None:
    """Requests carry the bearer token and the organisation; no org header without one."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(404)

    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as http:
        for org in (ORG, None):
            with pytest.raises(PermanentError):
                await AbridgeClient(http, "https://abridge.example/api", TOKEN, org).provider("p")
    assert [str(r.url) for r in seen] == ["https://abridge.example/api/v1/providers/p"] * 2
    assert seen[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert seen[0].headers["x-org-id"] == ORG
    assert "x-org-id" not in seen[1].headers


def test_retry_after_forms() -> None:
    """Retry-After is read as seconds or an HTTP date; garbage and negatives are handled."""
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds("", now) is None
    assert retry_after_seconds("nan", now) is None
