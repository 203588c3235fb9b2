"""The Abridge and Healthie API clients against the sandbox's fakes, served on 127.0.0.1.

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
from carehook.connectors.healthie import API_VERSION, HealthieClient
from carehook.errors import PermanentError, RetryableError
from carehook.sandbox.abridge import FakeAbridgeApi
from carehook.sandbox.healthie import FakeHealthieApi
from loopback import free_port, serve_app

TOKEN = "abridge-test-token"
ORG = "org_test"
KEY = "healthie-test-key"
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


@pytest.fixture
def healthie_fake() -> FakeHealthieApi:
    """A fresh fake Healthie API."""
    return FakeHealthieApi(KEY)


@pytest.fixture
def healthie_url(healthie_fake: FakeHealthieApi) -> Iterator[str]:
    """The fake Healthie GraphQL endpoint served on loopback."""
    with serve_app(healthie_fake) as url:
        yield url + "/graphql"


@pytest.fixture
def healthie(http: httpx.AsyncClient, healthie_url: str) -> HealthieClient:
    """A client with the right API key."""
    return HealthieClient(http, healthie_url, KEY)


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
    assert seen[0].headers["x-abridge-org-id"] == ORG
    assert "x-abridge-org-id" not in seen[1].headers


def test_retry_after_forms() -> None:
    """Retry-After is read as seconds or an HTTP date; garbage and negatives are handled."""
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds("", now) is None
    assert retry_after_seconds("nan", now) is None


# -- Healthie: happy paths ----------------------------------------------------------------------


async def test_appointment(healthie: HealthieClient, healthie_fake: FakeHealthieApi) -> None:
    """An appointment arrives with its client, provider, start (Healthie's format) and status."""
    appointment = await healthie.appointment("700123")
    served = healthie_fake.appointment_body("700123")
    assert appointment.appointment_id == "700123"
    assert appointment.patient_id == served["user"]["id"]
    assert appointment.provider_id == served["provider"]["id"]
    assert appointment.status == "Occurred"
    assert appointment.starts_at == datetime.strptime(served["date"], "%Y-%m-%d %H:%M:%S %z")
    assert healthie_fake.requests == [("appointment", "700123")]


async def test_transcript(healthie: HealthieClient, healthie_fake: FakeHealthieApi) -> None:
    """A transcript arrives as DOCTOR/PATIENT items in order, with offsets."""
    transcript = await healthie.transcript("700123")
    served = healthie_fake.transcript_body("700123")
    assert (transcript.vendor, transcript.transcript_id) == ("healthie", served["id"])
    assert transcript.external_id == "700123"
    assert transcript.language == "en"
    assert transcript.created_at is not None
    assert [i.text for i in transcript.items] == [e["text"] for e in served["entries"]]
    assert {i.speaker for i in transcript.items} == {"DOCTOR", "PATIENT"}
    starts = [i.start_ms for i in transcript.items]
    assert all(isinstance(s, int) for s in starts)
    assert starts == sorted(starts)
    assert healthie_fake.requests == [("appointmentTranscript", "700123")]


async def test_speakers_and_iso_dates_are_normalised(
    healthie: HealthieClient, healthie_fake: FakeHealthieApi
) -> None:
    """Healthie's provider/client speakers map to DOCTOR/PATIENT; ISO 8601 dates are read."""
    healthie_fake.set_result("appointmentTranscript", "5", {"id": 77, "entries": [
        {"speaker": "provider", "text": "a"}, {"speaker": "Client", "text": "b"},
        {"speaker": None, "text": "c"}, {"speaker": "interpreter", "text": "d"}]})  # fmt: skip
    healthie_fake.set_result("appointment", "5", {"id": 5, "date": "2026-03-02T14:30:00Z"})
    transcript = await healthie.transcript("5")
    assert [i.speaker for i in transcript.items] == ["DOCTOR", "PATIENT", "UNSPECIFIED",
                                                     "UNSPECIFIED"]  # fmt: skip
    assert transcript.transcript_id == "77"
    appointment = await healthie.appointment("5")
    assert appointment.starts_at == datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
    assert (appointment.patient_id, appointment.provider_id) == (None, None)


async def test_sends_healthies_headers_and_query() -> None:
    """Exactly the headers VENDORS.md requires, and the documented query and variables."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": {"appointment": {"id": "9"}}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as http:
        await HealthieClient(http, "https://api.gethealthie.com/graphql", KEY).appointment("9")
    request = seen[0]
    assert request.method == "POST"
    assert str(request.url) == "https://api.gethealthie.com/graphql"
    assert request.headers["authorization"] == f"Basic {KEY}"
    assert request.headers["authorizationsource"] == "API"
    assert request.headers["healthie-graphql-api-version"] == API_VERSION == "2026-01-01"
    body = httpx.Response(200, content=request.content).json()
    assert "appointment(id: $id)" in body["query"]
    assert body["variables"] == {"id": "9"}


# -- Healthie: errors ---------------------------------------------------------------------------


async def test_wrong_api_key_is_permanent(http: httpx.AsyncClient, healthie_url: str) -> None:
    """A wrong key gets the GraphQL-style 401: permanent, with status and code only."""
    client = HealthieClient(http, healthie_url, "not-the-key")
    with pytest.raises(PermanentError) as caught:
        await client.appointment("1")
    assert str(caught.value) == "healthie appointment 1: 401 (GraphQL error UNAUTHENTICATED)"


async def test_wrong_api_version_is_permanent(http: httpx.AsyncClient, healthie_url: str) -> None:
    """The fake insists on the API version header, as Healthie will from 2027."""
    client = HealthieClient(http, healthie_url, KEY, api_version="2024-01-01")
    with pytest.raises(PermanentError, match=r"400 \(GraphQL error UNSUPPORTED_API_VERSION\)$"):
        await client.transcript("1")


@pytest.mark.parametrize(("retry_after", "expected"), [(12, 12.0), (None, None)])
async def test_rate_limit_is_retryable(
    healthie: HealthieClient, healthie_fake: FakeHealthieApi, retry_after: float | None,
    expected: float | None,
) -> None:
    """TOO_MANY_REQUESTS (an HTTP 200) is retryable with the extension's retry_after."""
    healthie_fake.rate_limit_next(1, retry_after=retry_after)
    with pytest.raises(RetryableError) as caught:
        await healthie.transcript("700001")
    assert str(caught.value) == (
        "healthie transcript of appointment 700001: GraphQL error TOO_MANY_REQUESTS")
    assert caught.value.retry_after == expected
    assert (await healthie.transcript("700001")).items


async def test_http_503_is_retryable(healthie: HealthieClient, healthie_fake: FakeHealthieApi
                                     ) -> None:  # fmt: skip
    """An HTTP 503 with Retry-After is retryable."""
    healthie_fake.fail_next(1, status=503, retry_after=5)
    with pytest.raises(RetryableError) as caught:
        await healthie.appointment("1")
    assert caught.value.retry_after == 5.0


async def test_graphql_error_keeps_the_code_not_the_message(
    healthie: HealthieClient, healthie_fake: FakeHealthieApi
) -> None:
    """Any other GraphQL error is permanent and keeps only its code: messages may echo input."""
    healthie_fake.error_next("FORBIDDEN", message=f"Cannot read transcript: {CANARY}")
    with pytest.raises(PermanentError) as caught:
        await healthie.transcript("700001")
    assert str(caught.value) == "healthie transcript of appointment 700001: GraphQL error FORBIDDEN"


async def test_missing_appointment_is_permanent(
    healthie: HealthieClient, healthie_fake: FakeHealthieApi
) -> None:
    """A null appointment (Healthie's "not found") is permanent."""
    healthie_fake.hide("404404")
    with pytest.raises(PermanentError, match=r"^healthie appointment 404404: not found$"):
        await healthie.appointment("404404")


async def test_invalid_transcript_names_locations_not_text(
    healthie: HealthieClient, healthie_fake: FakeHealthieApi
) -> None:
    """A transcript failing validation is permanent; its text never reaches the message."""
    healthie_fake.set_result("appointmentTranscript", "8", {"id": "t8", "entries": [
        {"speaker": "DOCTOR", "text": CANARY, "start_ms": CANARY}, {"speaker": "PATIENT"}]})
    with pytest.raises(PermanentError) as caught:
        await healthie.transcript("8")
    message = str(caught.value)
    assert "entries.0.start_ms" in message
    assert "entries.1.text" in message
    assert "CANARY" not in message
