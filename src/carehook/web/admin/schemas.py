"""The admin API's request and response bodies (what its OpenAPI document describes)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from carehook.inbox.port import AuditRow, EventRow, RequestRow
from carehook.inbox.work import AttemptRow, ReviewRow, StepRow

__all__ = ["AttemptRow", "ReviewRow", "StepRow"]
from carehook.operations.models import (
    DeadLetter,
    Overview,
    SourceStatus,
    Timeline,
)


class EventPage(BaseModel):
    """A page of events, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[EventRow]
    next_cursor: int | None


class EventDetailOut(BaseModel):
    """One event's metadata, finished steps and attempts."""

    event: EventRow
    steps: list[StepRow]
    attempts: list[AttemptRow]


class PayloadOut(BaseModel):
    """A decrypted payload (None once purged); the view is in the audit log under ``actor``."""

    event: int
    actor: str
    audited: bool
    payload: str | None


class DeadLetterPage(BaseModel):
    """A page of dead events with their last errors."""

    items: list[DeadLetter]
    next_cursor: int | None


class RequestPage(BaseModel):
    """A page of the request log (with rejection causes)."""

    items: list[RequestRow]
    next_cursor: int | None


class ReviewPage(BaseModel):
    """A page of review items."""

    items: list[ReviewRow]
    next_cursor: int | None


class AuditPage(BaseModel):
    """A page of the audit log."""

    items: list[AuditRow]
    next_cursor: int | None


class ReplayIn(BaseModel):
    """Which events to replay: every given field must match; at least one is needed."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(default=None, max_length=200, pattern=r"^[^\x00]*$")
    type: str | None = Field(default=None, max_length=200, pattern=r"^[^\x00]*$")
    status: Literal["pending", "retrying", "done", "dead"] | None = None
    since: datetime | None = None
    dry_run: bool = False


class ReplayOut(BaseModel):
    """How many events were (or, with ``dry_run``, would be) replayed."""

    count: int
    dry_run: bool


class ResolveIn(BaseModel):
    """What was decided about a review item."""

    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=2000, pattern=r"^[^\x00]*\S[^\x00]*$")


class Problem(BaseModel):
    """An error answer."""

    detail: str


TimelineOut = Timeline
OverviewOut = Overview
SourcesOut = list[SourceStatus]
