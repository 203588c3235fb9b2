"""Notes into the EHR, end to end: signed webhook → real gateway (ingress + worker) → Abridge /
Healthie fakes and the FHIR test server of ``carehook sandbox``, all on 127.0.0.1.

Every FHIR resource the tests look at is validated again with ``fhir.resources``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from structlog.testing import capture_logs

from carehook.bootstrap import build_app, build_components, server_config
from carehook.connectors.fhir.keys import KeyStore
from carehook.connectors.fhir.mapping import LOINC_SECTIONS, parse_transcript_lines, validate
from carehook.inbox.port import EventFilter
from carehook.sandbox.app import Sandbox, build_sandbox
from carehook.settings import load_settings
from carehook.sources import build_source
from carehook.testing import signed_for
from carehook.vendors import builtin_vendors
from loopback import free_port, serve_app, serve_config

from .conftest import SECRETS, Gateway, start_gateway

PORTAL_SECRET = "whsec_cG9ydGFsLXNlY3JldC1mb3ItdGVzdHM="
CANARY = "CANARY-PHI-Ada-Lovelace-19c2"
NOTE_SYSTEM = "urn:carehook:abridge:note"
SMART_CLIENT = "carehook-sandbox-client"
#: the kinds of FHIR server: HAPI-like (conditional create, bearer token) and Epic-like (no
#: conditional create, SMART Backend Services with an RS384 or an ES384 key)
MODES = ["conditional", "epic-rs384", "epic-es384"]


@dataclass
class Env:
    """A gateway wired to a sandbox (and a portal receiver) on loopback."""

    gw: Gateway
    sandbox: Sandbox
    portal: list[tuple[dict[str, str], bytes]]

    def send(self, source: str, event_type: str, seq: int = 1,
             edit: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """POST one signed sample event of ``source``; returns its payload."""
        src = build_source(source, self.gw.settings.sources[source], builtin_vendors())
        payload = src.vendor.sample(event_type, datetime.now(UTC), seq)
        if edit is not None:
            edit(payload)
        self.post(source, payload)
        return payload

    def post(self, source: str, payload: dict[str, Any]) -> None:
        """POST ``payload`` signed for ``source``; it must be accepted."""
        src = build_source(source, self.gw.settings.sources[source], builtin_vendors())
        signed = signed_for(src, payload)
        response = self.gw.post(source, signed.body, signed.headers)
        assert response.status_code == 200, response.text

    def settle(self, count: int) -> list[Any]:
        """Wait until ``count`` events exist and none is pending, processing or retrying."""
        deadline = time.monotonic() + 60
        while True:
            events = asyncio.run(_events(self.gw))
            busy = [e for e in events if e.status in ("pending", "processing", "retrying")]
            if len(events) >= count and not busy:
                return events
            assert time.monotonic() < deadline, [(e.type, e.status) for e in events]
            time.sleep(0.05)

    def await_capabilities(self) -> None:
        """Wait until the worker has read the FHIR server's CapabilityStatement at its start."""
        deadline = time.monotonic() + 30
        while ("GET", "/metadata") not in self.sandbox.fhir.requests:
            assert time.monotonic() < deadline, "the worker never read /metadata"
            time.sleep(0.02)

    def resources(self, type_: str) -> list[dict[str, Any]]:
        """The FHIR test server's resources of a type, each validated again."""
        found = self.sandbox.fhir.resources(type_)
        for resource in found:
            validate(resource)
        return found


async def _events(gw: Gateway) -> list[Any]:
    store = gw.store()
    await store.open()
    try:
        return await store.list_events(EventFilter(limit=1000))
    finally:
        await store.close()


async def _details(gw: Gateway) -> dict[str, Any]:
    """Every event's steps and attempts, and every subject's timeline, by event pk."""
    store: Any = gw.store()
    await store.open()
    try:
        out: dict[str, Any] = {}
        for e in await store.list_events(EventFilter(limit=1000)):
            out[str(e.id)] = {
                "type": e.type, "status": e.status,
                "steps": [(s.name, s.outcome, s.detail) for s in await store.list_steps(e.id)],
                "attempts": len(await store.list_attempts(e.id)),
                "timeline": [(t.state, t.detail) for t in await store.timeline(e.subject)],
            }  # fmt: skip
        return out
    finally:
        await store.close()


def _config(path: Path, storage_url: str | None, sandbox_url: str, portal_url: str,
            mode: str = "conditional", gateway_url: str | None = None,
            worker: str = "") -> Path:  # fmt: skip
    lines = ['data_dir = "."', 'log_level = "debug"']
    if gateway_url:
        lines += [f'public_url = "{gateway_url}"']
    if storage_url:
        lines += ["[storage]", f'url = "{storage_url}"', "auto_migrate = true"]
    lines += ["[worker]", "poll_seconds = 0.05", worker]
    api = {
        "abridge": [f'api_url = "{sandbox_url}/abridge"', 'api_token = "sandbox-abridge-token"',
                    'org_id = "sandbox-org"'],
        "healthie": [f'api_url = "{sandbox_url}/healthie/graphql"',
                     'api_key = "sandbox-healthie-api-key"'],
    }  # fmt: skip
    for vendor, secret in SECRETS.items():
        lines += [f"[sources.{vendor}]", f'vendor = "{vendor}"', f'secrets = ["{secret}"]',
                  "retry_base_seconds = 0.05", "retry_cap_seconds = 0.2",
                  "api_allow_private = true", *api.get(vendor, [])]  # fmt: skip
    auth = ['token = "env:EHR_TOKEN"']
    if mode.startswith("epic"):  # SMART Backend Services, like Epic; the token URL discovered
        auth = ['auth = "smart-backend"', f'client_id = "{SMART_CLIENT}"',
                f'signing_alg = "{mode.split("-")[1].upper()}"',
                'scope = "system/DocumentReference.crus system/Practitioner.crus"']
    lines += ["[destinations.ehr]", 'type = "fhir"', f'url = "{sandbox_url}/fhir"',
              *auth, "allow_private = true",
              "[destinations.portal]", 'type = "webhook"', f'url = "{portal_url}"',
              f'secret = "{PORTAL_SECRET}"', "allow_private = true"]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def _portal(received: list[tuple[dict[str, str], bytes]]) -> Starlette:
    async def hook(request: Request) -> Response:
        received.append((dict(request.headers), await request.body()))
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/hooks/summary", hook, methods=["POST"])])


def _env(tmp_path: Path, storage_url: str | None, monkeypatch: pytest.MonkeyPatch,
         mode: str = "conditional", worker: str = "") -> Iterator[Env]:  # fmt: skip
    """``mode``: ``conditional`` (bearer token, If-None-Exist honoured) or ``epic-rs384`` /
    ``epic-es384`` (SMART Backend Services with that key; no conditional create)."""
    monkeypatch.setenv("EHR_TOKEN", "sandbox-fhir-token")
    sandbox = build_sandbox()
    received: list[tuple[dict[str, str], bytes]] = []
    port = free_port()
    gateway_url = f"http://127.0.0.1:{port}"
    if mode.startswith("epic"):
        sandbox.fhir.conditional_create = False
        sandbox.fhir.token = None  # only tokens from its token endpoint are accepted
        sandbox.fhir.register_client(SMART_CLIENT, f"{gateway_url}/.well-known/jwks.json")
        KeyStore(tmp_path / "keys").new("ehr", "RS384" if mode == "epic-rs384" else "ES384")
    with serve_app(sandbox.app) as base, serve_app(_portal(received)) as portal:
        config = _config(tmp_path / "carehook.toml", storage_url, base, f"{portal}/hooks/summary",
                         mode, gateway_url, worker)  # fmt: skip
        settings = load_settings(config)
        app = build_app(build_components(settings))
        with serve_config(server_config(app, "127.0.0.1", port)) as url:
            yield Env(Gateway(url, settings, config), sandbox, received)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """Gateway + sandbox on SQLite."""
    yield from _env(tmp_path, None, monkeypatch)


@pytest.fixture(params=MODES)
def env_any(tmp_path: Path, storage_url: str, monkeypatch: pytest.MonkeyPatch,
            request: pytest.FixtureRequest) -> Iterator[Env]:  # fmt: skip
    """Gateway + sandbox on each storage backend, against each kind of FHIR server."""
    yield from _env(tmp_path, storage_url, monkeypatch, request.param)


@pytest.fixture(params=MODES)
def env_modes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
              request: pytest.FixtureRequest) -> Iterator[Env]:  # fmt: skip
    """Gateway + sandbox on SQLite, against each kind of FHIR server."""
    yield from _env(tmp_path, None, monkeypatch, request.param)


def _docrefs(env: Env, system: str = NOTE_SYSTEM) -> list[dict[str, Any]]:
    return [r for r in env.resources("DocumentReference")
            if any(i.get("system") == system for i in r.get("identifier", []))]  # fmt: skip


def _text(resource: dict[str, Any]) -> str:
    """The text of the one attachment a DocumentReference has (what Epic and Oracle accept)."""
    [content] = resource["content"]
    assert content["attachment"]["contentType"] == "text/plain; charset=utf-8"
    return base64.b64decode(content["attachment"]["data"]).decode("utf-8")


def _items(resource: dict[str, Any]) -> list[tuple[str, str, int | None, int | None]]:
    """A transcript DocumentReference's items as (speaker, text, start_ms, end_ms)."""
    parsed = parse_transcript_lines(_text(resource))
    return [(i.speaker, i.text, i.start_ms, i.end_ms) for i in parsed]


# --- Abridge note lifecycle ------------------------------------------------------------------


def test_a_completed_session_delivered_five_times_and_replayed_twice_is_one_note(
    env_any: Env,
) -> None:
    """Five deliveries of one event and two replays leave one preliminary DocumentReference."""
    env = env_any
    payload = env.send("abridge", "encounter.session.completed", 7)
    for _ in range(4):
        env.post("abridge", payload)
    [event] = env.settle(1)
    assert event.status == "done"
    asyncio.run(_replay(env.gw, event.id))
    env.settle(1)
    asyncio.run(_replay(env.gw, event.id))
    env.settle(1)

    [doc] = _docrefs(env)
    assert doc["docStatus"] == "preliminary"
    assert doc["identifier"][0] == {"system": NOTE_SYSTEM, "value": "note_000007"}
    note = env.sandbox.abridge.note_body("ses_000007")
    assert doc["subject"]["reference"] == f"Patient/{note['ehr']['patient_id']}"
    assert doc["context"]["encounter"][0]["reference"] == f"Encounter/{note['ehr']['encounter_id']}"
    assert doc["author"][0]["reference"] == f"Practitioner/{note['ehr']['practitioner_id']}"
    assert note["sections"][0]["text"] in _text(doc)
    creates = [r for r in env.sandbox.fhir.requests if r == ("POST", "/DocumentReference")]
    assert len(creates) == 1  # replays re-run nothing: the finished step is kept


async def _replay(gw: Gateway, pk: int) -> None:
    from carehook.inbox.work import ReplayFilter

    store: Any = gw.store()
    await store.open()
    try:
        assert await store.replay(ReplayFilter(event_pks=(pk,)), "test") == 1
    finally:
        await store.close()


def test_reviewed_amends_signed_locks_and_a_later_review_is_refused(env_modes: Env) -> None:
    """completed → reviewed (amended, new text) → signed (final) → reviewed again: refused."""
    env = env_modes
    env.send("abridge", "encounter.session.completed", 3)
    env.settle(1)
    env.sandbox.abridge.set_version("ses_000003", 2)
    env.send("abridge", "encounter.note.reviewed", 3)
    env.settle(2)
    [doc] = _docrefs(env)
    assert doc["docStatus"] == "amended"
    assert "(revision 2)" in _text(doc)
    assert doc["meta"]["versionId"] == "2"

    env.send("abridge", "encounter.note.signed", 3)
    env.settle(3)
    env.sandbox.abridge.set_version("ses_000003", 3)
    env.send("abridge", "encounter.note.reviewed", 3, edit=lambda p: p.update(event_id="evt_x"))
    events = env.settle(4)
    assert [e.status for e in events] == ["done"] * 4

    [doc] = _docrefs(env)
    assert doc["docStatus"] == "final"
    assert "(revision 3)" not in _text(doc)
    details = asyncio.run(_details(env.gw))
    last = details[str(max(e.id for e in events))]
    assert last["steps"][0][:2] == ("ehr.note.amend", "refused: note signed")
    assert [s for s, _ in last["timeline"]] == ["note.preliminary", "note.amended",
                                                "note.signed", "note.edit_refused"]


def test_signed_before_completed_still_ends_with_a_final_note(env: Env) -> None:
    """Out of order: signed first writes the final note; completed afterwards changes nothing."""
    env.send("abridge", "encounter.note.signed", 4)
    env.settle(1)
    env.send("abridge", "encounter.session.completed", 4)
    env.send("abridge", "encounter.note.reviewed", 4)
    events = env.settle(3)
    assert [e.status for e in events] == ["done"] * 3
    [doc] = _docrefs(env)
    assert doc["docStatus"] == "final"
    details = asyncio.run(_details(env.gw))
    steps = [details[pk]["steps"][0][1] for pk in sorted(details, key=int)]
    assert steps == ["ok", "ok", "refused: note signed"]


def test_a_fhir_server_answering_503_three_times_then_201_ends_with_one_note(
    env_modes: Env,
) -> None:
    """Three 503s are retried; the fourth attempt creates the one resource."""
    env = env_modes
    env.await_capabilities()  # the worker reads /metadata at start: not one of the three
    env.sandbox.fhir.fail_next(3, status=503)
    env.send("abridge", "encounter.session.completed", 5)
    [event] = env.settle(1)
    assert event.status == "done"
    assert len(_docrefs(env)) == 1
    [detail] = asyncio.run(_details(env.gw)).values()
    assert detail["attempts"] == 4


def test_a_patient_the_ehr_does_not_know_is_left_out_visibly(env_modes: Env) -> None:
    """subject is dropped (not sent dangling) and the step says so; the encounter is kept."""
    env = env_modes
    note = env.sandbox.abridge.note_body("ses_000013")
    note["ehr"]["patient_id"] = "unknown-patient-1"
    env.sandbox.abridge.set_response("/v1/sessions/ses_000013/note", note)
    env.send("abridge", "encounter.session.completed", 13)
    [event] = env.settle(1)
    assert event.status == "done"
    [doc] = _docrefs(env)
    assert "subject" not in doc
    assert doc["context"]["encounter"][0]["reference"] == f"Encounter/{note['ehr']['encounter_id']}"
    [detail] = asyncio.run(_details(env.gw)).values()
    name, outcome, text = detail["steps"][0]
    assert (name, outcome) == ("ehr.note.create", "ok")
    assert "patient skipped: Patient/unknown-patient-1 not found in the EHR" in text
    assert ("GET", "/Patient/unknown-patient-1") in env.sandbox.fhir.requests


def test_patient_summary_is_pushed_to_the_portal_signed(env: Env) -> None:
    """The summary reaches the portal as a Standard Webhooks request that verifies."""
    env.send("abridge", "patient.summary.ready", 8)
    [event] = env.settle(1)
    assert event.status == "done"
    [(headers, body)] = env.portal
    Webhook(PORTAL_SECRET).verify(body, headers)
    sent = json.loads(body)
    summary = env.sandbox.abridge.summary_body("ses_000008")
    assert (sent["type"], sent["session_id"], sent["text"]) == (
        "patient.summary", "ses_000008", summary["text"])


def test_provider_enrolled_twice_upserts_one_practitioner(env: Env) -> None:
    """The roster has one Practitioner per provider identifier, updated on re-enrolment."""
    env.send("abridge", "provider.enrolled", 9)
    env.send("abridge", "provider.enrolled", 9, edit=lambda p: p.update(event_id="evt_again"))
    events = env.settle(2)
    assert [e.status for e in events] == ["done", "done"]
    [doc] = env.resources("Practitioner")
    ids = {i["system"]: i["value"] for i in doc["identifier"]}
    assert ids["urn:carehook:abridge:provider"] == "prov_0009"
    assert doc["meta"]["versionId"] == "2"


# --- Nabla and Healthie ----------------------------------------------------------------------


def test_a_nabla_note_becomes_a_document_and_a_loinc_coded_composition(env: Env) -> None:
    """Sections carry their LOINC codes; dot phrases are merged; external_id is kept."""
    payload = env.send("nabla", "generate_note_async.succeeded", 2)
    [event] = env.settle(1)
    assert event.status == "done"
    [doc] = _docrefs(env, "urn:carehook:nabla:note")
    [comp] = env.resources("Composition")
    job = payload["data"]
    assert doc["identifier"][0]["value"] == job["id"]
    codes = {s["title"]: s.get("code", {}).get("coding", [{}])[0].get("code")
             for s in comp["section"]}  # fmt: skip
    assert codes["Chief complaint"] == "10154-3" == LOINC_SECTIONS["CHIEF_COMPLAINT"][0]
    assert codes["Assessment & plan"] == "51847-2"
    assert codes["Appointments"] is None  # no true LOINC section code: left uncoded
    assert job["external_id"]
    assert {"system": "urn:carehook:nabla:external-id", "value": job["external_id"]} in (
        doc["identifier"])
    assert comp["identifier"]["value"] == job["id"]


def test_a_nabla_transcript_is_stored_and_filed_in_spoken_order(env: Env) -> None:
    """The transcript DocumentReference lists every item in order, with speaker and offsets."""
    payload = env.send("nabla", "transcribe_async.succeeded", 2)
    [event] = env.settle(1)
    assert event.status == "done"
    [doc] = _docrefs(env, "urn:carehook:nabla:transcript")
    raw = payload["data"]["payload"]["transcript"]
    assert _items(doc) == [((r.get("speaker_type") or r["speaker"]).upper(), r["text"],
                            r["start_offset_ms"], r["end_offset_ms"]) for r in raw]  # fmt: skip


def test_a_healthie_transcript_is_fetched_over_graphql_even_when_rate_limited(env: Env) -> None:
    """TOO_MANY_REQUESTS is retried; the transcript ends filed for the appointment."""
    env.sandbox.healthie.rate_limit_next(1)
    payload = env.send("healthie", "appointment.transcript_available", 6)
    [event] = env.settle(1)
    assert event.status == "done"
    [doc] = _docrefs(env, "urn:carehook:healthie:transcript")
    assert doc["subject"]["reference"].startswith("Patient/")
    details = next(iter(asyncio.run(_details(env.gw)).values()))
    assert details["attempts"] == 2
    assert payload["resource_id"]


def test_an_unknown_nabla_section_is_kept_uncoded_through_the_whole_note_path(env: Env) -> None:
    """Sections with keys carehook does not know (one without a title, one a dot phrase targets)
    are accepted, filed in the DocumentReference text and kept as uncoded Composition sections."""

    def add_sections(p: dict[str, Any]) -> None:
        inner = p["data"]["payload"]
        inner["note"]["sections"] += [
            {"key": "SLEEP_HYGIENE_COUNSELING", "title": "Sleep hygiene counseling",
             "text": "Discussed a fixed wake time."},
            {"key": "DIAGNOSTIC_TESTS_ORDERED", "text": "Fasting lipid panel."},
        ]
        inner["suggested_dot_phrases"].append({
            "dot_phrase": {"id": "dp_new", "trigger": ".stretch", "replacement": "Stretch."},
            "note_section": {"key": "EXERCISE_PRESCRIPTION"},
            "text_to_insert": "Daily hamstring stretches.",
        })  # fmt: skip

    env.send("nabla", "generate_note_async.succeeded", 4, edit=add_sections)
    [event] = env.settle(1)
    assert event.status == "done"
    [doc] = _docrefs(env, "urn:carehook:nabla:note")
    text = _text(doc)
    for title, body in [("Sleep hygiene counseling", "Discussed a fixed wake time."),
                        ("Diagnostic tests ordered", "Fasting lipid panel."),
                        ("Exercise prescription", "Daily hamstring stretches.")]:  # fmt: skip
        assert f"{title}\n{body}" in text
    [comp] = env.resources("Composition")
    sections = {s.get("title"): s for s in comp["section"]}
    for title in ("Sleep hygiene counseling", "Diagnostic tests ordered", "Exercise prescription"):
        assert "code" not in sections[title]
        assert "emptyReason" not in sections[title]
    assert "Fasting lipid panel." in sections["Diagnostic tests ordered"]["text"]["div"]
    assert sections["Chief complaint"]["code"]["coding"][0]["code"] == "10154-3"


def test_a_healthie_transcript_is_parsed_from_its_vtt_file_with_speakers(env_any: Env) -> None:
    """The filed transcript is the processed recording's VTT, items with roles and offsets."""
    from carehook.sandbox import _healthie_content as content

    env = env_any

    payload = env.send("healthie", "appointment.transcript_available", 12)
    [event] = env.settle(1)
    assert event.status == "done"
    appointment_id = str(payload["resource_id"])
    [doc] = _docrefs(env, "urn:carehook:healthie:transcript")
    tid = env.sandbox.healthie.transcript_id(appointment_id, "processed_recording")
    assert doc["identifier"][0]["value"] == tid
    assert _items(doc) == [tuple(t) for t in content.turns(appointment_id)]
    assert [status for _, status in env.sandbox.healthie.downloads] == [200]


def test_an_expired_transcript_link_is_refreshed_and_never_logged(env: Env) -> None:
    """The first link is already expired: the step queries again; no link reaches a log line,
    a step result or the database."""
    env.sandbox.healthie.expire_next_links(2)
    with capture_logs() as logs:
        payload = env.send("healthie", "appointment.transcript_available", 13)
        [event] = env.settle(1)
    assert event.status == "done"
    healthie = env.sandbox.healthie
    assert [status for _, status in healthie.downloads] == [403, 200]
    assert healthie.requests == [("appointment", str(payload["resource_id"]))] * 2
    tokens = healthie.issued_tokens
    assert len(tokens) == 4  # two links per answer, two answers
    blob = json.dumps(logs, default=str) + json.dumps(asyncio.run(_details(env.gw)))
    db = b"".join(p.read_bytes() for p in env.gw.config.parent.glob("carehook.db*"))
    for token in tokens:
        assert token not in blob
        assert token.encode() not in db


def test_without_an_ehr_destination_the_note_step_says_not_configured(
    tmp_path: Path,
) -> None:
    """No [destinations.ehr]: the event ends done and its step is visibly skipped."""
    path = tmp_path / "carehook.toml"
    lines = ['data_dir = "."', "[worker]", "poll_seconds = 0.05"]
    lines += ["[sources.nabla]", 'vendor = "nabla"', f'secrets = ["{SECRETS["nabla"]}"]']
    path.write_text("\n".join(lines) + "\n")
    for gw in start_gateway(path):
        env = Env(gw, build_sandbox(), [])
        env.send("nabla", "generate_note_async.succeeded", 1)
        [event] = env.settle(1)
        assert event.status == "done"
        [detail] = asyncio.run(_details(gw)).values()
        assert [s[:2] for s in detail["steps"]] == [
            ("ehr.note.document", "skipped: not configured"),
            ("ehr.note.composition", "skipped: not configured")]


def test_no_note_or_transcript_text_reaches_logs_or_step_results(env: Env) -> None:
    """A canary in a Nabla note, a transcript and an Abridge note is in no log or step result."""

    def plant(p: dict[str, Any]) -> None:
        inner = p["data"]["payload"]
        for section in inner.get("note", {}).get("sections", []):
            section["text"] = f"{CANARY} {section['text']}"
        for item in inner.get("transcript", []):
            item["text"] = CANARY

    note = env.sandbox.abridge.note_body("ses_000011")
    note["sections"][0]["text"] = CANARY
    env.sandbox.abridge.set_response("/v1/sessions/ses_000011/note", note)
    with capture_logs() as logs:
        env.send("nabla", "generate_note_async.succeeded", 11, edit=plant)
        env.send("nabla", "transcribe_async.succeeded", 11, edit=plant)
        env.send("abridge", "encounter.session.completed", 11)
        events = env.settle(3)
    assert [e.status for e in events] == ["done"] * 3
    assert any(CANARY in _text(d) for d in env.resources("DocumentReference"))  # it did flow
    blob = json.dumps(logs, default=str) + json.dumps(asyncio.run(_details(env.gw)))
    assert CANARY not in blob
    data = asyncio.run(_subject_data(env.gw, events))
    assert any(CANARY in json.dumps(d) for d in data)  # the transcript is kept ...
    db = b"".join(p.read_bytes() for p in env.gw.config.parent.glob("carehook.db*"))
    assert db
    assert CANARY.encode() not in db  # ... encrypted


async def _subject_data(gw: Gateway, events: list[Any]) -> list[dict[str, object]]:
    store: Any = gw.store()
    await store.open()
    try:
        return [await store.subject_data(e.subject) for e in events]
    finally:
        await store.close()


# --- a worker killed between the POST and the step's record ----------------------------------


def _worker(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``carehook worker`` in a subprocess, its output in ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen([str(Path(sys.executable).parent / "carehook"), "worker",
                                 "--config", str(config)], cwd=config.parent, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["conditional", "epic-es384"])
def test_a_worker_killed_between_the_post_and_its_record_still_files_one_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, storage_url: str
) -> None:
    """SIGKILL the moment the server stored the note (before it answers): the next worker
    finds it (If-None-Exist, or the ledger's intent and a search) and creates no second one.
    (Workers in separate processes, on SQLite and on PostgreSQL.)"""
    worker = "enabled = false\nlease_seconds = 1.0\n"
    procs: list[subprocess.Popen[bytes]] = []

    def kill(_: dict[str, Any]) -> None:
        if len(procs) == 1:
            os.kill(procs[0].pid, signal.SIGKILL)

    for env in _env(tmp_path, storage_url, monkeypatch, mode, worker):
        env.sandbox.fhir.on_create = kill
        procs.append(_worker(env.gw.config, tmp_path / "worker1.log"))
        try:
            env.send("abridge", "encounter.session.completed", 12)
            assert procs[0].wait(timeout=60) == -signal.SIGKILL
            [event] = asyncio.run(_events(env.gw))
            assert event.status == "processing"  # the step was never recorded
            procs.append(_worker(env.gw.config, tmp_path / "worker2.log"))
            [event] = env.settle(1)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
        assert event.status == "done"
        assert len(_docrefs(env)) == 1
        posts = [r for r in env.sandbox.fhir.requests if r == ("POST", "/DocumentReference")]
        if mode == "conditional":
            assert len(posts) == 2  # the second If-None-Exist found the first
        else:
            assert len(posts) == 1  # the search found it: no second POST at all
        [detail] = asyncio.run(_details(env.gw)).values()
        assert detail["steps"][0][:2] == ("ehr.note.create", "ok")
        assert "exists" in detail["steps"][0][2]


def test_a_healthie_scribe_note_is_filed_beside_the_transcript(env_any: Env) -> None:
    """The appointment's AI scribe note (one section per answered module) becomes a preliminary
    DocumentReference for the appointment's patient, identified by the note's id; an
    appointment without a scribe note still files its transcript, the note step skipped."""
    from carehook.sandbox import _healthie_content as content

    env = env_any
    payload = env.send("healthie", "appointment.transcript_available", 14)
    [event] = env.settle(1)
    assert event.status == "done"
    appointment_id = str(payload["resource_id"])
    note = content.scribe_note(appointment_id)
    [doc] = _docrefs(env, "urn:carehook:healthie:note")
    assert doc["identifier"][0]["value"] == note["id"]
    assert doc["docStatus"] == "preliminary"
    body = env.sandbox.healthie.appointment_body(appointment_id)
    assert doc["subject"]["reference"] == f"Patient/{body['user']['id']}"
    text = _text(doc)
    for answer in note["generated_form_answers"]:
        assert f"{answer['custom_module']['label']}\n{answer['displayed_answer']}" in text
    [detail] = asyncio.run(_details(env.gw)).values()
    assert [s[:2] for s in detail["steps"]][-1] == ("ehr.note", "ok")
    results = json.dumps(detail)  # step results and the timeline: ids and counts, no note text
    for answer in note["generated_form_answers"]:
        assert answer["displayed_answer"] not in results
    second = env.send("healthie", "appointment.transcript_available", 15,
                      edit=lambda p: env.sandbox.healthie.without_scribe_note(
                          str(p["resource_id"])))  # fmt: skip
    assert str(second["resource_id"]) != appointment_id
    events = env.settle(2)
    assert {e.status for e in events} == {"done"}
    assert len(_docrefs(env, "urn:carehook:healthie:note")) == 1
    assert len(_docrefs(env, "urn:carehook:healthie:transcript")) == 2
    details = asyncio.run(_details(env.gw))
    steps = details[max(details, key=int)]["steps"]
    assert [s[:2] for s in steps][-1] == ("ehr.note",
                                          "skipped: the appointment has no AI scribe note")
