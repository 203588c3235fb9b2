"""Care-team workflows end to end: signed webhooks → a real gateway (ingress + worker) → real
receivers on 127.0.0.1, with PHI canaries planted in the payloads.

Receivers: an ``aiosmtpd`` SMTP server (the ``requester`` channel's email), a JSON receiver
standing in for Slack (Apprise ``json://`` renamed to Slack's ``{"text": ...}``: the ``clinical``,
``ops`` and ``requester`` push targets), and a Starlette webhook receiver verifying every
forwarded or delivered request with the ``standardwebhooks`` package, each destination with its
own secret (``team``, the forward route's destination, answers 503 once: per-destination retry).

One gateway run (module scope) sends every event type of the care workflows, some of them three
times (the same delivery), some out of order; the tests then look at what each receiver got,
the review queue, the timelines, the attempts and the captured logs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from structlog.testing import capture_logs

from carehook.envelope import SignedRequest
from carehook.inbox.port import EventFilter
from carehook.sources import build_source
from carehook.vendors import builtin_vendors
from loopback import free_port, serve_app

from .conftest import SECRETS, Gateway, start_gateway

CANARY_NAME = "Jane Q Canary-Patient 7f3a"
CANARY_EMAIL = "canary.patient.7f3a@example.org"
CANARY_REPORT = "Ms Jane Canary-Patient 7f3a, DOB 1970-01-01: start lisinopril"
CANARIES = ("Canary-Patient", "canary.patient.7f3a", "lisinopril", "1970-01-01")
SLACK_ARGS = ":message=text&:title=&:version=&:attachments=&:type="
DESTINATIONS = ("requester", "cache", "knowledge-base", "team")
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def _secret(name: str) -> str:
    return "whsec_" + base64.b64encode(f"{name}-destination-secret".encode()).decode()


# -- receivers --------------------------------------------------------------------------------


@dataclass
class Mailbox:
    """An aiosmtpd handler keeping every message."""

    messages: list[bytes] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Keep the message."""
        self.messages.append(envelope.original_content or b"")
        return "250 Message accepted"


@dataclass
class Hooks:
    """Slack-style alert posts (by channel path) and Standard Webhooks deliveries (verified)."""

    alerts: list[tuple[str, str]] = field(default_factory=list)
    deliveries: list[tuple[str, str, bool, dict[str, Any]]] = field(default_factory=list)
    fail_once: set[str] = field(default_factory=lambda: {"team"})

    async def alert(self, request: Request) -> Response:
        """Record a Slack-style {"text": ...} alert."""
        self.alerts.append((request.path_params["channel"], (await request.json())["text"]))
        return JSONResponse({"ok": True})

    async def webhook(self, request: Request) -> Response:
        """Verify with the destination's secret; record; answer 503 once where scripted."""
        name, body = request.path_params["name"], await request.body()
        try:
            Webhook(_secret(name)).verify(body, dict(request.headers))
            verified = True
        except Exception:
            verified = False
        doc = json.loads(body)
        self.deliveries.append((name, request.headers["webhook-id"], verified, doc))
        if name in self.fail_once:
            self.fail_once.discard(name)
            return Response(status_code=503)
        return JSONResponse({"ok": True}) if verified else Response(status_code=401)

    def app(self) -> Starlette:
        """/alert/<channel> and /hook/<destination>."""
        return Starlette(routes=[Route("/alert/{channel}", self.alert, methods=["POST"]),
                                 Route("/hook/{name}", self.webhook, methods=["POST"])])


def config_toml(path: Path, hooks_url: str, smtp_port: int) -> Path:
    """One source per vendor, channels, destinations, a forward route, a fast worker."""
    host = hooks_url.removeprefix("http://")
    lines = ['data_dir = "."', 'log_level = "debug"',
             f'storage = {{ url = "sqlite:///{path.parent / "carehook.db"}" }}',
             'public_url = "https://carehook.example"',
             "[worker]", "poll_seconds = 0.1", "concurrency = 4"]
    options = {"abridge": ["quality_threshold = 0.7"],
               "openevidence": ["retry_base_seconds = 0.1", "retry_cap_seconds = 5"]}
    for vendor, secret in SECRETS.items():
        lines += [f"[sources.{vendor}]", f'vendor = "{vendor}"', f'secrets = ["{secret}"]',
                  *options.get(vendor, [])]
    mail = f"mailto://127.0.0.1:{smtp_port}?from=carehook@example.org&to=requester@example.org"
    lines += ["[notifications]", "allow_private = true"]  # the receivers are on loopback
    lines += ["[channels]"] + [f'{ch} = ["json://{host}/alert/{ch}?{SLACK_ARGS}"]'
                               for ch in ("clinical", "ops")]
    lines += [f'requester = ["json://{host}/alert/requester?{SLACK_ARGS}", "{mail}"]']
    for name in DESTINATIONS:
        lines += [f'[destinations.{name}]', 'type = "webhook"',
                  f'url = "{hooks_url}/hook/{name}"', f'secret = "{_secret(name)}"',
                  "allow_private = true"]
    lines += ["[[routes]]", 'source = "openevidence"', 'events = "deepconsult.*"', 'to = "team"']
    path.write_text("\n".join(lines) + "\n")
    return path


# -- sending ----------------------------------------------------------------------------------


@dataclass
class Sender:
    """Posts signed payloads; remembers each distinct body (one event each)."""

    gw: Gateway
    bodies: set[tuple[str, bytes]] = field(default_factory=set)

    def post(self, source: str, payload: dict[str, Any], times: int = 1) -> None:
        """POST the same delivery ``times`` times (freshly signed each time)."""
        src = build_source(source, self.gw.settings.sources[source], builtin_vendors())
        body = json.dumps(payload).encode()
        self.bodies.add((source, body))
        for _ in range(times):
            headers = {"content-type": "application/json"}
            headers.update(src.scheme.sign(SignedRequest("POST", src.public_path, "", headers,
                                                         body), src.secrets[0], time.time()))
            response = self.gw.post(source, body, headers)
            assert response.status_code == 200, response.text


def _at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def _oe(event_type: str, **data: Any) -> dict[str, Any]:
    return {"event": event_type, "data": data}


def _ev(event_type: str, event_id: str, **data: Any) -> dict[str, Any]:
    return {"id": event_id, "type": event_type, "data": data}


def _healthie(kind: str, appointment: int, **extra: Any) -> dict[str, Any]:
    return {"resource_id": appointment, "resource_id_type": "Appointment",
            "event_type": f"appointment.{kind}", **extra}  # fmt: skip


def send_abridge_and_nabla(s: Sender) -> None:
    """session.failed x3, a low score x3, a passing score; both Nabla failures."""
    s.post("abridge", {"event_id": "ab_fail_1", "type": "encounter.session.failed",
                       "timestamp": _at(0), "data": {"session_id": "ses_f1",
                                                     "status": "audio_unintelligible"}}, 3)
    s.post("abridge", {"event_id": "ab_q_low", "type": "quality.alert", "timestamp": _at(0),
                       "data": {"session_id": "ses_q1", "note_id": "n1",
                                "quality_score": 0.41}}, 3)
    s.post("abridge", {"event_id": "ab_q_ok", "type": "quality.alert", "timestamp": _at(0),
                       "data": {"session_id": "ses_q2", "quality_score": 0.93}})
    for kind in ("generate_note_async", "transcribe_async"):
        s.post("nabla", {"id": f"nb_{kind}", "created_at": _at(0), "type": f"{kind}.failed",
                         "data": {"id": f"job_{kind}", "external_id": "enc-1", "status": "FAILED",
                                  "payload": {"error": {"code": "E_INPUT", "message":
                                                        f"audio of {CANARY_NAME}"}}}})


def send_deepconsult(s: Sender) -> None:
    """dc_1 in order with a late lower progress and a triple completion; dc_2 completed before
    its progress; dc_3 failed; rate-limit and key warnings that must de-duplicate."""
    s.post("openevidence", _oe("deepconsult.started", consultId="dc_1", estimatedTime=90))
    s.post("openevidence", _oe("deepconsult.progress", consultId="dc_1", progress=80))
    s.post("openevidence", _oe("deepconsult.progress", consultId="dc_1", progress=40))
    s.post("openevidence", _oe("deepconsult.completed", consultId="dc_1",
                               report=CANARY_REPORT), 3)
    s.post("openevidence", _oe("deepconsult.completed", consultId="dc_2", report=CANARY_REPORT))
    s.post("openevidence", _oe("deepconsult.progress", consultId="dc_2", progress=50))
    s.post("openevidence", _oe("deepconsult.failed", consultId="dc_3", retryable=True,
                               error=f"timeout for {CANARY_NAME}"))
    s.post("openevidence", _oe("rate_limit.warning", remaining=100, limit=1000), 3)
    s.post("openevidence", _oe("rate_limit.warning", remaining=90, limit=1000))
    expires = (datetime.now(UTC) + timedelta(days=10)).isoformat()
    s.post("openevidence", _oe("api_key.expiring", keyId="key_1", expiresAt=expires), 3)
    s.post("openevidence", {**_oe("api_key.expiring", keyId="key_1", expiresAt=expires), "n": 2})


def send_evidence(s: Sender) -> None:
    """Queries, revisions (a late older one), a citation's lifecycle, a flag raised twice."""
    s.post("openevidence", _ev("query.completed", "oe_q1", query_id="q_1", evidence_count=12,
                               confidence=0.87), 3)
    s.post("openevidence", _ev("query.failed", "oe_q2", query_id="q_2",
                               error_code="UPSTREAM_TIMEOUT", retry_after=1))
    s.post("openevidence", _ev("evidence.updated", "oe_e5", topic_id="t_1", revision=5))
    s.post("openevidence", _ev("evidence.updated", "oe_e3", topic_id="t_1", revision=3))
    s.post("openevidence", _ev("citation.added", "oe_c1", citation_id="c_1", pubmed_id="301"))
    s.post("openevidence", _ev("citation.retracted", "oe_c2", citation_id="c_1", pubmed_id="301"))
    for n in (1, 2):
        s.post("openevidence", _ev("review.flagged", f"oe_r{n}", review_id="rev_1",
                                   flag_reason=f"contradicts guideline for {CANARY_NAME}",
                                   severity="high"), 3)


def send_healthie(s: Sender) -> None:
    """Appointment 42 out of order and failing; 43 ending with a transcript; attendance."""
    s.post("healthie", _healthie("recording_stopped", 42, event_ts=_at(10)))
    s.post("healthie", _healthie("recording_started", 42, event_ts=_at(0)))
    s.post("healthie", _healthie("recording_completed", 42, event_ts=_at(11)))
    s.post("healthie", _healthie("transcript_started", 42, event_ts=_at(12)))
    s.post("healthie", _healthie("transcript_failed", 42, event_ts=_at(15)), 3)
    s.post("healthie", _healthie("recording_started", 43, event_ts=_at(0)))
    s.post("healthie", _healthie("recording_stopped", 43, event_ts=_at(20)))
    s.post("healthie", _healthie("transcript_available", 43, event_ts=_at(50)))
    who = {"user_name": CANARY_NAME, "user_email": CANARY_EMAIL, "host_user_id": "9"}
    s.post("healthie", _healthie("participant_joined", 42, event_ts=_at(1), **who), 3)
    s.post("healthie", _healthie("participant_left", 42, event_ts=_at(9), **who))


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """Everything the tests look at, gathered once."""

    hooks: Hooks
    mailbox: Mailbox
    events: list[Any]
    steps: dict[int, list[Any]]
    attempts: dict[int, list[Any]]
    reviews: list[Any]
    timelines: dict[str, list[Any]]
    states: dict[str, str | None]
    logs: list[dict[str, Any]]

    def alerts(self, channel: str, event_type: str | None = None) -> list[str]:
        """Alert texts posted to ``channel`` (about ``event_type``)."""
        return [text for ch, text in self.hooks.alerts if ch == channel
                and (event_type is None or f"event type: {event_type}\n" in text + "\n")]

    def delivered(self, name: str) -> list[tuple[str, bool, dict[str, Any]]]:
        """(webhook-id, verified, body) of each request destination ``name`` answered 2xx or
        not (every request, in order)."""
        return [(mid, ok, doc) for n, mid, ok, doc in self.hooks.deliveries if n == name]


def settle(gw: Gateway, count: int) -> list[Any]:
    """Wait until ``count`` events exist and none is still to run."""
    deadline = time.monotonic() + 90
    while True:
        events = asyncio.run(_read(gw, lambda st: st.list_events(EventFilter(limit=1000))))
        busy = [e for e in events if e.status in ("pending", "processing", "retrying")]
        if len(events) >= count and not busy:
            return list(events)
        assert time.monotonic() < deadline, [(e.type, e.status) for e in busy]
        time.sleep(0.05)


async def _read(gw: Gateway, work: Any) -> Any:
    store: Any = gw.store()
    await store.open()
    try:
        return await work(store)
    finally:
        await store.close()


async def _gather(store: Any, events: list[Any]) -> dict[str, Any]:
    subjects = {e.subject for e in events}
    return {
        "steps": {e.id: await store.list_steps(e.id) for e in events},
        "attempts": {e.id: await store.list_attempts(e.id) for e in events},
        "reviews": await store.list_reviews(None),
        "timelines": {s: await store.timeline(s) for s in subjects},
        "states": {s: await store.subject_state(s) for s in subjects},
    }


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    """Start receivers and a gateway, send everything, wait, gather."""
    hooks, mailbox = Hooks(), Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        with serve_app(hooks.app()) as hooks_url:
            config = config_toml(tmp_path_factory.mktemp("care") / "carehook.toml", hooks_url,
                                 controller.port)  # fmt: skip
            running = start_gateway(config)
            gw = next(running)
            try:
                yield _run(gw, hooks, mailbox)
            finally:
                running.close()
    finally:
        controller.stop()


def _run(gw: Gateway, hooks: Hooks, mailbox: Mailbox) -> Outcome:
    sender = Sender(gw)
    with capture_logs() as logs:
        for send in (send_abridge_and_nabla, send_deepconsult, send_evidence, send_healthie):
            send(sender)
        events = settle(gw, len(sender.bodies))
    got = asyncio.run(_read(gw, lambda store: _gather(store, events)))
    return Outcome(hooks, mailbox, events, logs=list(logs), **got)


def _steps(o: Outcome, event_type: str, subject: str | None = None) -> list[dict[str, str]]:
    """Each event's {step: outcome} of ``event_type`` (and ``subject``), in receipt order."""
    found = sorted((e for e in o.events if e.type == event_type
                    and (subject is None or e.subject == subject)), key=lambda e: e.id)
    return [{s.name: s.outcome for s in o.steps[e.id]} for e in found]


# -- the tests --------------------------------------------------------------------------------


def test_every_event_reaches_done_and_duplicates_are_one_event(outcome: Outcome) -> None:
    """Every distinct delivery is one event and all of them finish `done`."""
    assert {e.status for e in outcome.events} == {"done"}
    assert len({(e.source, e.event_id) for e in outcome.events}) == len(outcome.events)


def test_abridge_failures_and_low_scores_alert_clinical_once(outcome: Outcome) -> None:
    """session.failed x3 → one high alert; low score x3 → one alert; passing score → none."""
    [failed] = outcome.alerts("clinical", "encounter.session.failed")
    assert "severity: high" in failed
    assert "link: https://carehook.example/dashboard/events/" in failed
    assert "session_id: ses_f1" in failed
    [low] = outcome.alerts("clinical", "quality.alert")
    assert "quality_score: 0.41" in low
    assert _steps(outcome, "quality.alert", "abridge:session:ses_q2") == [
        {"quality.assess": "ok", "alert.clinical": "skipped: score at or above threshold"}]


def test_a_low_quality_score_opens_one_review_item(outcome: Outcome) -> None:
    """One `abridge.quality` review (ids and scores in its summary), none for the good score."""
    [review] = [r for r in outcome.reviews if r.kind == "abridge.quality"]
    assert (review.subject, review.severity, review.status) == ("abridge:session:ses_q1", "high",
                                                                "open")
    assert "0.41 below threshold 0.70" in review.summary


def test_nabla_failures_alert_clinical_with_codes(outcome: Outcome) -> None:
    """Both Nabla *.failed types: a clinical alert with job id and error code each."""
    for kind in ("generate_note_async", "transcribe_async"):
        [text] = outcome.alerts("clinical", f"{kind}.failed")
        assert f"job_id: job_{kind}" in text
        assert "error_code: E_INPUT" in text


def test_the_consult_machine_ends_right_despite_late_and_repeated_events(
    outcome: Outcome,
) -> None:
    """dc_1: 80 then 40 (ignored) then completed; dc_2: progress after completion ignored."""
    dc1 = [(t.state, t.detail) for t in outcome.timelines["openevidence:consult:dc_1"]]
    assert [s for s, _ in dc1] == ["started", "progress", "progress", "completed"]
    assert dc1[2][1] == "late progress 40% ignored: at 80%"
    assert outcome.states["openevidence:consult:dc_1"] == "completed"
    assert outcome.states["openevidence:consult:dc_2"] == "completed"
    assert _steps(outcome, "deepconsult.progress", "openevidence:consult:dc_2")[0][
        "consult.track"].startswith("skipped: late progress 50%")


def test_completion_notifies_the_requester_by_push_and_email_once_per_consult(
    outcome: Outcome,
) -> None:
    """Two completed consults: two push alerts and two emails, each a link, never the report."""
    pushes = outcome.alerts("requester", "deepconsult.completed")
    assert sorted(re.findall(r"consult_id: (\w+)", "\n".join(pushes))) == ["dc_1", "dc_2"]
    assert len(outcome.mailbox.messages) == 2
    assert all(b"DeepConsult report ready" in m for m in outcome.mailbox.messages)


def test_a_failed_consult_alerts_ops_with_retryable(outcome: Outcome) -> None:
    """deepconsult.failed: one ops alert saying retryable true, without the error's text."""
    [text] = outcome.alerts("ops", "deepconsult.failed")
    assert "retryable: true" in text
    assert "consult_id: dc_3" in text


def test_rate_limit_and_key_warnings_alert_ops_once_per_window(outcome: Outcome) -> None:
    """rate_limit x3 + a milder one → one alert; api_key x3 + a repeat → one alert."""
    [rate] = outcome.alerts("ops", "rate_limit.warning")
    assert "remaining: 100" in rate
    [key] = outcome.alerts("ops", "api_key.expiring")
    assert "key_id: key_1" in key
    held = _steps(outcome, "rate_limit.warning")[1]["alert.ops"]
    assert held.startswith("skipped: alerted already on")


def test_query_results_and_retry_reach_the_requester_signed(outcome: Outcome) -> None:
    """query.completed x3 → one delivery; query.failed → ops alert, then a retry delivery."""
    got = outcome.delivered("requester")
    assert all(ok for _, ok, _ in got)
    assert [(d["type"], d["action"]) for _, _, d in got] == [
        ("query.completed", "deliver_results"), ("query.failed", "retry")]
    assert got[0][0] == "openevidence:oe_q1:requester"
    [alert] = outcome.alerts("ops", "query.failed")
    assert "error_code: UPSTREAM_TIMEOUT" in alert
    [failed] = [e for e in outcome.events if e.type == "query.failed"]
    # the wait for retry_after is a deferral (no attempt used, no failure), then the delivery
    assert [a.outcome for a in outcome.attempts[failed.id]] == ["deferred", "done"]


def test_the_cache_gets_the_newest_revision_only(outcome: Outcome) -> None:
    """evidence.updated 5 then 3: the cache is refreshed once, for revision 5."""
    got = outcome.delivered("cache")
    assert [(ok, d["action"], d["data"]["data"]["revision"]) for _, ok, d in got] == [
        (True, "refresh", 5)]
    assert _steps(outcome, "evidence.updated")[1]["cache.refresh"].startswith(
        "skipped: revision 3 ignored")


def test_citations_are_indexed_then_withdrawn(outcome: Outcome) -> None:
    """citation.added → index, citation.retracted → withdraw, at the knowledge base."""
    got = outcome.delivered("knowledge-base")
    assert [(ok, d["action"], d["data"]["data"]["citation_id"]) for _, ok, d in got] == [
        (True, "index", "c_1"), (True, "withdraw", "c_1")]


def test_a_flag_raised_twice_is_one_review_and_one_alert(outcome: Outcome) -> None:
    """review.flagged twice (each delivered 3x) within the cooldown: one review, one alert."""
    [review] = [r for r in outcome.reviews if r.kind == "openevidence.review"]
    assert (review.severity, review.dedup_key) == ("high", "openevidence:review:rev_1")
    assert len(outcome.alerts("clinical", "review.flagged")) == 1
    assert _steps(outcome, "review.flagged")[1]["review.open"] == "skipped: cooldown"


def test_deepconsult_events_are_forwarded_signed_with_per_destination_retry(
    outcome: Outcome,
) -> None:
    """The `deepconsult.*` route: each event arrives verified under a stable webhook-id; the
    first refusal (503) is retried with the same id, the other destinations untouched."""
    got = outcome.delivered("team")
    assert all(ok for _, ok, _ in got)
    consult_events = [e for e in outcome.events if e.type.startswith("deepconsult.")]
    ids = [mid for mid, _, _ in got]
    assert ids[0] == ids[1]
    assert set(ids) == {f"openevidence:{e.event_id}:team" for e in consult_events}
    body = got[1][2]
    assert set(body) == {"id", "source", "vendor", "type", "subject", "occurred_at",
                         "received_at", "data"}
    [first] = [e for e in consult_events if f"openevidence:{e.event_id}:team" == ids[0]]
    assert [a.outcome for a in outcome.attempts[first.id]] == ["retrying", "done"]
    assert [s.name for s in outcome.steps[first.id]] == ["consult.track", "forward.team"]


def test_the_recording_timeline_tolerates_arrival_order(outcome: Outcome) -> None:
    """Appointment 42: stopped before started still gives 10 minutes; the failure alerts once."""
    timeline = outcome.timelines["healthie:appointment:42"]
    lifecycle = [t for t in timeline if not t.type.startswith("appointment.participant")]
    assert [t.state for t in lifecycle] == ["processing", "processing", "processing",
                                            "transcribing", "transcript_failed"]
    assert "recording 10m00s" in lifecycle[1].detail
    assert outcome.states["healthie:appointment:42"] == "transcript_failed"
    [alert] = outcome.alerts("clinical", "appointment.transcript_failed")
    assert "appointment_id: 42" in alert


def test_transcript_available_completes_the_lifecycle(outcome: Outcome) -> None:
    """Appointment 43: the transcript workflow records `complete` with 30 minutes' processing."""
    states = [(t.state, t.detail) for t in outcome.timelines["healthie:appointment:43"]]
    assert ("complete", "transcript_available; recording 20m00s; processing 30m00s") in states


def test_attendance_is_counted_without_names(outcome: Outcome) -> None:
    """participant_joined x3 then left: one join, one leave, counts only in the timeline."""
    notes = [t.detail for t in outcome.timelines["healthie:appointment:42"]
             if t.type.startswith("appointment.participant")]
    assert notes == ["participant 1 joined; 1 present", "participant 1 left; 0 present"]


def test_no_canary_reaches_alerts_reviews_steps_timelines_errors_or_logs(
    outcome: Outcome,
) -> None:
    """Report text, names, emails and error messages stay in the encrypted payload and data."""
    visible = [
        json.dumps(outcome.hooks.alerts),
        b"".join(outcome.mailbox.messages).decode(errors="replace"),
        repr(outcome.reviews),
        repr(outcome.steps),
        repr(outcome.timelines),
        repr(outcome.attempts),
        json.dumps(outcome.logs, default=str),
    ]
    assert outcome.logs
    for canary in CANARIES:
        for text in visible:
            assert canary not in text
