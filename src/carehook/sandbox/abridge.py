"""A fake Abridge REST API, serving the shape :mod:`carehook.connectors.abridge` documents.

It answers for ANY session, note and provider id (``carehook simulate`` sends random-looking
ones) with fictional but clinically realistic content, deterministic per id: the id's SHA-256
picks one of a few primary-care visits and fills in age, duration and vital signs. The note of
session ``ses_X`` is ``note_X`` and the other way round, so both lookups agree.

Versions: a session's note is version 1, ``"status": "draft"``, until :meth:`FakeAbridgeApi.
set_version` gives it a version ``n >= 2``: then it is ``"final"`` and its Assessment and Plan
ends with the clinician's edit, marked ``(revision n)``. That is what a workflow fetches after
``encounter.note.reviewed``.

Requests must carry ``Authorization: Bearer <token>`` (else 401) and, when the fake has an
organisation, ``X-Org-Id: <org_id>`` (else 403). Webhook registration (the brief's ``POST
{base}/webhooks``, plus list and delete) is :attr:`FakeAbridgeApi.webhooks`
(:mod:`carehook.sandbox.rest_webhooks`). Test hooks: :meth:`~FakeAbridgeApi.
fail_next` (the next requests answer an error status, with ``Retry-After`` if asked),
:meth:`~FakeAbridgeApi.set_response` (serve a given body for one path, e.g. a malformed note
planted with a canary), and :attr:`~FakeAbridgeApi.requests` (every ``(method, path)`` seen).
"""

from __future__ import annotations

import hashlib
import hmac
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from carehook.sandbox.rest_webhooks import FakeWebhookCollection


@dataclass(frozen=True, slots=True)
class _Visit:
    """One kind of visit: note sections, the patient summary and the reviewer's edit."""

    title: str
    complaint: str
    hpi: str
    ros: str
    exam: str
    plan: str
    summary: str
    edit: str


_VISITS = (
    _Visit(
        "Hypertension follow-up",
        "Follow-up of high blood pressure; home readings running high.",
        "{age}-year-old {sex} with essential hypertension on lisinopril 10 mg daily returns for "
        "follow-up. Home log over the past {days} days shows readings mostly in the 140s/90s. "
        "Occasional morning headaches. Denies chest pain, shortness of breath, vision changes or "
        "leg swelling. Takes medication daily; eating out more and exercising less since a job "
        "change.",
        "Negative for chest pain, palpitations, dyspnea, focal weakness and edema. Positive for "
        "intermittent morning headaches.",
        "BP {sbp}/{dbp} mmHg, repeat similar. HR {hr}, regular. Well appearing. Heart regular "
        "rate and rhythm, no murmur. Lungs clear. No peripheral edema.",
        "1. Essential hypertension, above goal. Increase lisinopril to 20 mg daily. Basic "
        "metabolic panel in 2 weeks (potassium, creatinine). Reviewed DASH diet, sodium under "
        "2 g/day, 150 minutes of moderate activity weekly. Home readings twice daily; bring the "
        "log. Return in 4 weeks.",
        "Your blood pressure is still higher than we want. We are increasing lisinopril from "
        "10 mg to 20 mg once a day. Please get a blood test in about 2 weeks. Keep checking your "
        "blood pressure twice a day, eat less salt and walk most days. Call us for chest pain, a "
        "severe headache or fainting. See you in 4 weeks.",
        "Clinician edit: labs moved to 1 week after the dose change; hold lisinopril and call "
        "if lightheaded.",
    ),
    _Visit(
        "Acute low back pain",
        "Low back pain for {days} days after lifting.",
        "{age}-year-old {sex} with right-sided low back pain that began {days} days ago after "
        "lifting boxes. Pain 6/10, worse with bending and sitting, no radiation below the knee. "
        "Ibuprofen helps partially. Denies numbness, weakness, bowel or bladder changes, fever, "
        "weight loss or history of cancer.",
        "Negative for fever, urinary symptoms, saddle anesthesia and leg weakness.",
        "BP {sbp}/{dbp}, HR {hr}. Tenderness and spasm of the right lumbar paraspinal muscles. "
        "Straight-leg raise negative bilaterally. Strength 5/5, reflexes symmetric, sensation "
        "intact. Gait normal.",
        "1. Acute mechanical low back pain without red flags; no imaging indicated. Ibuprofen "
        "600 mg three times daily with food for up to 7 days, heat, stay active. Home exercises "
        "given; physical therapy referral if not better in 2 weeks. Return for weakness, "
        "numbness or bladder changes.",
        "Your back pain comes from strained muscles and should improve over the next few weeks. "
        "Take ibuprofen 600 mg three times a day with food for up to a week, use heat and keep "
        "moving. Do the exercises on your sheet. Come back right away if your legs get weak or "
        "numb or you have trouble with your bladder or bowels.",
        "Clinician edit: added cyclobenzaprine 5 mg at bedtime as needed for spasm, up to 5 "
        "nights; no driving after a dose.",
    ),
    _Visit(
        "Type 2 diabetes follow-up",
        "Diabetes check and review of recent labs.",
        "{age}-year-old {sex} with type 2 diabetes on metformin 1000 mg twice daily. Hemoglobin "
        "A1c 7.9%, up from 7.2% six months ago. More evening snacking and less walking over the "
        "past {days} days. No hypoglycemia. Denies polyuria, blurred vision, foot numbness or "
        "sores. Last eye exam over a year ago.",
        "Negative for polyuria, polydipsia, vision changes, chest pain and foot ulcers.",
        "BP {sbp}/{dbp}, HR {hr}. Weight up 2 kg since last visit. Monofilament sensation intact "
        "in both feet; no ulcers or calluses. Pedal pulses 2+.",
        "1. Type 2 diabetes, A1c above the 7% goal. Continue metformin. Start empagliflozin "
        "10 mg daily; discussed hydration and genital yeast infections. Diabetes education "
        "referral. Urine albumin-to-creatinine ratio and lipid panel. Dilated eye exam referral. "
        "Repeat A1c in 3 months.",
        "Your diabetes numbers have gone up a little. Keep taking metformin. We are adding "
        "empagliflozin 10 mg once a day; drink plenty of water. A diabetes educator will help "
        "with meal planning. Please get the urine and cholesterol tests and book an eye exam. "
        "We will recheck your A1c in 3 months.",
        "Clinician edit: empagliflozin deferred until kidney function results are back; nurse "
        "to call with the plan.",
    ),
    _Visit(
        "Acute rhinosinusitis",
        "Nasal congestion and facial pressure for {days} days.",
        "{age}-year-old {sex} with {days} days of nasal congestion, discolored nasal discharge, "
        "cheek pressure and mild sore throat. Low-grade temperature at home on day 2, none "
        "since. No shortness of breath, ear pain or severe headache. Sick contacts at home.",
        "Negative for dyspnea, ear pain, eye swelling and rash.",
        "Temp 37.2 C, BP {sbp}/{dbp}, HR {hr}. Swollen nasal mucosa with clear discharge. Mild "
        "maxillary tenderness. Oropharynx mildly red, no exudate. Ears normal. Lungs clear.",
        "1. Acute rhinosinusitis, most likely viral; no antibiotic now. Saline irrigation twice "
        "daily, fluticasone nasal spray 2 sprays per nostril daily, acetaminophen or ibuprofen "
        "as needed. Return if symptoms pass 10 days, worsen after improving, or with high fever, "
        "eye swelling or severe headache.",
        "You most likely have a viral sinus infection, which antibiotics do not help. Rinse "
        "your nose with salt water twice a day, use the steroid nose spray daily and take "
        "acetaminophen or ibuprofen for pain. Call us if you are not better after 10 days or "
        "get a high fever, swelling around the eyes or a severe headache.",
        "Clinician edit: delayed amoxicillin-clavulanate prescription given, to start only if "
        "not improving by day 10 of illness.",
    ),
    _Visit(
        "Migraine follow-up",
        "Headaches more frequent over the last {days} days.",
        "{age}-year-old {sex} with migraine without aura, now about two a week over the past "
        "{days} days: throbbing, one-sided, with nausea and light sensitivity, 6 to 12 hours. "
        "Sumatriptan 50 mg helps if taken early. Ibuprofen on 3 to 4 other days a week. Poor "
        "sleep with work stress. No weakness, numbness or speech changes.",
        "Positive for nausea and photophobia with headaches. Negative for fever, weight loss, "
        "focal weakness and visual loss.",
        "BP {sbp}/{dbp}, HR {hr}. Alert and oriented. Cranial nerves II-XII intact. Strength and "
        "sensation normal and symmetric. Neck supple.",
        "1. Migraine without aura, increasing; possible medication overuse. Sumatriptan 50 mg at "
        "onset, may repeat once after 2 hours. Pain medicines on fewer than 10 days a month. "
        "Start propranolol 20 mg twice daily for prevention. Headache diary, sleep routine. "
        "Return in 6 weeks, sooner for new neurological symptoms.",
        "Your migraines have become more frequent. Take sumatriptan as soon as a migraine "
        "starts and use pain medicine on fewer than 10 days a month. We are starting a daily "
        "medicine, propranolol, to prevent headaches. Keep a headache diary. Seek care at once "
        "for weakness, numbness or trouble speaking.",
        "Clinician edit: preventive changed to amitriptyline 10 mg at bedtime given asthma "
        "history; propranolol removed.",
    ),
)

_GIVEN = ("Alex", "Priya", "Samuel", "Mei", "Jordan", "Fatima", "Daniel", "Elena", "Kwame",
          "Sofia", "Tomas", "Aisha")  # fmt: skip
_FAMILY = ("Okafor", "Lindqvist", "Ramirez", "Nakamura", "Abernathy", "Castellano", "Whitfield",
           "Moreau", "Haddad", "Ostrowski", "Delacroix", "Brennan")  # fmt: skip
_EPOCH = datetime(2026, 1, 5, 14, 0, tzinfo=UTC)


def _digest(kind: str, value: str) -> bytes:
    return hashlib.sha256(f"abridge:{kind}:{value}".encode()).digest()


def _num(digest: bytes, at: int, low: int, high: int) -> int:
    """A number in ``[low, high]`` from two bytes of ``digest``."""
    return low + int.from_bytes(digest[at : at + 2], "big") % (high - low + 1)


def npi_for(digest: bytes) -> str:
    """A 10-digit number with a valid NPI check digit (Luhn over ``80840`` + 9 digits)."""
    base = "1" + "".join(str(b % 10) for b in digest[20:28])
    total = 0
    for i, char in enumerate(reversed("80840" + base)):
        d = int(char) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return base + str((10 - total % 10) % 10)


def session_of_note(note_id: str) -> str:
    """The session whose note is ``note_id`` (``note_X`` -> ``ses_X``)."""
    return "ses_" + note_id.removeprefix("note_")


def note_of_session(session_id: str) -> str:
    """The note id of a session (``ses_X`` -> ``note_X``)."""
    return "note_" + session_id.removeprefix("ses_")


@dataclass(frozen=True, slots=True)
class _Failure:
    status: int
    retry_after: float | None
    body: str | None


class FakeAbridgeApi:
    """The fake Abridge API: an ASGI app (call it, or use :attr:`app`) with test hooks."""

    def __init__(self, token: str, org_id: str | None = None) -> None:
        self.token = token
        self.org_id = org_id
        #: every request seen, as ``(method, path under the fake's root)``
        self.requests: list[tuple[str, str]] = []
        self._failures: deque[_Failure] = deque()
        self._versions: dict[str, int] = {}
        self._responses: dict[str, tuple[int, Any]] = {}
        #: the registration API of the brief's curl: ``/webhooks`` (POST, GET, DELETE /{id})
        self.webhooks = FakeWebhookCollection("wh", self._refuse)
        self.app = Starlette(routes=[
            *self.webhooks.routes("/webhooks"),
            Route("/v1/sessions/{session_id}/note", self._session_note),
            Route("/v1/notes/{note_id}", self._note),
            Route("/v1/sessions/{session_id}/patient-summary", self._summary),
            Route("/v1/providers/{provider_id}", self._provider),
        ])  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection."""
        await self.app(scope, receive, send)

    # -- test hooks -----------------------------------------------------------------------------

    def fail_next(self, count: int = 1, status: int = 503, retry_after: float | None = None,
                  *, body: str | None = None) -> None:  # fmt: skip
        """Answer the next ``count`` requests with ``status`` (and ``Retry-After``, ``body``)."""
        self._failures.extend([_Failure(status, retry_after, body)] * count)

    def set_version(self, session_id: str, version: int) -> None:
        """Make the session's note version ``version`` (2 and up: final, with the edit)."""
        self._versions[session_id] = version

    def set_response(self, path: str, body: Any, status: int = 200) -> None:
        """Serve ``body`` (JSON) with ``status`` for ``path`` (e.g. ``/v1/providers/p1``)."""
        self._responses[path] = (status, body)

    # -- content --------------------------------------------------------------------------------

    def note_body(self, session_id: str) -> dict[str, Any]:
        """The current note of a session, as the API answers it."""
        d = _digest("session", session_id)
        visit = _VISITS[d[0] % len(_VISITS)]
        version = self._versions.get(session_id, 1)
        slots = {"age": _num(d, 1, 24, 78), "sex": "woman" if d[3] % 2 else "man",
                 "days": _num(d, 4, 3, 14), "sbp": _num(d, 6, 118, 158),
                 "dbp": _num(d, 8, 72, 96), "hr": _num(d, 10, 58, 94)}  # fmt: skip
        plan = visit.plan if version < 2 else f"{visit.plan}\n{visit.edit} (revision {version})"
        created = _EPOCH + timedelta(minutes=_num(d, 12, 0, 60 * 24 * 60))
        sections = [("CHIEF_COMPLAINT", "Chief Complaint", visit.complaint),
                    ("HPI", "History of Present Illness", visit.hpi),
                    ("ROS", "Review of Systems", visit.ros),
                    ("PHYSICAL_EXAM", "Physical Exam", visit.exam),
                    ("ASSESSMENT_AND_PLAN", "Assessment and Plan", plan)]  # fmt: skip
        return {
            "id": note_of_session(session_id), "session_id": session_id,
            "status": "final" if version >= 2 else "draft", "version": version,
            "title": f"Progress note: {visit.title}", "locale": "en-US",
            "created_at": created.isoformat().replace("+00:00", "Z"),
            "sections": [{"key": k, "title": t, "text": x.format(**slots)}
                         for k, t, x in sections],
            "ehr": _ehr(d),
        }  # fmt: skip

    def summary_body(self, session_id: str) -> dict[str, Any]:
        """The patient summary of a session, as the API answers it."""
        d = _digest("session", session_id)
        visit = _VISITS[d[0] % len(_VISITS)]
        return {"id": "sum_" + session_id.removeprefix("ses_"), "session_id": session_id,
                "text": visit.summary, "language": "en",
                "ehr": {"patient_id": _ehr(d)["patient_id"]}}  # fmt: skip

    def provider_body(self, provider_id: str) -> dict[str, Any]:
        """A clinician on the roster, as the API answers it."""
        d = _digest("provider", provider_id)
        given = [_GIVEN[d[0] % len(_GIVEN)]] + ([_GIVEN[d[1] % len(_GIVEN)]] if d[2] % 3 == 0
                                                else [])  # fmt: skip
        family = _FAMILY[d[3] % len(_FAMILY)]
        return {"id": provider_id, "family_name": family, "given_names": given,
                "npi": npi_for(d), "email": f"{given[0]}.{family}@clinic.example".lower(),
                "credentials": "MD" if d[4] % 2 else "NP", "status": "active"}  # fmt: skip

    # -- endpoints ------------------------------------------------------------------------------

    async def _session_note(self, request: Request) -> Response:
        return self._answer(request, lambda: self.note_body(request.path_params["session_id"]))

    async def _note(self, request: Request) -> Response:
        session = session_of_note(request.path_params["note_id"])
        return self._answer(request, lambda: self.note_body(session))

    async def _summary(self, request: Request) -> Response:
        return self._answer(request, lambda: self.summary_body(request.path_params["session_id"]))

    async def _provider(self, request: Request) -> Response:
        return self._answer(request,
                            lambda: self.provider_body(request.path_params["provider_id"]))

    def _answer(self, request: Request, build: Callable[[], dict[str, Any]]) -> Response:
        """Record, inject a failure, check credentials, then serve a planted or built body."""
        path = _route_path(request.scope)
        self.requests.append((request.method, path))
        if self._failures:
            return _failure(self._failures.popleft())
        refused = self._refuse(request)
        if refused is not None:
            return refused
        if path in self._responses:
            status, body = self._responses[path]
            return JSONResponse(body, status)
        return JSONResponse(build())

    def _refuse(self, request: Request) -> Response | None:
        auth = request.headers.get("authorization", "")
        if not hmac.compare_digest(auth.encode(), f"Bearer {self.token}".encode()):
            return JSONResponse({"error": "unauthorized"}, 401,
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        org = request.headers.get("x-org-id", "")
        if self.org_id is not None and org != self.org_id:
            return JSONResponse({"error": "forbidden", "detail": "unknown organisation"}, 403)
        return None


def _ehr(digest: bytes) -> dict[str, str | None]:
    return {"patient_id": f"sandbox-patient-{digest[16:20].hex()}",
            "encounter_id": f"sandbox-encounter-{digest[12:16].hex()}",
            "practitioner_id": f"sandbox-practitioner-{digest[20:22].hex()}"}  # fmt: skip


def _failure(failure: _Failure) -> Response:
    headers = {} if failure.retry_after is None else {"Retry-After": f"{failure.retry_after:g}"}
    if failure.body is not None:
        return Response(failure.body, failure.status, headers=headers, media_type="text/plain")
    return JSONResponse({"error": "injected failure"}, failure.status, headers=headers)


def _route_path(scope: Scope) -> str:
    """The request path below the fake's mount point."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path
