"""Care-team alerts for Abridge and Nabla: failed sessions and jobs, low-quality notes.

| (vendor, event type)                      | steps                                           |
|-------------------------------------------|-------------------------------------------------|
| abridge ``encounter.session.failed``      | ``alert.clinical`` (high) → ``subject.record``  |
| abridge ``quality.alert``                 | ``quality.assess`` → ``alert.clinical``          |
| nabla ``generate_note_async.failed``      | ``alert.clinical`` (high) → ``subject.record``  |
| nabla ``transcribe_async.failed``         | ``alert.clinical`` (high) → ``subject.record``  |

``quality.assess`` compares ``data.quality_score`` with the source's ``quality_threshold``
(default 0.7): below it (or no score at all: a quality alert nobody can judge goes to a human)
opens a ``abridge.quality`` review item and the alert follows; at or above it the event is
recorded in the session's timeline only and the alert step is ``skipped: score at or above
threshold``. Alerts carry ids, the event type, severity, codes and the dashboard link only.
"""

from __future__ import annotations

from functools import partial

from carehook.vendors.abridge import SessionData
from carehook.vendors.nabla import NablaEvent
from carehook.workflows import (
    ReviewRequest,
    Step,
    StepContext,
    StepResult,
    TimelineEntry,
    Workflow,
    record_subject_state,
)
from carehook.workflows._alerting import build_alert, code, payload_model, send_alert
from carehook.workflows.catalog import WorkflowConfig
from carehook.workflows.ports import Services

CLINICAL = "clinical"
_RECORD = Step("subject.record", record_subject_state)
_NABLA_FAILED = ("generate_note_async.failed", "transcribe_async.failed")


def workflows(config: WorkflowConfig, services: Services) -> dict[tuple[str, str], Workflow]:
    """Abridge's session-failed and quality-alert workflows, Nabla's failed-job workflows."""
    table = {
        ("abridge", "encounter.session.failed"): Workflow("abridge.session_failed", (
            Step("alert.clinical", partial(session_failed_alert, services)), _RECORD)),
        ("abridge", "quality.alert"): Workflow("abridge.quality_alert", (
            Step("quality.assess", partial(assess_quality, config)),
            Step("alert.clinical", partial(quality_alert, config, services)))),
    }  # fmt: skip
    for type_ in _NABLA_FAILED:
        steps = (Step("alert.clinical", partial(nabla_failed_alert, services)), _RECORD)
        table["nabla", type_] = Workflow(f"nabla.{type_.split('.')[0]}_failed", steps)
    return table


async def session_failed_alert(services: Services, ctx: StepContext) -> StepResult:
    """Tell the clinical team an encounter's recording could not become a note."""
    data = payload_model(ctx.item, SessionData, "data")
    facts = {"session_id": data.session_id, "note_id": data.note_id, "status": code(data.status)}
    alert = build_alert(ctx, services, "Abridge session failed", "high", facts)
    return await send_alert(services, ctx, CLINICAL, alert)


def _below(config: WorkflowConfig, ctx: StepContext) -> tuple[bool, float | None, float]:
    """(needs review, score, threshold): a missing score needs a human too."""
    threshold = config.options(ctx.item.source).quality_threshold
    score = payload_model(ctx.item, SessionData, "data").quality_score
    return score is None or score < threshold, score, threshold


def _score_text(score: float | None, threshold: float) -> str:
    if score is None:
        return f"no quality score (threshold {threshold:.2f})"
    relation = "below" if score < threshold else "at or above"
    return f"quality score {score:.2f} {relation} threshold {threshold:.2f}"


async def assess_quality(config: WorkflowConfig, ctx: StepContext) -> StepResult:
    """Below the threshold: a review item; at or above: recorded in the timeline only."""
    item = ctx.item
    low, score, threshold = _below(config, ctx)
    text = _score_text(score, threshold)
    if not low:
        return StepResult(detail=text, timeline=TimelineEntry(item.subject, "quality.ok", text))
    data = payload_model(item, SessionData, "data")
    ids = ", ".join(f"{k} {v}" for k, v in (("session", data.session_id),
                                            ("note", data.note_id)) if v)  # fmt: skip
    review = ReviewRequest(kind="abridge.quality", severity="high",
                           summary=f"{text} ({ids or 'no ids'})",
                           dedup_key=f"{item.source}:quality:{item.subject}")  # fmt: skip
    return StepResult(detail=f"{text}: review opened",
                      timeline=TimelineEntry(item.subject, "quality.review", text), review=review)


async def quality_alert(config: WorkflowConfig, services: Services, ctx: StepContext) -> StepResult:
    """Alert the clinical team about a note whose quality needs review."""
    low, score, threshold = _below(config, ctx)
    if not low:
        return StepResult(outcome="skipped: score at or above threshold")
    data = payload_model(ctx.item, SessionData, "data")
    facts = {"session_id": data.session_id, "note_id": data.note_id, "quality_score": score,
             "threshold": threshold, "status": code(data.status)}  # fmt: skip
    alert = build_alert(ctx, services, "Abridge note needs quality review", "high", facts)
    return await send_alert(services, ctx, CLINICAL, alert)


async def nabla_failed_alert(services: Services, ctx: StepContext) -> StepResult:
    """Tell the clinical team a Nabla note or transcript job failed."""
    event = payload_model(ctx.item, NablaEvent)
    error = (event.data.payload or {}).get("error")
    error_code = code(error.get("code")) if isinstance(error, dict) else code(error)
    what = "note generation" if ctx.item.type.startswith("generate_note") else "transcription"
    facts = {"job_id": event.data.id, "external_id": code(event.data.external_id),
             "error_code": error_code}  # fmt: skip
    alert = build_alert(ctx, services, f"Nabla {what} failed", "high", facts)
    return await send_alert(services, ctx, CLINICAL, alert)
