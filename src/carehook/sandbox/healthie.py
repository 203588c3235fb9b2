"""A fake Healthie GraphQL API: ``appointment`` and the transcript query of the Healthie client.

Queries are read loosely, without a GraphQL library: the first root field with arguments
(``appointment(id: $id)`` or ``appointmentTranscript(appointment_id: $appointment_id)``; a
variable or an inline literal) decides the answer, and the whole object is returned whatever the
selection set asks (aliases, fragments and several root fields are not supported). The
transcript shape is carehook's assumption, defined in :mod:`carehook.connectors.healthie`; the
client and this fake agree on it, and both must be checked against Healthie's schema.

It answers for ANY appointment id with fictional, deterministic content seeded from the id: a
telehealth visit (``pm_status`` ``"Occurred"``) and its DOCTOR/PATIENT transcript with
millisecond offsets.

Headers, as Healthie requires them: ``Authorization: Basic <api key>`` and ``AuthorizationSource:
API`` (else HTTP 401 with a GraphQL ``UNAUTHENTICATED`` error) and ``Healthie-GraphQL-API-Version``
equal to the fake's version (else 400, ``UNSUPPORTED_API_VERSION``). Test hooks:
:meth:`~FakeHealthieApi.rate_limit_next` (GraphQL ``TOO_MANY_REQUESTS``), :meth:`~FakeHealthieApi.
error_next` (any GraphQL error code and message), :meth:`~FakeHealthieApi.fail_next` (an HTTP
status), :meth:`~FakeHealthieApi.hide` (answer ``null``), :meth:`~FakeHealthieApi.set_result`
(serve a given object) and :attr:`~FakeHealthieApi.requests` (``(root field, id)`` pairs).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

API_VERSION = "2026-01-01"
ROOT_FIELDS = ("appointment", "appointmentTranscript")

_CONVERSATIONS: tuple[tuple[tuple[str, str], ...], ...] = (
    (
        ("DOCTOR", "Hi, thanks for joining. How have things been since we increased the "
                   "sertraline to 100 milligrams?"),
        ("PATIENT", "Better, I think. The constant worrying is down, maybe a four out of ten "
                    "instead of a seven."),
        ("DOCTOR", "That's real progress. Any side effects, like nausea, trouble sleeping or "
                   "changes in appetite?"),
        ("PATIENT", "Some nausea the first week, that's gone. I still wake up around three most "
                    "nights."),
        ("DOCTOR", "How many nights a week, roughly?"),
        ("PATIENT", "Four or five. I end up on my phone until it's time to get up."),
        ("DOCTOR", "Let's keep the phone out of the bedroom, and if you're awake more than "
                   "twenty minutes, get up and do something quiet in dim light."),
        ("PATIENT", "Okay, I can try that."),
        ("DOCTOR", "Any thoughts of harming yourself since we last spoke?"),
        ("PATIENT", "No, nothing like that."),
        ("DOCTOR", "Good. We'll stay at 100 milligrams and start the sleep program we talked "
                   "about. Let's check in again in {weeks} weeks."),
        ("PATIENT", "Sounds good, thank you."),
    ),
    (
        ("DOCTOR", "Good morning. I have your lab results. Your TSH came back at 6.8, which is "
                   "higher than we want."),
        ("PATIENT", "That would explain it. I've been exhausted and cold all the time."),
        ("DOCTOR", "Are you taking the levothyroxine on an empty stomach, away from coffee?"),
        ("PATIENT", "Mostly. Sometimes I take it with breakfast when I'm rushing."),
        ("DOCTOR", "Taking it with food can lower how much you absorb. Try to take it with water "
                   "thirty minutes before eating."),
        ("PATIENT", "Okay. Do I need a higher dose?"),
        ("DOCTOR", "Yes, we'll go from 75 to 88 micrograms daily and recheck your TSH in six "
                   "weeks."),
        ("PATIENT", "Should I watch for anything with the new dose?"),
        ("DOCTOR", "Call us if you notice a racing heartbeat, shakiness or trouble sleeping."),
        ("PATIENT", "Will do. Thanks, doctor."),
    ),
    (
        ("DOCTOR", "How has your breathing been over the last {weeks} weeks?"),
        ("PATIENT", "Not great. I've needed the albuterol three or four times a week, and it "
                    "wakes me up at night sometimes."),
        ("DOCTOR", "How many nights a month would you say?"),
        ("PATIENT", "Maybe three or four. Mostly when it gets cold."),
        ("DOCTOR", "Any fever, chest pain, or coughing up colored mucus?"),
        ("PATIENT", "No, just the tight chest and wheezing."),
        ("DOCTOR", "That tells me your asthma isn't well controlled. I'd like to start a daily "
                   "inhaled steroid, budesonide-formoterol, two puffs twice a day."),
        ("PATIENT", "Every day, even when I feel fine?"),
        ("DOCTOR", "Yes, it prevents the flares. Rinse your mouth after each use. Keep the "
                   "albuterol for sudden symptoms."),
        ("PATIENT", "Got it."),
        ("DOCTOR", "If you need the rescue inhaler more than every four hours or your lips turn "
                   "blue, go to the emergency room."),
        ("PATIENT", "Understood. Thank you."),
    ),
    (
        ("DOCTOR", "Welcome back. Last time your A1c was 6.1, in the prediabetes range. How "
                   "have the changes been going?"),
        ("PATIENT", "I cut out soda and I'm walking after dinner most days."),
        ("DOCTOR", "That's great. About how long are the walks?"),
        ("PATIENT", "Twenty minutes, maybe five days a week."),
        ("DOCTOR", "Perfect. Let's look at breakfast. What does a usual morning look like?"),
        ("PATIENT", "Usually a bagel with cream cheese and orange juice."),
        ("DOCTOR", "Try swapping the juice for whole fruit and adding some protein, like eggs "
                   "or Greek yogurt. It keeps blood sugar steadier."),
        ("PATIENT", "I can do the yogurt."),
        ("DOCTOR", "We'll recheck your A1c in three months. Keep logging your meals in the app "
                   "and I'll review them before our next visit in {weeks} weeks."),
        ("PATIENT", "Great, see you then."),
    ),
)
_EST = timezone(timedelta(hours=-5))
_EPOCH = datetime(2026, 3, 2, 8, 0, tzinfo=_EST)


def _digest(appointment_id: str) -> bytes:
    return hashlib.sha256(f"healthie:appointment:{appointment_id}".encode()).digest()


def _num(digest: bytes, at: int, low: int, high: int) -> int:
    return low + int.from_bytes(digest[at : at + 2], "big") % (high - low + 1)


def _starts(digest: bytes) -> datetime:
    """When the appointment began: a half-hour slot in March or April 2026, US Eastern."""
    return _EPOCH + timedelta(days=digest[0] % 60, minutes=30 * (digest[1] % 18))


@dataclass(frozen=True, slots=True)
class _Failure:
    status: int
    retry_after: float | None


class FakeHealthieApi:
    """The fake Healthie GraphQL endpoint: an ASGI app on any path (POST), with test hooks."""

    def __init__(self, api_key: str, api_version: str = API_VERSION) -> None:
        self.api_key = api_key
        self.api_version = api_version
        #: every query seen, as ``(root field, appointment id)`` (``("?", None)`` if unreadable)
        self.requests: list[tuple[str, str | None]] = []
        self._failures: deque[_Failure] = deque()
        self._errors: deque[dict[str, Any]] = deque()
        self._hidden: set[str] = set()
        self._results: dict[tuple[str, str], Any] = {}
        self.app = Starlette(routes=[Route("/{path:path}", self._graphql, methods=["POST"])])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection."""
        await self.app(scope, receive, send)

    # -- test hooks -----------------------------------------------------------------------------

    def rate_limit_next(self, count: int = 1, retry_after: float | None = None) -> None:
        """Answer the next ``count`` queries with the ``TOO_MANY_REQUESTS`` GraphQL error."""
        extensions: dict[str, Any] = {"code": "TOO_MANY_REQUESTS"}
        if retry_after is not None:
            extensions["retry_after"] = retry_after
        self._errors.extend([{"message": "Too many requests, slow down", "extensions":
                              extensions}] * count)  # fmt: skip

    def error_next(self, code: str, message: str = "Something went wrong", count: int = 1) -> None:
        """Answer the next ``count`` queries with a GraphQL error (HTTP 200, ``data: null``)."""
        self._errors.extend([{"message": message, "extensions": {"code": code}}] * count)

    def fail_next(self, count: int = 1, status: int = 503, retry_after: float | None = None
                  ) -> None:  # fmt: skip
        """Answer the next ``count`` requests with an HTTP ``status`` (and ``Retry-After``)."""
        self._failures.extend([_Failure(status, retry_after)] * count)

    def hide(self, appointment_id: str) -> None:
        """Answer ``null`` for this appointment and its transcript (Healthie's "not found")."""
        self._hidden.add(appointment_id)

    def set_result(self, root_field: str, appointment_id: str, value: Any) -> None:
        """Serve ``value`` as ``data.<root_field>`` for this appointment."""
        self._results[(root_field, appointment_id)] = value

    # -- content --------------------------------------------------------------------------------

    def appointment_body(self, appointment_id: str) -> dict[str, Any]:
        """The appointment, as ``data.appointment``."""
        d = _digest(appointment_id)
        return {"id": appointment_id, "date": _starts(d).strftime("%Y-%m-%d %H:%M:%S %z"),
                "pm_status": "Occurred", "contact_type": "Secure Videochat", "length": 30,
                "user": {"id": str(_num(d, 2, 200000, 299999))},
                "provider": {"id": str(_num(d, 4, 100000, 100400))}}  # fmt: skip

    def transcript_body(self, appointment_id: str) -> dict[str, Any]:
        """The AI scribe's transcript, as ``data.appointmentTranscript``."""
        d = _digest(appointment_id)
        turns = _CONVERSATIONS[d[6] % len(_CONVERSATIONS)]
        weeks = _num(d, 7, 2, 8)
        entries, at = [], _num(d, 9, 800, 4000)
        for i, (speaker, text) in enumerate(turns):
            spoken = text.format(weeks=weeks)
            end = at + 250 * len(spoken.split()) + 400
            entries.append({"speaker": speaker, "text": spoken, "start_ms": at, "end_ms": end})
            at = end + 200 + 60 * (d[(11 + i) % 32] % 16)
        created = _starts(d) + timedelta(minutes=35)
        return {"id": str(_num(d, 12, 900000, 999999)), "appointment_id": appointment_id,
                "created_at": created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "language": "en", "entries": entries}  # fmt: skip

    # -- the endpoint ---------------------------------------------------------------------------

    async def _graphql(self, request: Request) -> Response:
        operation = _operation(await request.body())
        self.requests.append(operation or ("?", None))
        if self._failures:
            failure = self._failures.popleft()
            headers = {} if failure.retry_after is None else {
                "Retry-After": f"{failure.retry_after:g}"}  # fmt: skip
            return JSONResponse({"error": "injected failure"}, failure.status, headers=headers)
        refused = self._refuse(request)
        if refused is not None:
            return refused
        if self._errors:
            return JSONResponse({"data": None, "errors": [self._errors.popleft()]})
        if operation is None:
            return _error(200, "undefinedField", "Only appointment and appointmentTranscript "
                          "(with an id argument) are served by the carehook sandbox")
        root, appointment_id = operation
        return JSONResponse({"data": {root: self._result(root, appointment_id)}})

    def _result(self, root: str, appointment_id: str) -> Any:
        if (root, appointment_id) in self._results:
            return self._results[(root, appointment_id)]
        if appointment_id in self._hidden:
            return None
        if root == "appointment":
            return self.appointment_body(appointment_id)
        return self.transcript_body(appointment_id)

    def _refuse(self, request: Request) -> Response | None:
        auth = request.headers.get("authorization", "")
        source = request.headers.get("authorizationsource", "")
        if not hmac.compare_digest(auth.encode(), f"Basic {self.api_key}".encode()) or (
            source != "API"
        ):
            return _error(401, "UNAUTHENTICATED", "API key is missing or invalid")
        if request.headers.get("healthie-graphql-api-version") != self.api_version:
            return _error(400, "UNSUPPORTED_API_VERSION",
                          f"Healthie-GraphQL-API-Version must be {self.api_version}")
        return None


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"data": None, "errors": [{"message": message,
                                                   "extensions": {"code": code}}]}, status)


_ROOT = re.compile(r"\{\s*(\w+)\s*\(([^)]*)\)")
_ARG = re.compile(r'(\w+)\s*:\s*(?:\$(\w+)|"((?:[^"\\]|\\.)*)"|(-?\d+))')


def _operation(body: bytes) -> tuple[str, str] | None:
    """``(root field, appointment id)`` of a query this fake serves, else None."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    query = payload.get("query") if isinstance(payload, dict) else None
    variables = payload.get("variables") if isinstance(payload, dict) else None
    variables = variables if isinstance(variables, dict) else {}
    match = _ROOT.search(re.sub(r"#[^\n]*", "", query)) if isinstance(query, str) else None
    if match is None or match.group(1) not in ROOT_FIELDS:
        return None
    for arg in _ARG.finditer(match.group(2)):
        name, variable, string, number = arg.groups()
        if name in ("id", "appointment_id"):
            value = variables.get(variable) if variable else (string or number)
            return (match.group(1), str(value)) if value not in (None, "") else None
    return None
