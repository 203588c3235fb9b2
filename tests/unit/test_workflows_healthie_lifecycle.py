"""Healthie recording lifecycle and attendance (pure): any arrival order, durations, one alert,
names and emails in encrypted working data only."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from carehook.workflows import StepContext
from carehook.workflows.catalog import WorkflowConfig
from carehook.workflows.healthie_lifecycle import advance, lifecycle_step, workflows

from .test_workflows_care import NOW, PHI, Harness, services

EMAIL = "canary.patient.7f3a@example.org"
SUBJECT = "healthie:appointment:42"


def event(kind: str, at: datetime | None = None, **extra: Any) -> dict[str, Any]:
    """A thin Healthie payload for appointment 42 (with ``event_ts`` when ``at`` is given)."""
    payload: dict[str, Any] = {"resource_id": 42, "resource_id_type": "Appointment",
                               "event_type": f"appointment.{kind}", **extra}  # fmt: skip
    if at is not None:
        payload["event_ts"] = at.isoformat()
    return payload


def harness() -> Harness:
    """A harness over the Healthie lifecycle workflows with a notifier."""
    s = services()
    return Harness(workflows(WorkflowConfig(), s), s)


def recording(h: Harness) -> dict[str, Any]:
    """The appointment's recording record."""
    return dict(h.data[SUBJECT]["recording"])


async def test_an_in_order_lifecycle_tracks_status_and_durations() -> None:
    """started → stopped → completed → transcript_started: status and durations from event times."""
    h = harness()
    states = []
    for kind, minutes in (("recording_started", 0), ("recording_stopped", 25),
                          ("recording_completed", 27), ("transcript_started", 30)):
        run = await h.send("healthie", event(kind, NOW + timedelta(minutes=minutes)))
        timeline = run.results[0][1].timeline
        assert timeline is not None
        states.append(timeline.state)
    assert states == ["recording", "processing", "processing", "transcribing"]
    assert recording(h)["durations"] == {"recording": 1500.0}
    assert "recording 25m00s" in run.results[0][1].detail


async def test_stopped_before_started_still_ends_processing_with_the_right_duration() -> None:
    """recording_stopped arrives first: the late start keeps status `processing`, duration right."""
    h = harness()
    await h.send("healthie", event("recording_stopped", NOW + timedelta(minutes=10)))
    run = await h.send("healthie", event("recording_started", NOW), NOW + timedelta(minutes=11))
    assert recording(h)["status"] == "processing"
    assert recording(h)["durations"]["recording"] == 600.0
    assert "late: status stays processing" in run.results[0][1].detail


async def test_without_event_times_an_inverted_receipt_leaves_the_duration_unknown() -> None:
    """No event_ts and stopped received before started: no negative duration is invented."""
    h = harness()
    await h.send("healthie", event("recording_stopped"), NOW)
    await h.send("healthie", event("recording_started"), NOW + timedelta(minutes=1))
    assert recording(h)["durations"] == {}
    assert recording(h)["status"] == "processing"


async def test_a_failed_transcript_alerts_clinical_once() -> None:
    """transcript_failed twice (two deliveries): one high clinical alert with ids only."""
    h = harness()
    first = await h.send("healthie", event("transcript_failed", NOW))
    second = await h.send("healthie", event("transcript_failed", NOW + timedelta(seconds=5)))
    assert first.outcomes == {"healthie.lifecycle": "ok", "alert.clinical": "ok"}
    assert second.outcomes["alert.clinical"].startswith("skipped")
    [(channel, alert)] = h.sent()
    assert (channel, alert.severity, alert.facts["appointment_id"]) == ("clinical", "high", "42")
    assert recording(h)["status"] == "transcript_failed"


async def test_a_failure_after_the_transcript_is_available_does_not_alert() -> None:
    """transcript_available (via the shared step), then a late failure: no alert, still complete."""
    h = harness()
    available = h.item("healthie", event("transcript_available", NOW))
    result = await lifecycle_step.run(StepContext(item=available, now=NOW))
    assert result.state is not None
    h.data[SUBJECT] = dict(result.state)
    run = await h.send("healthie", event("transcript_failed", NOW - timedelta(minutes=1)))
    assert run.outcomes["alert.clinical"].startswith("skipped")
    assert recording(h)["status"] == "complete"
    assert h.sent() == []


async def test_the_shared_lifecycle_step_keeps_the_other_working_data() -> None:
    """lifecycle_step (for the transcript workflow) records transcript_available, keeps the rest."""
    item = Harness({}).item("healthie", event("transcript_available", NOW + timedelta(hours=1)))
    state = {"transcript": {"id": "t"}, "recording": advance({}, "recording_stopped", NOW, "e")[0]}
    result = await lifecycle_step.run(StepContext(item=item, now=NOW, state=state))
    assert lifecycle_step.name == "healthie.lifecycle"
    assert result.state is not None
    assert result.state["transcript"] == {"id": "t"}
    assert result.state["recording"]["durations"] == {"processing": 3600.0}
    assert result.timeline is not None
    assert result.timeline.state == "complete"


async def test_attendance_keeps_people_encrypted_and_counts_in_the_timeline() -> None:
    """Two join, one leaves (a rejoin counted): names/emails only in the working data."""
    h = harness()
    who = {"user_name": PHI, "user_email": EMAIL}
    runs = [
        await h.send("healthie", event("participant_joined", NOW, **who)),
        await h.send("healthie", event("participant_joined", NOW, user_name="Dr B",
                                       user_email="b@example.org")),
        await h.send("healthie", event("participant_left", NOW + timedelta(minutes=20),
                                       **{**who, "user_email": EMAIL.upper()})),
    ]
    details = [r.results[0][1].detail for r in runs]
    assert details == ["participant 1 joined; 1 present", "participant 2 joined; 2 present",
                       "participant 1 left; 1 present"]
    people = h.data[SUBJECT]["attendance"]
    assert (people[0]["name"], people[0]["email"], len(people)) == (PHI, EMAIL, 2)
    assert len(people[0]["left"]) == 1
    for run in runs:
        assert PHI not in run.texts()
        assert EMAIL not in run.texts().lower()


async def test_a_leave_before_its_join_ends_with_nobody_present() -> None:
    """participant_left arrives before participant_joined: final count 0 present."""
    h = harness()
    who = {"user_name": "A", "user_email": "a@example.org"}
    await h.send("healthie", event("participant_left", NOW + timedelta(minutes=5), **who))
    run = await h.send("healthie", event("participant_joined", NOW, **who))
    assert run.results[0][1].detail == "participant 1 joined; 0 present"


async def test_attendance_timeline_keeps_the_recording_status() -> None:
    """A participant event during a recording leaves the appointment's state `recording`."""
    h = harness()
    await h.send("healthie", event("recording_started", NOW))
    run = await h.send("healthie", event("participant_joined", NOW, user_name="A"))
    timeline = run.results[0][1].timeline
    assert timeline is not None
    assert timeline.state == "recording"


def test_transcript_available_is_left_to_the_transcript_workflow() -> None:
    """The module claims every lifecycle and attendance type except transcript_available."""
    claimed = {t for _, t in workflows(WorkflowConfig(), services())}
    assert "appointment.transcript_available" not in claimed
    assert len(claimed) == 7
