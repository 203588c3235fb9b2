"""What the care-team workflows share: PHI-free alerts, channels, payload reading, windows.

- :func:`build_alert` makes an :class:`~carehook.workflows.ports.Alert` out of the event (ids,
  type, severity, a link to the event in the dashboard) and a few facts: ids, scores, codes.
  Free text from a payload never goes in: :func:`code` lets a value through only when it looks
  like a machine code (``UPSTREAM_TIMEOUT``, ``outdated_guideline``).
- :func:`send_alert` sends it to a named channel, or answers ``skipped: not configured``.
- :func:`deliver` posts a body to a named destination, or answers ``skipped: not configured``.
- :func:`held_back` / :func:`marked` implement alert de-duplication windows kept in a subject's
  working data: one alert per key and UTC day, unless the situation worsens (a caller-given
  comparison of a numeric level).
- :func:`payload_model` re-validates the stored payload with the vendor's model; a payload that
  no longer fits is a :class:`~carehook.errors.PermanentError` naming the event, never a value.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from carehook.errors import PermanentError
from carehook.workflows import StepContext, StepResult, TimelineEntry, WorkItem
from carehook.workflows.ports import Alert, Services

M = TypeVar("M", bound=BaseModel)

#: the outcome of a step whose channel or destination is not configured
NOT_CONFIGURED = "skipped: not configured"
#: what a value must look like to appear in an alert, a detail or a review summary
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}")


def code(value: object) -> str | None:
    """``value`` when it is a short machine code (or a number), else None: free text may be PHI."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    return value if isinstance(value, str) and _CODE.fullmatch(value) else None


def event_link(services: Services, item: WorkItem) -> str:
    """The event's page in the dashboard."""
    return f"{services.dashboard_url.rstrip('/')}/dashboard/events/{item.pk}"


def build_alert(
    ctx: StepContext, services: Services, title: str, severity: str,
    facts: Mapping[str, object] | None = None,
) -> Alert:  # fmt: skip
    """An alert about ``ctx``'s event: ids, type, severity, link, and the facts that are set."""
    item = ctx.item
    clean = {key: str(value) for key, value in (facts or {}).items() if value is not None}
    return Alert(title=title, severity=severity, source=item.source, event_type=item.type,
                 event_pk=item.pk, subject=item.subject, link=event_link(services, item),
                 facts=clean)  # fmt: skip


async def send_alert(
    services: Services, ctx: StepContext, channel: str, alert: Alert
) -> StepResult:
    """Send ``alert`` to ``channel``; ``skipped: not configured`` without a notifier or target.

    A failed send raises (the notifier's PartialFailure, naming the targets reached), so the
    step is tried again, for the targets not reached yet only (``ctx.done``).
    """
    notifier = services.notifier
    if notifier is None or not notifier.configured(channel):
        return StepResult(outcome=NOT_CONFIGURED, detail=f"channel {channel}")
    await notifier.notify(channel, alert, skip=ctx.done)
    return StepResult(detail=f"{alert.severity} alert sent to {channel}")


async def deliver(
    services: Services, item: WorkItem, name: str, body: Mapping[str, Any]
) -> StepResult:
    """POST ``body`` to destination ``name`` with a message id stable across retries."""
    destination = services.destinations.get(name)
    if destination is None:
        return StepResult(outcome=NOT_CONFIGURED, detail=f"destination {name}")
    delivery = await destination.deliver(message_id(item, name), body)
    return StepResult(detail=f"delivered to {name}: status {delivery.status}")


def message_id(item: WorkItem, destination: str) -> str:
    """The ``webhook-id`` of ``item`` sent to ``destination``: the same on every retry."""
    return f"{item.source}:{item.event_id}:{destination}"


def payload_model(item: WorkItem, model: type[M], *path: str) -> M:
    """The payload (or the part at ``path``) validated with ``model``."""
    value: Any = item.payload
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    try:
        return model.model_validate(value)
    except ValidationError:
        raise PermanentError(
            f"event {item.pk} ({item.type}): payload does not fit its model"
        ) from None


def merged(state: Mapping[str, Any], **parts: Any) -> dict[str, Any]:
    """The subject's working data with ``parts`` replaced (data is a full replacement)."""
    return {**state, **parts}


# -- de-duplication windows ---------------------------------------------------------------------

#: ``worse(new_level, last_level)``: whether the situation got meaningfully worse
Worse = Callable[[float, float], bool]


def utc_day(moment: datetime) -> str:
    """The de-duplication window a moment falls in: its UTC day."""
    return (moment if moment.tzinfo is None else moment.astimezone(UTC)).date().isoformat()


def held_back(
    marks: Mapping[str, Any], key: str, at: datetime, level: float, worse: Worse
) -> str | None:
    """Why an alert for ``key`` at ``at`` is held back, or None to send it.

    Sent when no alert for ``key`` went out in ``at``'s UTC day, or when ``level`` is worse
    than the level last alerted (by ``worse``).
    """
    last = marks.get(key)
    if not isinstance(last, Mapping) or last.get("window") != utc_day(at):
        return None
    previous = last.get("level")
    if not isinstance(previous, int | float) or worse(level, float(previous)):
        return None
    return f"alerted already on {utc_day(at)} at level {_level(previous)}"


def marked(marks: Mapping[str, Any], key: str, at: datetime, level: float) -> dict[str, Any]:
    """``marks`` recording an alert for ``key`` sent at ``at`` with ``level``."""
    return {**marks, key: {"window": utc_day(at), "level": level, "at": at.isoformat()}}


def _level(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def alert_marks(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """The de-duplication marks kept in a subject's working data (under ``alerts``)."""
    marks = state.get("alerts")
    return marks if isinstance(marks, Mapping) else {}


#: (key, level, worse) of a windowed alert
Window = tuple[str, float, Worse]


async def windowed_alert(
    services: Services, ctx: StepContext, channel: str, alert: Alert, window: Window
) -> StepResult:
    """Send ``alert`` unless one for the window's key went out this UTC day (of receipt) and
    the situation did not worsen; the step's timeline entry (state: the event type) says which.
    """
    key, level, worse = window
    at = ctx.item.received_at
    marks = alert_marks(ctx.state)
    summary = ", ".join(f"{k} {v}" for k, v in alert.facts.items())
    reason = held_back(marks, key, at, level, worse)
    if reason is not None:
        return StepResult(outcome=f"skipped: {reason}", detail=summary,
                          timeline=_entry(ctx, f"{summary}; held back"))  # fmt: skip
    result = await send_alert(services, ctx, channel, alert)
    if result.outcome != "ok":
        return dataclasses.replace(result, timeline=_entry(ctx, summary))
    state = merged(ctx.state, alerts=marked(marks, key, at, level))
    return dataclasses.replace(result, state=state, timeline=_entry(ctx, f"{summary}; alerted"))


def _entry(ctx: StepContext, detail: str) -> TimelineEntry:
    return TimelineEntry(ctx.item.subject, ctx.item.type, detail)


# -- durations ----------------------------------------------------------------------------------


def human_seconds(seconds: float) -> str:
    """``45s``, ``12m05s``, ``2h04m``, ``3d02h``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 time kept in working data (or None)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def event_time(item: WorkItem, *keys: str) -> datetime:
    """When the event happened, by the first of ``keys`` found in the payload or its ``data``
    (ISO 8601 or unix seconds), else when it was received."""
    data = item.payload.get("data")
    places = [item.payload, data] if isinstance(data, Mapping) else [item.payload]
    for place in places:
        for key in keys:
            moment = _moment(place.get(key))
            if moment is not None:
                return moment
    return item.received_at


def _moment(value: object) -> datetime | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return parse_time(value)
