"""The worker's records of the storage port (:class:`carehook.inbox.port.Store`): claims,
steps, attempts, timeline, reviews, and the rules the one implementation keeps.

Rules:

- **Claimable**: status ``pending`` or ``retrying`` with ``next_attempt_at`` due, or status
  ``processing`` whose lease has expired (its worker died) — and the event is the *head of its
  subject*: no event of the same subject with a smaller id is ``pending``, ``processing`` or
  ``retrying``. Ids grow in order of receipt, so events of one subject run in the order
  received, never two at once. ``done``, ``dead`` and ``unhandled`` never block: a dead event
  does not hold its subject hostage (later events go on; replaying the dead one puts it back
  at its place in the order, ahead of anything of its subject still waiting). Nor is an event
  claimable while *another* event of its subject is ``processing`` under an unexpired lease
  (a replayed earlier event, or one whose insert committed late, waits for the one running).
- **Claiming** sets ``processing``, the lease (owner, expiry), ``attempts + 1`` and opens an
  attempt row, atomically; two workers never hold one event (PostgreSQL: ``FOR UPDATE SKIP
  LOCKED``; SQLite: inside the one writer). A payload that cannot be decrypted dead-letters its
  own event (error class ``crypto``) inside the claim; the rest of the batch is returned.
- **Deferring** (``defer``) gives the event back due at a given time, the attempt not counted:
  a planned wait, not a failure.
- **Fencing**: ``record_step``, ``complete``, ``fail`` and ``release`` check that ``owner`` still
  holds an unexpired lease, else raise :class:`carehook.errors.LeaseLost` and change nothing.
- **A step and its effects commit together**: the step row (unique per event and name) and
  its timeline entry (and the subject's current state) are one transaction; recording a step
  that is already recorded changes nothing, so a step's database effects happen exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from carehook.workflows import ReviewRequest, TimelineEntry

#: statuses that hold back later events of the same subject
BLOCKING_STATUSES = ("pending", "processing", "retrying")
#: the audit action for a replay
ACTION_REPLAY = "event.replay"
#: the audit action for resolving a review item
ACTION_REVIEW_RESOLVE = "review.resolve"
#: the audit actions for a dashboard sign-in and sign-out (the detail names the session)
ACTION_SESSION_START = "session.start"
ACTION_SESSION_END = "session.end"
#: the error class of an event whose payload cannot be decrypted
CRYPTO_ERROR = "crypto"


@dataclass(frozen=True, slots=True)
class Claim:
    """An event a worker now holds, with its payload decrypted (None once purged)."""

    pk: int
    source: str
    vendor: str
    event_id: str
    type: str
    subject: str
    #: the event's attempt count with this one (1 on the first try), as ``WorkItem.attempts``
    attempts: int
    received_at: datetime
    lease_expires_at: datetime
    payload: bytes | None = field(repr=False)
    #: names of the steps already finished, read with the claim (no round trip per event)
    finished: frozenset[str] = frozenset()
    #: when the vendor says the event happened (read at ingress), if it said
    occurred_at: datetime | None = None
    #: the subject's working data as the claim found it (one event per subject is claimed at a
    #: time, so it is what the last finished event left); None: not read, ask ``subject_data``
    subject_data: Mapping[str, object] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class StepRecord:
    """A finished step to record (with ``record_step``'s effects), e.g. with ``complete``."""

    name: str
    outcome: str
    detail: str
    timeline: TimelineEntry | None = None
    data: Mapping[str, object] | None = None
    review: ReviewRequest | None = None


@dataclass(frozen=True, slots=True)
class StepRow:
    """A finished step."""

    name: str
    outcome: str
    detail: str
    finished_at: datetime


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One try at an event. ``outcome``: running, done, retrying, dead, released, deferred, or
    expired (its lease ran out unfinished, its worker presumably dead, and the event was
    claimed again). ``number`` is the event's attempt count when the try began (a replay
    starts over at 1)."""

    number: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    error_class: str | None
    error_message: str | None
    next_attempt_at: datetime | None


@dataclass(frozen=True, slots=True)
class TimelineRow:
    """One entry of a subject's status timeline."""

    id: int
    subject: str
    event_pk: int
    type: str
    state: str
    detail: str
    at: datetime


@dataclass(frozen=True, slots=True)
class ReviewRow:
    """An item of the human review queue (``status``: open or resolved)."""

    id: int
    source: str
    subject: str
    event_pk: int | None
    kind: str
    severity: str
    summary: str
    dedup_key: str | None
    status: str
    created_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    note: str | None


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    """Which events to replay: explicit ids, or every event matching all given fields."""

    event_pks: tuple[int, ...] = ()
    source: str | None = None
    type: str | None = None
    status: str | None = None
    since: datetime | None = None


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    """What one purge removed."""

    payloads: int
    dedup_keys: int
    requests: int = 0
    #: ended dashboard sessions past their expiry
    sessions: int = 0
