"""OpenEvidence workflows: DeepConsult status, ops alerts, evidence deliveries, flagged reviews.

| event type            | steps                                                               |
|-----------------------|---------------------------------------------------------------------|
| deepconsult.started   | ``consult.track``                                                   |
| deepconsult.progress  | ``consult.track``                                                   |
| deepconsult.completed | ``consult.track`` (stores the report) → ``notify.requester``         |
| deepconsult.failed    | ``consult.track`` → ``alert.ops`` (``retryable``)                    |
| rate_limit.warning    | ``alert.ops`` (de-duplicated per window)                             |
| api_key.expiring      | ``alert.ops`` (de-duplicated per window)                             |
| query.completed       | ``deliver.requester``                                               |
| query.failed          | ``alert.ops`` → ``retry.requester`` (after ``retry_after``)          |
| evidence.updated      | ``cache.refresh`` (older revisions ignored)                          |
| citation.added        | ``knowledge_base.index``                                            |
| citation.retracted    | ``knowledge_base.withdraw``                                         |
| review.flagged        | ``review.open`` (cooldown per review id) → ``alert.clinical``        |

The consult machine is a pure function (:func:`advance`); what it remembers, and the report,
are the consult's working data (encrypted at rest). Interpretations:

- **Consult**: ``started`` → ``progress`` (0-100, only forward; a late lower or equal value is
  ignored) → ``completed`` | ``failed``. Both ends are final, except that ``completed`` after
  ``failed`` is taken (OpenEvidence retried a retryable failure); anything after ``completed``,
  and a ``started`` after any other state, is late and ignored. The requester is notified and
  ops are alerted only by the event that made the transition, so a second ``completed`` or
  ``failed`` of one consult sends nothing.
- **Alert windows**: one alert per key (``source:rate_limit``, ``source:api_key:<key id>``) and
  UTC day of receipt, unless it worsens: requests ``remaining`` at most half of the last alerted
  value; for a key, its time left (expiry - receipt) a whole day shorter than at the last alert
  (the expiry moved closer: time passing alone cannot do that within one day), or the key has
  expired since.
- **query.failed**: carehook cannot run the query again itself, so "retry" means: ops are
  alerted at once, and when ``received_at + retry_after`` has passed the failure is re-delivered
  to the ``requester`` destination (``action: "retry"``), whose service re-submits. Until then
  the ``retry.requester`` step raises ``Deferred(until=received_at + retry_after)`` and the
  worker gives the event back due at that time: a planned wait, no attempt used, never
  dead-lettered however long ``retry_after`` is (the earlier steps are not re-run).
- **Revisions**: compared in natural order (runs of digits as numbers: ``10 > 9``,
  ``r10 > r2``). A revision equal to the newest seen is not sent again.
- **Citations**: a retracted citation is never indexed again; an ``added`` after it is ignored.
- **review.flagged**: a review item per ``review_id`` at most once per cooldown (the source's
  ``review_cooldown_hours``, default 24, measured between receipt times); severity ``high`` or
  ``critical`` also alerts ``clinical``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from carehook.errors import Deferred
from carehook.vendors.openevidence import (
    ApiKeyExpiring,
    CitationEvent,
    ConsultCompleted,
    ConsultData,
    ConsultFailed,
    ConsultProgress,
    ConsultStarted,
    EvidenceUpdated,
    QueryCompleted,
    QueryFailed,
    RateLimitWarning,
    ReviewFlagged,
)
from carehook.workflows import (
    ReviewRequest,
    Step,
    StepContext,
    StepResult,
    TimelineEntry,
    Workflow,
    WorkItem,
)
from carehook.workflows._alerting import (
    NOT_CONFIGURED,
    build_alert,
    code,
    deliver,
    event_time,
    human_seconds,
    merged,
    parse_time,
    payload_model,
    send_alert,
    windowed_alert,
)
from carehook.workflows.catalog import WorkflowConfig
from carehook.workflows.forward import normalised_event
from carehook.workflows.ports import Services

VENDOR = "openevidence"
REQUESTER, CACHE, KNOWLEDGE_BASE = "requester", "cache", "knowledge-base"
OPS, CLINICAL = "ops", "clinical"
_TIME_KEYS = ("created_at", "createdAt", "created", "timestamp")
_DAY = 86400.0


def workflows(config: WorkflowConfig, services: Services) -> dict[tuple[str, str], Workflow]:
    """Every OpenEvidence event type's workflow."""
    s = services
    track = Step("consult.track", track_consult)

    def flow(name: str, *steps: Step, stateful: bool = True) -> Workflow:
        return Workflow(f"openevidence.{name}", steps, stateful)

    table = {
        "deepconsult.started": flow("consult", track),
        "deepconsult.progress": flow("consult", track),
        "deepconsult.completed": flow("consult_completed", track,
                                      Step("notify.requester", partial(notify_requester, s))),
        "deepconsult.failed": flow("consult_failed", track,
                                   Step("alert.ops", partial(consult_failed_alert, s))),
        "rate_limit.warning": flow("rate_limit", Step("alert.ops", partial(rate_limit_alert, s))),
        "api_key.expiring": flow("api_key", Step("alert.ops", partial(api_key_alert, s))),
        "query.completed": flow("query_completed", Step(
            "deliver.requester", partial(deliver_results, s)), stateful=False),
        "query.failed": flow("query_failed", Step("alert.ops", partial(query_failed_alert, s)),
                             Step("retry.requester", partial(redeliver_failure, s)),
                             stateful=False),
        "evidence.updated": flow("evidence", Step("cache.refresh", partial(refresh_cache, s))),
        "citation.added": flow("citation", Step(
            "knowledge_base.index", partial(citation_step, s, "index"))),
        "citation.retracted": flow("citation", Step(
            "knowledge_base.withdraw", partial(citation_step, s, "withdraw"))),
        "review.flagged": flow("review", Step("review.open", partial(open_review, config)),
                               Step("alert.clinical", partial(review_alert, s))),
    }  # fmt: skip
    return {(VENDOR, type_): workflow for type_, workflow in table.items()}


def _body(item: WorkItem, action: str, **extra: Any) -> dict[str, Any]:
    """What a destination receives: the normalised event and what to do with it."""
    return {**normalised_event(item), "action": action, **extra}


def _timeline(ctx: StepContext, state: str, detail: str) -> TimelineEntry:
    return TimelineEntry(ctx.item.subject, state, detail)


# -- DeepConsult: the status machine ------------------------------------------------------------

TERMINAL = frozenset({"completed", "failed"})


@dataclasses.dataclass(frozen=True, slots=True)
class Transition:
    """What one event did to a consult: its new record, whether it moved, and why (no PHI)."""

    consult: dict[str, Any]
    applied: bool
    note: str


def advance(consult: Mapping[str, Any], event_type: str, data: ConsultData, at: datetime,
            event_id: str) -> Transition:  # fmt: skip
    """Apply one ``deepconsult.*`` event to a consult record (pure)."""
    record = dict(consult)
    status = record.get("status")
    record.setdefault("first_at", at.isoformat())
    kind = event_type.removeprefix("deepconsult.")
    if kind == "started":
        return _started(record, status, data, at)
    if kind == "progress" and isinstance(data, ConsultProgress):
        return _progress(record, status, data.progress)
    if status == "completed":
        return Transition(record, False, f"late {kind} ignored: consult completed")
    if kind == "completed":
        record.update(status="completed", progress=100.0, completed_at=at.isoformat(),
                      completed_by=event_id)  # fmt: skip
        return Transition(record, True, _took("completed", record, at))
    if status == "failed":
        return Transition(record, False, "failed again: already failed")
    retryable = data.retryable if isinstance(data, ConsultFailed) else None
    record.update(status="failed", failed_at=at.isoformat(), failed_by=event_id,
                  retryable=retryable)  # fmt: skip
    return Transition(record, True, _took("failed", record, at))


def _started(record: dict[str, Any], status: object, data: ConsultData,
             at: datetime) -> Transition:  # fmt: skip
    if "started_at" not in record:
        record["started_at"] = at.isoformat()
    if isinstance(data, ConsultStarted):
        record.setdefault("estimated_time", code(data.estimated_time))
    if status is not None:
        return Transition(record, False, f"late start ignored: consult {status}")
    record.update(status="started", progress=0.0)
    return Transition(record, True, "started")


def _progress(record: dict[str, Any], status: object, value: float) -> Transition:
    if status in TERMINAL:
        return Transition(record, False, f"late progress {value:g}% ignored: consult {status}")
    current = record.get("progress")
    if isinstance(current, int | float) and (
        value < current or (value == current and status == "progress")
    ):
        return Transition(record, False, f"late progress {value:g}% ignored: at {current:g}%")
    record.update(status="progress", progress=value)
    return Transition(record, True, f"progress {value:g}%")


def _took(what: str, record: Mapping[str, Any], at: datetime) -> str:
    began = parse_time(record.get("started_at")) or parse_time(record.get("first_at"))
    if began is None or at < began:
        return what
    return f"{what} after {human_seconds((at - began).total_seconds())}"


_CONSULT_MODELS: dict[str, type[ConsultData]] = {
    "deepconsult.started": ConsultStarted,
    "deepconsult.progress": ConsultProgress,
    "deepconsult.completed": ConsultCompleted,
    "deepconsult.failed": ConsultFailed,
}


async def track_consult(ctx: StepContext) -> StepResult:
    """Move the consult's status machine; ``completed`` keeps the report (encrypted)."""
    item = ctx.item
    data = payload_model(item, _CONSULT_MODELS[item.type], "data")
    consult = ctx.state.get("consult")
    step = advance(consult if isinstance(consult, Mapping) else {}, item.type, data,
                   event_time(item, *_TIME_KEYS), item.event_id)  # fmt: skip
    state = merged(ctx.state, consult=step.consult)
    if step.applied and isinstance(data, ConsultCompleted):
        state["report"] = data.report
    status = str(step.consult.get("status"))
    outcome = "ok" if step.applied else f"skipped: {step.note}"
    return StepResult(outcome=outcome, detail=step.note, state=state,
                      timeline=_timeline(ctx, status, step.note))  # fmt: skip


def _consult(ctx: StepContext) -> Mapping[str, Any]:
    consult = ctx.state.get("consult")
    return consult if isinstance(consult, Mapping) else {}


async def notify_requester(services: Services, ctx: StepContext) -> StepResult:
    """Push + email the requester that the report is ready (a link, never the report)."""
    consult = _consult(ctx)
    if consult.get("completed_by") != ctx.item.event_id:
        return StepResult(outcome="skipped: consult not completed by this event")
    data = payload_model(ctx.item, ConsultData, "data")
    alert = build_alert(ctx, services, "DeepConsult report ready", "info",
                        {"consult_id": data.consult_id})  # fmt: skip
    return await send_alert(services, ctx, REQUESTER, alert)


async def consult_failed_alert(services: Services, ctx: StepContext) -> StepResult:
    """Alert ops that a consult failed, and whether OpenEvidence says a retry may succeed."""
    consult = _consult(ctx)
    if consult.get("failed_by") != ctx.item.event_id:
        return StepResult(outcome="skipped: consult not failed by this event")
    data = payload_model(ctx.item, ConsultFailed, "data")
    retryable = "unknown" if data.retryable is None else str(data.retryable).lower()
    error = data.error.get("code") if isinstance(data.error, dict) else data.error
    facts = {"consult_id": data.consult_id, "retryable": retryable, "error_code": code(error)}
    severity = "warning" if data.retryable else "high"
    alert = build_alert(ctx, services, "DeepConsult failed", severity, facts)
    return await send_alert(services, ctx, OPS, alert)


# -- ops alerts, de-duplicated per window ---------------------------------------------------------


def _halved(new: float, old: float) -> bool:
    """Remaining requests at most half of what was last alerted (and fewer)."""
    return new < old and new <= old / 2


def _day_closer(new: float, old: float) -> bool:
    """Seconds left at least a day fewer than at the last alert, or expired since."""
    return new <= old - _DAY or new <= 0 < old


async def rate_limit_alert(services: Services, ctx: StepContext) -> StepResult:
    """Alert ops that requests are running out (once a day unless remaining halves)."""
    data = payload_model(ctx.item, RateLimitWarning, "data")
    reset = None if data.reset_at is None else data.reset_at.isoformat()
    facts = {"remaining": data.remaining, "limit": data.limit, "reset_at": reset}
    severity = "high" if data.remaining == 0 else "warning"
    alert = build_alert(ctx, services, "OpenEvidence rate limit nearly reached", severity, facts)
    key = f"{ctx.item.source}:rate_limit"
    return await windowed_alert(services, ctx, OPS, alert, (key, float(data.remaining), _halved))


def days_left(expires_at: datetime, at: datetime) -> int:
    """Whole days from ``at`` until ``expires_at`` (rounded down; negative once expired)."""
    return math.floor((expires_at - at).total_seconds() / _DAY)


async def api_key_alert(services: Services, ctx: StepContext) -> StepResult:
    """Alert ops that an API key expires soon (once a day unless a day closer)."""
    data = payload_model(ctx.item, ApiKeyExpiring, "data")
    left = days_left(data.expires_at, ctx.item.received_at)
    facts = {"key_id": data.key_id, "expires_at": data.expires_at.isoformat(), "days_left": left}
    severity = "high" if left <= 1 else "warning"
    alert = build_alert(ctx, services, "OpenEvidence API key expiring", severity, facts)
    key = f"{ctx.item.source}:api_key:{data.key_id}"
    remaining = (data.expires_at - ctx.item.received_at).total_seconds()
    return await windowed_alert(services, ctx, OPS, alert, (key, remaining, _day_closer))


# -- evidence events -----------------------------------------------------------------------------


async def deliver_results(services: Services, ctx: StepContext) -> StepResult:
    """Deliver a completed query's results (ids, counts) to the requester's service."""
    data = payload_model(ctx.item, QueryCompleted, "data")
    note = f"evidence_count {data.evidence_count}, confidence {data.confidence}"
    result = await deliver(services, ctx.item, REQUESTER, _body(ctx.item, "deliver_results"))
    return dataclasses.replace(result, timeline=_timeline(ctx, "completed", note))


async def query_failed_alert(services: Services, ctx: StepContext) -> StepResult:
    """Alert ops that a query failed, with its error code and when it may be retried."""
    data = payload_model(ctx.item, QueryFailed, "data")
    facts = {"query_id": data.query_id, "error_code": code(data.error_code),
             "retry_after": data.retry_after}  # fmt: skip
    result = await send_alert(services, ctx, OPS, build_alert(
        ctx, services, "OpenEvidence query failed", "warning", facts))  # fmt: skip
    note = f"error {code(data.error_code)}; retry after {data.retry_after}s"
    return dataclasses.replace(result, timeline=_timeline(ctx, "failed", note))


async def redeliver_failure(services: Services, ctx: StepContext) -> StepResult:
    """Once ``retry_after`` has passed since receipt, send the requester the retry request."""
    if REQUESTER not in services.destinations:
        return StepResult(outcome=NOT_CONFIGURED, detail=f"destination {REQUESTER}")
    data = payload_model(ctx.item, QueryFailed, "data")
    due = ctx.item.received_at + timedelta(seconds=data.retry_after or 0)
    left = (due - ctx.now).total_seconds()
    if left > 0:  # a planned wait, not a failure: no attempt used, never dead-lettered
        raise Deferred(due, f"query {data.query_id}: re-delivery to {REQUESTER} due in "
                            f"{math.ceil(left)}s (retry_after)")  # fmt: skip
    body = _body(ctx.item, "retry", retry_after=data.retry_after)
    result = await deliver(services, ctx.item, REQUESTER, body)
    return dataclasses.replace(result, timeline=_timeline(ctx, "retry_requested", result.detail))


def revision_newer(new: int | str, old: object) -> bool:
    """Whether revision ``new`` is newer than ``old``: compared in natural order, runs of
    digits as numbers (``10 > 9``, ``r10 > r2``, ``2026-02 > 2026-01``)."""
    return old is None or _natural(str(new)) > _natural(str(old))


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(part)) if part.isdigit() else (1, part)
                 for part in re.findall(r"\d+|\D+", text))  # fmt: skip


async def refresh_cache(services: Services, ctx: StepContext) -> StepResult:
    """Refresh the cache for a topic's newer revision; older (or equal) revisions are ignored."""
    data = payload_model(ctx.item, EvidenceUpdated, "data")
    newest = ctx.state.get("revision")
    if not revision_newer(data.revision, newest):
        note = f"revision {data.revision} ignored: newest is {newest}"
        return StepResult(outcome=f"skipped: {note}", timeline=_timeline(ctx, "updated", note))
    result = await deliver(services, ctx.item, CACHE, _body(ctx.item, "refresh"))
    note = f"revision {data.revision}"
    if result.outcome != "ok":
        return dataclasses.replace(result, timeline=_timeline(ctx, "updated", note))
    return dataclasses.replace(result, state=merged(ctx.state, revision=data.revision),
                               timeline=_timeline(ctx, "updated", f"{note}; cache refreshed"))


async def citation_step(services: Services, action: str, ctx: StepContext) -> StepResult:
    """Index (``citation.added``) or withdraw (``citation.retracted``) at the knowledge base."""
    data = payload_model(ctx.item, CitationEvent, "data")
    status = ctx.state.get("status")
    done = "indexed" if action == "index" else "withdrawn"
    if status == "withdrawn" or status == done:
        note = f"{action} ignored: citation {status}"
        return StepResult(outcome=f"skipped: {note}", timeline=_timeline(ctx, str(status), note))
    result = await deliver(services, ctx.item, KNOWLEDGE_BASE, _body(ctx.item, action))
    note = f"citation {data.citation_id} (pubmed {code(data.pubmed_id)})"
    if result.outcome != "ok":
        return dataclasses.replace(result, timeline=_timeline(ctx, ctx.item.type, note))
    return dataclasses.replace(result, state=merged(ctx.state, status=done),
                               timeline=_timeline(ctx, done, note))


# -- review.flagged ------------------------------------------------------------------------------

_REVIEW_SEVERITY = {"critical": "critical", "high": "high"}


async def open_review(config: WorkflowConfig, ctx: StepContext) -> StepResult:
    """Open a review item for a flag, unless one opened for this review id within the cooldown."""
    item = ctx.item
    data = payload_model(item, ReviewFlagged, "data")
    cooldown = timedelta(hours=config.options(item.source).review_cooldown_hours)
    last = parse_time(ctx.state.get("opened_at"))
    if last is not None and item.received_at - last < cooldown:
        ago = human_seconds((item.received_at - last).total_seconds())
        note = f"flag held back: review opened {ago} ago (cooldown)"
        held = int(ctx.state.get("held_back", 0) or 0) + 1
        return StepResult(outcome="skipped: cooldown", detail=note,
                          state=merged(ctx.state, held_back=held),
                          timeline=_timeline(ctx, "flagged", note))  # fmt: skip
    severity = str(code(data.severity) or "unknown").lower()
    summary = (f"OpenEvidence review {data.review_id} flagged: "
               f"{code(data.flag_reason) or 'no reason code'} (severity {severity})")
    review = ReviewRequest(kind="openevidence.review",
                           severity=_REVIEW_SEVERITY.get(severity, "normal"), summary=summary,
                           dedup_key=f"{item.source}:review:{data.review_id}")  # fmt: skip
    state = merged(ctx.state, opened_at=item.received_at.isoformat(), opened_by=item.event_id)
    return StepResult(detail="review opened", state=state, review=review,
                      timeline=_timeline(ctx, "flagged", f"review opened (severity {severity})"))


async def review_alert(services: Services, ctx: StepContext) -> StepResult:
    """Alert the clinical team about a high or critical flag that opened a review."""
    if ctx.state.get("opened_by") != ctx.item.event_id:
        return StepResult(outcome="skipped: no review opened (cooldown)")
    data = payload_model(ctx.item, ReviewFlagged, "data")
    severity = str(code(data.severity) or "").lower()
    if severity not in _REVIEW_SEVERITY:
        return StepResult(outcome=f"skipped: severity {severity or 'unknown'}")
    facts = {"review_id": data.review_id, "flag_reason": code(data.flag_reason)}
    alert = build_alert(ctx, services, "OpenEvidence content flagged for review", severity, facts)
    return await send_alert(services, ctx, CLINICAL, alert)
