"""The Healthie client in Healthie's real shapes, against the sandbox's fake on 127.0.0.1.

Appointments carry their ``transcripts`` (with ``expiring_url`` links to real WebVTT files the
fake serves) and the scribe's ``generated_form_answer_group``; webhooks are created, listed,
rotated and deleted over GraphQL. Canaries prove that neither clinical text nor a transcript
link reaches an error message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest

from carehook.connectors.healthie import API_VERSION, HealthieClient, HealthieWebhooks
from carehook.connectors.outbound import OutboundRefused, outbound_client
from carehook.errors import PermanentError, RetryableError
from carehook.sandbox import _healthie_content as content
from carehook.sandbox.healthie import FakeHealthieApi
from carehook.workflows.ports import TranscriptLink, TranscriptLinkExpired
from carehook.workflows.transcripts import fetch_vtt, pick_transcript
from carehook.workflows.vtt import parse_vtt, speaker_roles
from loopback import serve_app

KEY = "healthie-test-key"
CANARY = "CANARY-Patient-reports-chest-pain-7f3a"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The SSRF-guarded client the composition root injects (loopback allowed, as a sandbox
    source's ``api_allow_private`` does)."""
    async with outbound_client(allow_private=True) as client:
        yield client


@pytest.fixture
def fake() -> FakeHealthieApi:
    """A fresh fake Healthie API."""
    return FakeHealthieApi(KEY)


@pytest.fixture
def url(fake: FakeHealthieApi) -> Iterator[str]:
    """The fake's GraphQL endpoint served on loopback."""
    with serve_app(fake) as base:
        yield base + "/graphql"


@pytest.fixture
def client(http: httpx.AsyncClient, url: str) -> HealthieClient:
    """A client with the right API key."""
    return HealthieClient(http, url, KEY)


# -- appointments and transcripts ---------------------------------------------------------------


async def test_appointment_carries_people_transcripts_and_scribe_note(
    client: HealthieClient, fake: FakeHealthieApi
) -> None:
    """Client, provider, start, both completed transcripts with links, and the scribe's note."""
    appointment = await client.appointment("700123")
    served = fake.appointment_body("700123")
    assert (appointment.patient_id, appointment.provider_id) == (
        served["user"]["id"], served["provider"]["id"])
    assert appointment.provider_name == served["provider"]["full_name"]
    assert appointment.starts_at == datetime.strptime(served["date"], "%Y-%m-%d %H:%M:%S %z")
    kinds = {t.kind: t for t in appointment.transcripts}
    assert set(kinds) == {"realtime_capture", "processed_recording"}
    assert all(t.status == "completed" and t.url and t.ends_at for t in kinds.values())
    assert kinds["processed_recording"].transcript_id == fake.transcript_id(
        "700123", "processed_recording")
    note = appointment.scribe_note
    assert note is not None
    assert [s.title for s in note.sections] == ["Subjective", "Assessment", "Plan"]
    assert note.sections[2].text == served["generated_form_answer_group"][
        "generated_form_answers"][2]["displayed_answer"]
    assert fake.requests == [("appointment", "700123")]


async def test_a_processing_transcript_is_listed_without_a_link(
    client: HealthieClient, fake: FakeHealthieApi
) -> None:
    """The status filter asks for completed and processing; a processing one has no link."""
    fake.set_transcripts("5", [("processed_recording", "processing"),
                               ("realtime_capture", "failed")])  # fmt: skip
    appointment = await client.appointment("5")
    [only] = appointment.transcripts
    assert (only.status, only.url) == ("processing", None)
    assert pick_transcript(appointment.transcripts) is None


async def test_vtt_file_is_downloaded_and_parsed_with_speakers_and_offsets(
    client: HealthieClient, fake: FakeHealthieApi
) -> None:
    """Both VTT styles (Zoom's ``Name:`` and ``<v Name>``) give the conversation in order."""
    appointment = await client.appointment("700123")
    roles = speaker_roles(appointment.provider_name, appointment.patient_name)
    expected = [(role, text, start, end) for role, text, start, end in content.turns("700123")]
    for link in appointment.transcripts:
        text = await client.transcript_file(link)
        assert text.startswith("WEBVTT")
        items = parse_vtt(text, roles, "t")
        assert [(i.speaker, i.text, i.start_ms, i.end_ms) for i in items] == expected
    assert [status for _, status in fake.downloads] == [200, 200]


async def test_the_download_sends_no_healthie_credentials() -> None:
    """The presigned link is fetched with a plain GET: the API key never leaves for its host."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text="WEBVTT\n")

    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as http:
        link = TranscriptLink("t1", "completed", url="https://files.example/t1.vtt?sig=abc")
        await HealthieClient(http, "https://api.gethealthie.com/graphql", KEY).transcript_file(link)
    assert seen[0].method == "GET"
    assert "authorization" not in seen[0].headers


async def test_an_expired_link_is_refused_without_quoting_it(
    client: HealthieClient, fake: FakeHealthieApi
) -> None:
    """403 from the file host is TranscriptLinkExpired; the message names no link or token."""
    appointment = await client.appointment("700123")
    fake.expire_links()
    link = appointment.transcripts[0]
    with pytest.raises(TranscriptLinkExpired) as caught:
        await client.transcript_file(link)
    assert str(caught.value) == f"healthie transcript {link.transcript_id} file: 403 (link expired)"
    assert link.url
    assert link.url.split("/")[-1].split(".")[0] not in str(caught.value)
    assert isinstance(caught.value, RetryableError)


async def test_an_expired_link_is_replaced_by_querying_the_appointment_again(
    client: HealthieClient, fake: FakeHealthieApi
) -> None:
    """The first link is born expired: the step re-queries, gets a fresh link, downloads it."""
    fake.expire_next_links(2)  # both transcripts of the first answer
    appointment, text, link = await fetch_vtt(client, "700123")
    assert link.kind == "processed_recording"
    assert text == fake.vtt("700123", "processed_recording")
    assert fake.requests == [("appointment", "700123")] * 2
    assert [status for _, status in fake.downloads] == [403, 200]
    assert appointment.appointment_id == "700123"


async def test_links_that_keep_expiring_end_retryable(
    client: HealthieClient, fake: FakeHealthieApi
) -> None:
    """After the refreshes, a still-expired link is a retryable failure (the worker backs off)."""
    fake.expire_next_links(100)
    with pytest.raises(TranscriptLinkExpired):
        await fetch_vtt(client, "700123")
    assert len(fake.requests) == 3


async def test_no_completed_transcript_yet_is_retryable(
    client: HealthieClient, fake: FakeHealthieApi
) -> None:
    """A transcript still processing means "later", not "never"."""
    fake.set_transcripts("6", [("processed_recording", "processing")])
    with pytest.raises(RetryableError, match="no completed transcript yet"):
        await fetch_vtt(client, "6")


async def test_the_outbound_guard_applies_to_the_transcript_link(fake: FakeHealthieApi,
                                                                url: str) -> None:  # fmt: skip
    """Without api_allow_private, a link to a loopback host is refused before connecting, and
    the refusal names the host only, never the link."""
    async with outbound_client(allow_private=True) as open_http:
        appointment = await HealthieClient(open_http, url, KEY).appointment("700123")
    link = appointment.transcripts[0]
    async with outbound_client(allow_private=False) as guarded:
        with pytest.raises(OutboundRefused) as caught:
            await HealthieClient(guarded, url, KEY).transcript_file(link)
    assert link.url
    assert "transcripts" not in str(caught.value)
    assert fake.downloads == []


async def test_sends_healthies_headers_and_the_real_query() -> None:
    """The headers VENDORS.md requires; ``transcripts`` on ``appointment``, no invented query."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": {"appointment": {"id": "9"}}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as http:
        await HealthieClient(http, "https://api.gethealthie.com/graphql", KEY).appointment("9")
    request = seen[0]
    assert request.headers["authorization"] == f"Basic {KEY}"
    assert request.headers["authorizationsource"] == "API"
    assert request.headers["healthie-graphql-api-version"] == API_VERSION == "2026-01-01"
    body = httpx.Response(200, content=request.content).json()
    assert "appointment(id: $id)" in body["query"]
    assert "transcripts(status: $statuses)" in body["query"]
    assert "expiring_url" in body["query"]
    assert "generated_form_answer_group" in body["query"]
    assert "appointmentTranscript" not in body["query"]
    assert body["variables"] == {"id": "9", "statuses": ["completed", "processing"]}


# -- errors -------------------------------------------------------------------------------------


async def test_wrong_api_key_is_permanent(http: httpx.AsyncClient, url: str) -> None:
    """A wrong key gets the GraphQL-style 401: permanent, with status and code only."""
    with pytest.raises(PermanentError) as caught:
        await HealthieClient(http, url, "not-the-key").appointment("1")
    assert str(caught.value) == "healthie appointment 1: 401 (GraphQL error UNAUTHENTICATED)"


async def test_wrong_api_version_is_permanent(http: httpx.AsyncClient, url: str) -> None:
    """The fake insists on the API version header, as Healthie will from 2027."""
    client = HealthieClient(http, url, KEY, api_version="2024-01-01")
    with pytest.raises(PermanentError, match=r"400 \(GraphQL error UNSUPPORTED_API_VERSION\)$"):
        await client.appointment("1")


@pytest.mark.parametrize(("retry_after", "expected"), [(12, 12.0), (None, None)])
async def test_rate_limit_is_retryable(
    client: HealthieClient, fake: FakeHealthieApi, retry_after: float | None,
    expected: float | None,
) -> None:
    """TOO_MANY_REQUESTS (an HTTP 200) is retryable with the extension's retry_after."""
    fake.rate_limit_next(1, retry_after=retry_after)
    with pytest.raises(RetryableError) as caught:
        await client.appointment("700001")
    assert str(caught.value) == "healthie appointment 700001: GraphQL error TOO_MANY_REQUESTS"
    assert caught.value.retry_after == expected
    assert (await client.appointment("700001")).transcripts


async def test_http_503_is_retryable(client: HealthieClient, fake: FakeHealthieApi) -> None:
    """An HTTP 503 with Retry-After is retryable."""
    fake.fail_next(1, status=503, retry_after=5)
    with pytest.raises(RetryableError) as caught:
        await client.appointment("1")
    assert caught.value.retry_after == 5.0


async def test_graphql_error_keeps_the_code_not_the_message(
    client: HealthieClient, fake: FakeHealthieApi
) -> None:
    """Any other GraphQL error is permanent and keeps only its code: messages may echo input."""
    fake.error_next("FORBIDDEN", message=f"Cannot read transcript: {CANARY}")
    with pytest.raises(PermanentError) as caught:
        await client.appointment("700001")
    assert str(caught.value) == "healthie appointment 700001: GraphQL error FORBIDDEN"


async def test_missing_appointment_is_permanent(client: HealthieClient, fake: FakeHealthieApi
                                                ) -> None:  # fmt: skip
    """A null appointment (Healthie's "not found") is permanent."""
    fake.hide("404404")
    with pytest.raises(PermanentError, match=r"^healthie appointment 404404: not found$"):
        await client.appointment("404404")


async def test_invalid_appointment_names_locations_not_values(
    client: HealthieClient, fake: FakeHealthieApi
) -> None:
    """An answer failing validation is permanent; its values never reach the message."""
    fake.set_result("appointment", "8", {"id": "8", "date": CANARY, "transcripts": [
        {"id": "t8", "transcript_start": CANARY}]})  # fmt: skip
    with pytest.raises(PermanentError) as caught:
        await client.appointment("8")
    message = str(caught.value)
    assert "date" in message
    assert "transcripts.0.transcript_start" in message
    assert "CANARY" not in message


async def test_iso_dates_and_missing_people_are_read(client: HealthieClient,
                                                     fake: FakeHealthieApi) -> None:  # fmt: skip
    """ISO 8601 dates parse; an appointment without people or transcripts is still valid."""
    fake.set_result("appointment", "5", {"id": 5, "date": "2026-03-02T14:30:00Z"})
    appointment = await client.appointment("5")
    assert appointment.starts_at == datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
    assert (appointment.patient_id, appointment.transcripts, appointment.scribe_note) == (
        None, (), None)


# -- webhooks -----------------------------------------------------------------------------------


async def test_webhooks_are_created_listed_rotated_and_deleted(
    client: HealthieClient, fake: FakeHealthieApi
) -> None:
    """createWebhook returns Healthie's secret; expireWebhookSignature a new one; delete works."""
    hooks = HealthieWebhooks(client)
    events = ("appointment.transcript_available", "appointment.recording_started")
    created = await hooks.create("https://hooks.example.org/webhooks/healthie", events, None)
    assert created.secret == fake.webhooks.secret(created.webhook_id)
    assert created.events == events
    listed = await hooks.list()
    assert [(w.webhook_id, w.url, w.enabled, w.secret) for w in listed] == [
        (created.webhook_id, "https://hooks.example.org/webhooks/healthie", True, None)]
    assert fake.webhooks.by_id[created.webhook_id].should_retry is True
    rotated = await hooks.rotate(created.webhook_id)
    assert rotated.secret
    assert rotated.secret != created.secret
    assert rotated.secret == fake.webhooks.secret(created.webhook_id)
    await hooks.delete(created.webhook_id)
    assert await hooks.list() == []


async def test_webhook_list_follows_pages(client: HealthieClient, fake: FakeHealthieApi) -> None:
    """More webhooks than one page: every node is listed once."""
    fake.webhooks.page_limit = 2
    hooks = HealthieWebhooks(client)
    for n in range(5):
        await hooks.create(f"https://hooks.example.org/{n}", ("appointment.created",), None)
    listed = await hooks.list()
    assert [w.url for w in listed] == [f"https://hooks.example.org/{n}" for n in range(5)]
    assert [r for r in fake.requests if r[0] == "webhooks"] == [("webhooks", None)] * 3


async def test_a_refused_mutation_names_the_fields_only(client: HealthieClient) -> None:
    """Healthie's ``messages`` become a permanent error naming the fields, not the text."""
    hooks = HealthieWebhooks(client)
    with pytest.raises(PermanentError, match=r"refused \(fields: url\)$"):
        await hooks.create(f"not-a-url-{CANARY}", ("appointment.created",), None)
    with pytest.raises(PermanentError, match=r"refused \(fields: id\)$"):
        await hooks.delete("424242")


async def test_no_transcript_link_reaches_the_standard_library_logs(
    fake: FakeHealthieApi, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With every stdlib logger at DEBUG, the composition root keeps httpx from logging URLs."""
    import logging

    from carehook.services import build_services
    from carehook.settings import Settings

    service_set = build_services(Settings(sources={"healthie": {
        "vendor": "healthie", "api_url": url, "api_key": KEY, "api_allow_private": True}}))
    caplog.set_level(logging.DEBUG)
    try:
        api = service_set.services.healthie["healthie"]
        await fetch_vtt(api, "700123")
    finally:
        await service_set.aclose()
    assert fake.downloads == [(fake.transcript_id("700123", "processed_recording"), 200)]
    for token in fake.issued_tokens:
        assert token not in caplog.text


async def test_an_oversized_transcript_file_is_refused_without_reading_it_all(
    monkeypatch: pytest.MonkeyPatch, client: HealthieClient
) -> None:
    """A file past the limit is a permanent error naming the size limit only."""
    import carehook.connectors.healthie as healthie_module

    appointment = await client.appointment("700123")
    monkeypatch.setattr(healthie_module, "MAX_TRANSCRIPT_BYTES", 100)
    with pytest.raises(PermanentError, match=r"file: larger than 100 bytes$"):
        await client.transcript_file(appointment.transcripts[0])
