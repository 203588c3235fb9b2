"""Workflows: which ordered, named, idempotent steps run for which (vendor, event type).

A step gets a :class:`StepContext` and returns a :class:`StepResult`. The worker records each
finished step; a retry resumes at the first unfinished one, so a finished step never runs again.
A step's *database* effects (its :class:`TimelineEntry`) are committed in the same transaction
as its step record, so they happen exactly once; effects outside carehook (an EHR write, an
alert) must be idempotent themselves (conditional creates, de-duplication keys), because a crash
between the effect and its record repeats the step.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class WorkItem:
    """A claimed event, as the worker and its steps see it (payload decrypted, parsed)."""

    pk: int
    source: str
    vendor: str
    event_id: str
    type: str
    subject: str
    attempts: int
    received_at: datetime
    payload: Mapping[str, Any] = field(repr=False)
    #: when the vendor says the event happened (None if its payload does not say)
    occurred_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One line of a subject's status timeline, committed with the step that produced it."""

    subject: str
    state: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ReviewRequest:
    """An item for the human review queue, opened with the step that asks for it.

    ``summary`` says why (ids, scores, codes), never PHI; ``dedup_key`` names what it is about
    (a session, a review id) so an operator sees repeats together.
    """

    kind: str
    severity: str = "normal"  # normal | high | critical
    summary: str = ""
    dedup_key: str | None = None


@dataclass(frozen=True, slots=True)
class StepResult:
    """How a step ended: ``ok``, ``skipped: <why>`` or ``refused: <why>``; no PHI in detail.

    ``state``, when given, replaces the event subject's working data (encrypted at rest), and
    ``review`` opens a review item; both commit with the step record, exactly once.
    """

    outcome: str = "ok"
    detail: str = ""
    timeline: TimelineEntry | None = None
    state: Mapping[str, Any] | None = field(default=None, repr=False)
    review: ReviewRequest | None = None


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a step may use: the event, the time, and its subject's working data as the
    previous steps left it (read once per attempt; events of one subject never run at once)."""

    item: WorkItem
    now: datetime
    state: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: parts of this step that took effect on an earlier attempt (see ``PartialFailure``)
    done: frozenset[str] = frozenset()


StepFn = Callable[[StepContext], Awaitable[StepResult]]


@dataclass(frozen=True, slots=True)
class Step:
    """A named, idempotent unit of work."""

    name: str
    run: StepFn


@dataclass(frozen=True, slots=True)
class Workflow:
    """An ordered list of steps."""

    name: str
    steps: tuple[Step, ...]
    #: whether its steps read the subject's working data (``ctx.state``); read once per attempt
    stateful: bool = False


#: extra steps for an event by (source, event type): the configured forward routes
ExtraSteps = Callable[[str, str], tuple[Step, ...]]


class Router:
    """Maps (vendor, event type) to a workflow; unknown pairs have none (or the fallback).

    ``extra`` adds steps by (source, type) to the end of the event's workflow (forward routes);
    an event whose type has no workflow still gets them.
    """

    def __init__(self, routes: Mapping[tuple[str, str], Workflow],
                 fallback: Workflow | None = None, extra: ExtraSteps | None = None) -> None:
        self._routes = dict(routes)
        self._fallback = fallback
        self._extra = extra

    def route(self, vendor: str, event_type: str, source: str = "") -> Workflow | None:
        """The workflow for this event, or the fallback; with its extra steps."""
        workflow = self._routes.get((vendor, event_type), self._fallback)
        more = self._extra(source, event_type) if self._extra is not None else ()
        if not more:
            return workflow
        if workflow is None:
            return Workflow("forward", more)
        return Workflow(workflow.name, workflow.steps + more, workflow.stateful)


async def record_subject_state(ctx: StepContext) -> StepResult:
    """Record the event in its subject's status timeline (state = the event type)."""
    item = ctx.item
    return StepResult(detail="recorded", timeline=TimelineEntry(item.subject, item.type))


#: the workflow every handled event runs until its vendor's clinical workflow exists
RECORD_ONLY = Workflow("record", (Step("subject.record", record_subject_state),))


def default_router() -> Router:
    """Every handled event type records its subject's state."""
    return Router({}, fallback=RECORD_ONLY)
