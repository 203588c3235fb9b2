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

import json
from collections.abc import Mapping
from datetime import datetime
from fnmatch import fnmatchcase
from functools import partial
from typing import Any

from carehook.errors import CarehookError
from carehook.workflows import ExtraSteps, Step, StepContext, StepResult, Workflow, WorkItem
from carehook.workflows._alerting import deliver
from carehook.workflows.catalog import ForwardRoute, WorkflowConfig
from carehook.workflows.ports import Services


def workflows(config: WorkflowConfig, services: Services) -> dict[tuple[str, str], Workflow]:  # noqa: ARG001
    """Forwarding adds steps to other workflows (:func:`forward_steps`); it owns none."""
    return {}


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
    occurred = occurred_at(item)
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


def occurred_at(item: WorkItem) -> datetime | None:
    """When the vendor says the event happened, read by its vendor module (None if unknown).

    The work item does not carry it, so the vendor's parser reads it again from the payload
    (the body's bytes only matter to derived event ids, which are not used here).
    """
    from carehook.vendors import builtin_vendors

    vendor = builtin_vendors().get(item.vendor)
    if vendor is None:
        return None
    payload: Mapping[str, Any] = item.payload
    try:
        body = json.dumps(payload).encode()
        return vendor.parse(body, payload).occurred_at
    except (CarehookError, TypeError, ValueError):
        return None
