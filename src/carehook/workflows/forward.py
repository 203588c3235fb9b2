"""Forward routes: ``[[routes]]`` send matching events to the team's own webhook destinations.

A route names a source, a glob over event types (``deepconsult.*``, ``*``; matched case
sensitively with :func:`fnmatch.fnmatchcase`) and a destination. For each event, every
destination of a matching route (each once, in configuration order) gets one step,
``forward.<destination>``, appended to the event's workflow: one step per destination makes
retries per destination (a destination that failed is tried again; the ones that took the event
are not sent it twice).

What is sent is the normalised event (:func:`normalised_event`), signed by the destination
(Standard Webhooks, its own secret), with ``webhook-id`` = ``"{source}:{event id}:{destination}"``
so the receiver can de-duplicate across retries. A destination that is not configured makes the
step ``skipped: not configured``.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from functools import partial
from typing import Any

from carehook.workflows import ExtraSteps, Step, StepContext, StepResult, WorkItem
from carehook.workflows._alerting import deliver
from carehook.workflows.catalog import ForwardRoute, WorkflowConfig
from carehook.workflows.ports import Services


def forward_steps(config: WorkflowConfig, services: Services) -> ExtraSteps | None:
    """The ``forward.<destination>`` steps by (source, type); None when no route is configured."""
    if not config.routes:
        return None
    cache: dict[tuple[str, str], tuple[Step, ...]] = {}

    def extra(source: str, event_type: str) -> tuple[Step, ...]:
        key = (source, event_type)
        if key not in cache:
            names = destinations_for(config.routes, source, event_type)
            cache[key] = tuple(
                Step(f"forward.{name}", partial(forward, services, name)) for name in names
            )
        return cache[key]

    return extra


def destinations_for(
    routes: tuple[ForwardRoute, ...], source: str, event_type: str
) -> tuple[str, ...]:
    """The destinations of the routes matching (source, type), each once, in order."""
    matching = (r.to for r in routes if r.source == source and fnmatchcase(event_type, r.events))
    return tuple(dict.fromkeys(matching))


async def forward(services: Services, name: str, ctx: StepContext) -> StepResult:
    """POST the normalised event to destination ``name`` (retried on its own when it fails)."""
    return await deliver(services, ctx.item, name, normalised_event(ctx.item))


def normalised_event(item: WorkItem) -> dict[str, Any]:
    """``{id, source, vendor, type, subject, occurred_at, received_at, data}``: ``id`` is the
    event id carehook de-duplicates on, ``data`` the vendor's payload as received."""
    occurred = item.occurred_at
    return {
        "id": item.event_id,
        "source": item.source,
        "vendor": item.vendor,
        "type": item.type,
        "subject": item.subject,
        "occurred_at": None if occurred is None else occurred.isoformat(),
        "received_at": item.received_at.isoformat(),
        "data": dict(item.payload),
    }
