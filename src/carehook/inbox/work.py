"""The worker's half of the storage port: claim, record steps, finish, retry, replay, purge.

Kept beside :mod:`carehook.inbox.port` (the intake half); every adapter implements both, and
the contract suite runs both against SQLite, PostgreSQL and the in-memory fake.

Rules every adapter keeps:

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
  LOCKED``; SQLite: inside the one writer).
- **Fencing**: ``record_step``, ``complete``, ``fail`` and ``release`` check that ``owner`` still
  holds an unexpired lease, else raise :class:`carehook.errors.LeaseLost` and change nothing.
- **A step and its effects commit together**: the step row (unique per event and name) and
  its timeline entry (and the subject's current state) are one transaction; recording a step
  that is already recorded changes nothing, so a step's database effects happen exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from carehook.workflows import ReviewRequest, TimelineEntry

#: statuses that hold back later events of the same subject
BLOCKING_STATUSES = ("pending", "processing", "retrying")
#: the audit action for a replay
ACTION_REPLAY = "event.replay"
#: the audit action for resolving a review item
ACTION_REVIEW_RESOLVE = "review.resolve"


@dataclass(frozen=True, slots=True)
class Claim:
    """An event a worker now holds, with its payload decrypted (None once purged)."""

    pk: int
    source: str
    vendor: str
    event_id: str
    type: str
    subject: str
    attempt: int
    received_at: datetime
    lease_expires_at: datetime
    payload: bytes | None = field(repr=False)
    #: names of the steps already finished, when the adapter read them with the claim
    #: (None: not read; ask ``finished_steps``). Saves a round trip per event.
    finished: frozenset[str] | None = None
    #: when the vendor says the event happened (read at ingress), if it said
    occurred_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StepRow:
    """A finished step."""

    name: str
    outcome: str
    detail: str
    finished_at: datetime


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One try at an event. ``outcome``: running, done, retrying, dead, released, or expired
    (its lease ran out unfinished, its worker presumably dead, and the event was claimed again).
    ``number`` is the event's attempt count when the try began (a replay starts over at 1)."""

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


class WorkStore(Protocol):
    """The worker's port."""

    async def claim(self, owner: str, limit: int, lease_seconds: float) -> list[Claim]:
        """Claim up to ``limit`` claimable events (oldest first) for ``owner``."""
        ...

    async def extend_leases(
        self, owner: str, pks: Sequence[int], lease_seconds: float
    ) -> set[int]:
        """Push the leases ``owner`` still holds forward; returns the pks still held."""
        ...

    async def release_dead_owners(self, host: str, alive_pids: Sequence[int]) -> int:
        """Expire leases held by owners on ``host`` whose pid is not alive (after a kill -9).

        Owners are ``"<host>:<pid>:<random>"``. Returns how many leases were expired.
        """
        ...

    async def finished_steps(self, pk: int) -> dict[str, StepRow]:
        """The steps of event ``pk`` already finished, by name."""
        ...

    async def record_step(
        self, pk: int, owner: str, name: str, outcome: str, detail: str,
        timeline: TimelineEntry | None, *, data: Mapping[str, object] | None = None,
        review: ReviewRequest | None = None,
    ) -> None:
        """Record a finished step with its timeline entry, the event subject's new working
        ``data`` (replacing it, encrypted) and a review item, atomically (see the module doc)."""
        ...

    async def subject_data(self, subject: str) -> dict[str, object]:
        """A subject's working data, decrypted (``{}`` if it has none)."""
        ...

    async def list_reviews(
        self, status: str | None = "open", limit: int = 100
    ) -> list[ReviewRow]:
        """Review items, newest first (``status`` None: all)."""
        ...

    async def resolve_review(self, review_id: int, actor: str, note: str) -> ReviewRow:
        """Resolve an open review item with ``note``, audited; ReviewError if there is no such
        item or it is already resolved."""
        ...

    async def complete(self, pk: int, owner: str) -> None:
        """Mark the event ``done``, close its attempt, drop the lease."""
        ...

    async def fail(
        self, pk: int, owner: str, error_class: str, message: str, retry_at: datetime | None
    ) -> str:
        """Close the attempt with its error; ``retrying`` at ``retry_at``, or ``dead`` if None."""
        ...

    async def release(self, pk: int, owner: str) -> None:
        """Give the event back unfinished (shutdown): due now, this attempt not counted."""
        ...

    async def replay(self, flt: ReplayFilter, actor: str, *, dry_run: bool = False) -> int:
        """Put matching events (not ``processing``/``unhandled``) back to ``pending``, due now,
        attempts reset, one audit row each; returns how many (would be) replayed."""
        ...

    async def list_steps(self, pk: int) -> list[StepRow]:
        """Every finished step of event ``pk``, in order."""
        ...

    async def list_attempts(self, pk: int) -> list[AttemptRow]:
        """Every attempt at event ``pk``, in order."""
        ...

    async def last_errors(self, pks: Sequence[int]) -> dict[int, AttemptRow]:
        """The last failed attempt of each of ``pks`` (for ``dlq ls``)."""
        ...

    async def timeline(self, subject: str, limit: int = 500) -> list[TimelineRow]:
        """A subject's timeline, oldest first."""
        ...

    async def subject_state(self, subject: str) -> str | None:
        """A subject's current state, or None."""
        ...

    async def purge(
        self, now: datetime, retention_days: Mapping[str, int], default_retention_days: int,
        dedup_days: int,
    ) -> PurgeCounts:
        """Drop payloads past their source's retention and finished events' dedup keys past
        ``dedup_days`` (metadata of purged payloads stays; rows past the dedup window go)."""
        ...

    async def next_due(self) -> datetime | None:
        """When ``claim`` may next find something without a new signal (None: nothing waits).

        The earliest of: the due time of each subject's head that is ``pending``/``retrying``,
        and the lease expiry of each head that is ``processing`` (its worker may be dead). Events
        queued behind their subject's head do not count: they become claimable when the head
        finishes, which signals ``wait_for_work``. The time may be in the past (work is due).
        """
        ...

    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109 (a bounded wait is the contract)
        """Return when new work may be claimable (an accept, replay or release anywhere that
        this store can hear of: in-process for SQLite and the fake, LISTEN/NOTIFY on
        PostgreSQL), or after ``timeout`` seconds. Also signalled: a retry scheduled, dead
        owners' leases expired, and an event finishing while a later one of its subject
        waits. A signal raised while nobody waits is kept for the next wait (at worst a
        spurious wake-up, never a lost one) once this loop has called ``claim`` or waited."""
        ...
