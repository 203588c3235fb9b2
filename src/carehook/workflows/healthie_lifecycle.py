"""Healthie's recording lifecycle and meeting attendance, per appointment.

| event type                                   | steps                                      |
|----------------------------------------------|--------------------------------------------|
| appointment.recording_started                | ``healthie.lifecycle``                     |
| appointment.recording_stopped                | ``healthie.lifecycle``                     |
| appointment.recording_completed              | ``healthie.lifecycle``                     |
| appointment.transcript_started               | ``healthie.lifecycle``                     |
| appointment.transcript_failed                | ``healthie.lifecycle`` → ``alert.clinical``  |
| appointment.transcript_available             | the transcript workflow's, with the above  |
| appointment.participant_joined / _left       | ``attendance.record``                      |

**Lifecycle** (any arrival order): each milestone's time is kept (the earliest, if it comes
twice); the appointment's status is that of the furthest milestone seen, in the order
recording_started → recording_stopped → recording_completed → transcript_started →
transcript_failed → transcript_available, so a late ``recording_started`` never moves it back.
Durations are computed from whatever pair is known: recording (stopped - started), processing
(transcript available - recording stopped, as Healthie's guide measures it) and transcription
(available - transcript started). A milestone's time is the payload's (``event_ts``,
``occurred_at``, ``created_at``, ``updated_at``, ``timestamp``) when given, else the receipt
time; a negative difference (receipt order inverted, no payload times) leaves that duration
unknown. ``transcript_failed`` alerts the clinical team once per appointment, and not at all
once the transcript is available.

**Attendance**: one record per participant (keyed by email, else name), with every join and
leave time; names and emails live only in the appointment's working data (encrypted at rest).
Timeline entries and step details say "participant 2 joined; 1 present", never who.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

from carehook.vendors.healthie import HealthieEvent, ParticipantEvent
from carehook.workflows import Step, StepContext, StepResult, TimelineEntry, Workflow
from carehook.workflows._alerting import (
    build_alert,
    event_time,
    human_seconds,
    merged,
    parse_time,
    payload_model,
    send_alert,
)
from carehook.workflows.catalog import WorkflowConfig
from carehook.workflows.ports import Services

VENDOR = "healthie"
CLINICAL = "clinical"
#: milestones in lifecycle order, and the appointment's status once each is the furthest seen
MILESTONES = ("recording_started", "recording_stopped", "recording_completed",
              "transcript_started", "transcript_failed", "transcript_available")  # fmt: skip
STATUS = {
    "recording_started": "recording",
    "recording_stopped": "processing",
    "recording_completed": "processing",
    "transcript_started": "transcribing",
    "transcript_failed": "transcript_failed",
    "transcript_available": "complete",
}
#: duration name -> (from milestone, to milestone)
DURATIONS = {
    "recording": ("recording_started", "recording_stopped"),
    "processing": ("recording_stopped", "transcript_available"),
    "transcription": ("transcript_started", "transcript_available"),
}
_TIME_KEYS = ("event_ts", "occurred_at", "created_at", "updated_at", "timestamp")
_LIFECYCLE_TYPES = tuple(f"appointment.{m}" for m in MILESTONES if m != "transcript_available")


async def track_lifecycle(ctx: StepContext) -> StepResult:
    """Record a recording/transcript milestone in the appointment's timeline (any order)."""
    item = ctx.item
    milestone = item.type.removeprefix("appointment.")
    if milestone not in STATUS:
        return StepResult(outcome=f"skipped: {item.type} is not a lifecycle milestone")
    payload_model(item, HealthieEvent)
    previous = ctx.state.get("recording")
    record, note = advance(previous if isinstance(previous, Mapping) else {}, milestone,
                           event_time(item, *_TIME_KEYS), item.event_id)  # fmt: skip
    status = str(record["status"])
    return StepResult(detail=note, state=merged(ctx.state, recording=record),
                      timeline=TimelineEntry(item.subject, status, note))  # fmt: skip


#: the lifecycle step, for the transcript workflow of ``appointment.transcript_available`` too
#: (that workflow must be ``stateful``; the step keeps every other key of the working data)
lifecycle_step = Step("healthie.lifecycle", track_lifecycle)


def advance(recording: Mapping[str, Any], milestone: str, at: datetime,
            event_id: str) -> tuple[dict[str, Any], str]:  # fmt: skip
    """The recording record after ``milestone`` at ``at``, and a PHI-free note (pure)."""
    raw_times = recording.get("times")
    times: dict[str, str] = dict(raw_times) if isinstance(raw_times, Mapping) else {}
    seen = parse_time(times.get(milestone))
    repeat = seen is not None
    if seen is None or at < seen:
        times[milestone] = at.isoformat()
    furthest = max((m for m in times if m in STATUS), key=MILESTONES.index)
    record: dict[str, Any] = {**recording, "times": times, "status": STATUS[furthest]}
    record["durations"] = durations(times)
    if milestone == "transcript_failed" and not repeat and "transcript_available" not in times:
        record["failed_by"] = event_id
    return record, _note(milestone, furthest, record["durations"], repeat)


def durations(times: Mapping[str, str]) -> dict[str, float]:
    """Seconds between the known milestone pairs (negative differences are left out)."""
    found: dict[str, float] = {}
    for name, (begin, end) in DURATIONS.items():
        start, stop = parse_time(times.get(begin)), parse_time(times.get(end))
        if start is not None and stop is not None and stop >= start:
            found[name] = (stop - start).total_seconds()
    return found


def _note(milestone: str, furthest: str, spans: Mapping[str, float], repeat: bool) -> str:
    parts = [f"{milestone} again (earliest time kept)" if repeat else milestone]
    if furthest != milestone and MILESTONES.index(furthest) > MILESTONES.index(milestone):
        parts.append(f"late: status stays {STATUS[furthest]}")
    parts += [f"{name} {human_seconds(secs)}" for name, secs in spans.items()]
    return "; ".join(parts)


async def transcript_failed_alert(services: Services, ctx: StepContext) -> StepResult:
    """Alert the clinical team that an appointment's transcript failed (once per appointment)."""
    recording = ctx.state.get("recording")
    if not isinstance(recording, Mapping) or recording.get("failed_by") != ctx.item.event_id:
        return StepResult(outcome="skipped: already alerted or transcript available")
    event = payload_model(ctx.item, HealthieEvent)
    facts = {"appointment_id": event.resource_id, "status": recording.get("status")}
    alert = build_alert(ctx, services, "Healthie transcript failed", "high", facts)
    return await send_alert(services, ctx, CLINICAL, alert)


# -- attendance -----------------------------------------------------------------------------------


async def track_attendance(ctx: StepContext) -> StepResult:
    """Keep who joined and left, when (encrypted working data only; the timeline gets counts)."""
    item = ctx.item
    event = payload_model(item, ParticipantEvent)
    what = "joined" if item.type.endswith("participant_joined") else "left"
    raw = ctx.state.get("attendance")
    people = [dict(p) for p in raw if isinstance(p, Mapping)] if isinstance(raw, list) else []
    index = _find(people, event)
    if index is None:
        people.append(_person(event))
        index = len(people) - 1
    person = people[index]
    person[what] = sorted([*person.get(what, []), (event.event_ts or item.received_at).isoformat()])
    present = sum(1 for p in people if len(p.get("joined", [])) > len(p.get("left", [])))
    note = f"participant {index + 1} {what}; {present} present"
    recording = ctx.state.get("recording")
    status = recording.get("status") if isinstance(recording, Mapping) else None
    return StepResult(detail=note, state=merged(ctx.state, attendance=people),
                      timeline=TimelineEntry(item.subject, str(status or "meeting"), note))


def _person(event: ParticipantEvent) -> dict[str, Any]:
    host = None if event.host_user_id is None else str(event.host_user_id)
    return {"name": event.user_name, "email": event.user_email, "host_user_id": host,
            "joined": [], "left": []}  # fmt: skip


def _find(people: list[dict[str, Any]], event: ParticipantEvent) -> int | None:
    """The participant's record: same email (case-insensitive), else same name."""
    email = (event.user_email or "").strip().lower()
    for i, person in enumerate(people):
        if email and str(person.get("email") or "").strip().lower() == email:
            return i
    if not email and event.user_name:
        for i, person in enumerate(people):
            if not person.get("email") and person.get("name") == event.user_name:
                return i
    return None


def workflows(config: WorkflowConfig, services: Services) -> dict[tuple[str, str], Workflow]:  # noqa: ARG001
    """The lifecycle and attendance workflows (``transcript_available`` is the transcript
    workflow's, which runs :data:`lifecycle_step` too)."""
    table: dict[tuple[str, str], Workflow] = {}
    for type_ in _LIFECYCLE_TYPES:
        steps: tuple[Step, ...] = (lifecycle_step,)
        if type_ == "appointment.transcript_failed":
            steps += (Step("alert.clinical", partial(transcript_failed_alert, services)),)
        table[VENDOR, type_] = Workflow("healthie.recording", steps, stateful=True)
    for type_ in ("appointment.participant_joined", "appointment.participant_left"):
        table[VENDOR, type_] = Workflow(
            "healthie.attendance", (Step("attendance.record", track_attendance),), stateful=True
        )
    return table
