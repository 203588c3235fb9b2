"""The worker's half of the in-memory inbox (:class:`carehook.inbox.work.WorkStore`).

Every method runs to completion on the event loop without awaiting in between, so a claim is
as atomic as the real adapters' transactions. Time is the store's injected clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from carehook.crypto import KeyRing
from carehook.errors import LeaseLost, ReviewError
from carehook.inbox import _common as c
from carehook.inbox._signal import WorkSignal
from carehook.inbox.port import EventRow
from carehook.inbox.work import (
    ACTION_REPLAY,
    ACTION_REVIEW_RESOLVE,
    BLOCKING_STATUSES,
    AttemptRow,
    Claim,
    PurgeCounts,
    ReplayFilter,
    ReviewRow,
    StepRow,
    TimelineRow,
)
from carehook.workflows import ReviewRequest, TimelineEntry


@dataclass(slots=True)
class StoredEvent:
    """One event as the in-memory inbox holds it: metadata, encrypted payload, lease."""

    row: EventRow
    ciphertext: bytes | None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    last_error: str | None = None
    payload_purged_at: datetime | None = None


class MemoryWork:
    """The WorkStore methods of :class:`carehook.inbox.memory.InMemoryInbox`."""

    events: dict[int, StoredEvent]
    steps: dict[int, dict[str, StepRow]]
    attempts: dict[int, list[AttemptRow]]
    timeline_rows: list[TimelineRow]
    subjects: dict[str, tuple[str, datetime]]
    subject_blobs: dict[str, bytes]
    reviews: dict[int, ReviewRow]
    _keyring: KeyRing
    _keys: dict[tuple[str, str], int]
    _signal: WorkSignal
    _clock: Callable[[], datetime]

    def _check(self) -> None:
        """Raise StorageUnavailable while the store is set unavailable."""
        raise NotImplementedError

    def _decrypt(self, stored: StoredEvent) -> bytes | None:
        """The plaintext payload, None once purged."""
        raise NotImplementedError

    def _audit(self, actor: str, action: str, event_pk: int | None, detail: str) -> None:
        """Append an audit row."""
        raise NotImplementedError

    def _now(self) -> datetime:
        return c.as_utc(self._clock())

    # -- claiming ----------------------------------------------------------------------

    def _heads(self) -> Iterator[StoredEvent]:
        """The first blocking event of each subject, in id order."""
        seen: set[str] = set()
        for s in self.events.values():  # insertion order is id order
            if s.row.status in BLOCKING_STATUSES and s.row.subject not in seen:
                seen.add(s.row.subject)
                yield s

    def _live(self, s: StoredEvent, now: datetime) -> bool:
        exp = s.lease_expires_at
        return s.row.status == "processing" and exp is not None and exp > now

    def _due_at(self, s: StoredEvent) -> datetime:
        """When a blocking event becomes claimable, judged on itself alone."""
        if s.row.status == "processing":
            return s.lease_expires_at or s.row.received_at
        return s.row.next_attempt_at or s.row.received_at

    def _running_until(self, subject: str, now: datetime) -> datetime | None:
        """The latest unexpired lease among the subject's processing events, if any."""
        leases = [
            s.lease_expires_at
            for s in self.events.values()
            if s.row.subject == subject and self._live(s, now) and s.lease_expires_at
        ]
        return max(leases, default=None)

    async def claim(self, owner: str, limit: int, lease_seconds: float) -> list[Claim]:
        """Claim up to ``limit`` subject heads that are due, oldest first."""
        self._check()
        self._signal.register()
        now = self._now()
        expires = now + timedelta(seconds=lease_seconds)
        claims: list[Claim] = []
        for s in list(self._heads()):
            if len(claims) >= limit:
                break
            if self._due_at(s) > now or self._live(s, now):
                continue
            if self._running_until(s.row.subject, now) is not None:
                continue  # another event of the subject runs under a live lease
            claims.append(self._take(s, owner, now, expires))
        return claims

    def _take(self, s: StoredEvent, owner: str, now: datetime, expires: datetime) -> Claim:
        pk = s.row.id
        attempts = self.attempts.setdefault(pk, [])
        if attempts and attempts[-1].outcome == "running":  # its worker's lease ran out
            attempts[-1] = replace(attempts[-1], finished_at=now, outcome="expired")
        number = s.row.attempts + 1
        s.row = replace(s.row, status="processing", attempts=number)
        s.lease_owner, s.lease_expires_at = owner, expires
        attempts.append(AttemptRow(number, now, None, "running", None, None, None))
        r = s.row
        return Claim(
            pk=pk,
            source=r.source,
            vendor=r.vendor,
            event_id=r.event_id,
            type=r.type,
            subject=r.subject,
            attempt=number,
            received_at=r.received_at,
            lease_expires_at=expires,
            payload=self._decrypt(s),
            occurred_at=r.occurred_at,
        )

    async def extend_leases(self, owner: str, pks: Sequence[int], lease_seconds: float) -> set[int]:
        """Push forward the unexpired leases ``owner`` holds; the pks still held."""
        self._check()
        now = self._now()
        held: set[int] = set()
        for pk in pks:
            s = self.events.get(pk)
            if s is not None and s.lease_owner == owner and self._live(s, now):
                s.lease_expires_at = now + timedelta(seconds=lease_seconds)
                held.add(pk)
        return held

    async def release_dead_owners(self, host: str, alive_pids: Sequence[int]) -> int:
        """Expire the live leases of owners on ``host`` whose pid is not in ``alive_pids``."""
        self._check()
        now = self._now()
        n = 0
        for s in self.events.values():
            if self._live(s, now) and c.dead_owner(s.lease_owner, host, alive_pids):
                s.lease_expires_at = now
                n += 1
        if n:
            self._signal.notify()
        return n

    def _held(self, pk: int, owner: str, now: datetime) -> StoredEvent:
        s = self.events.get(pk)
        if s is None or s.lease_owner != owner or not self._live(s, now):
            raise LeaseLost(pk)
        return s

    # -- steps and outcomes ------------------------------------------------------------

    async def finished_steps(self, pk: int) -> dict[str, StepRow]:
        """The steps of event ``pk`` already finished, by name."""
        return dict(self.steps.get(pk, {}))

    async def record_step(
        self,
        pk: int,
        owner: str,
        name: str,
        outcome: str,
        detail: str,
        timeline: TimelineEntry | None,
        *,
        data: Mapping[str, object] | None = None,
        review: ReviewRequest | None = None,
    ) -> None:
        """Record a step, its timeline entry, its subject's state and data and its review item
        together, once."""
        self._check()
        now = self._now()
        s = self._held(pk, owner, now)
        steps = self.steps.setdefault(pk, {})
        if name in steps:
            return
        steps[name] = StepRow(name, outcome, detail, now)
        if timeline is not None:
            row = TimelineRow(
                id=len(self.timeline_rows) + 1,
                subject=timeline.subject,
                event_pk=pk,
                type=s.row.type,
                state=timeline.state,
                detail=timeline.detail,
                at=now,
            )
            self.timeline_rows.append(row)
            self.subjects[timeline.subject] = (timeline.state, now)
        if data is not None:
            subject = s.row.subject
            self.subject_blobs[subject] = c.seal_data(self._keyring, subject, data)
            if subject not in self.subjects:
                self.subjects[subject] = ("", now)
        if review is not None:
            self._open_review(s, review, now)

    def _open_review(self, s: StoredEvent, review: ReviewRequest, now: datetime) -> None:
        self.reviews[len(self.reviews) + 1] = ReviewRow(
            id=len(self.reviews) + 1, source=s.row.source, subject=s.row.subject,
            event_pk=s.row.id, kind=review.kind, severity=review.severity,
            summary=review.summary, dedup_key=review.dedup_key, status="open",
            created_at=now, resolved_at=None, resolved_by=None, note=None,
        )  # fmt: skip

    async def subject_data(self, subject: str) -> dict[str, object]:
        """A subject's working data, decrypted."""
        self._check()
        return c.open_data(self._keyring, subject, self.subject_blobs.get(subject))

    async def list_reviews(
        self, status: str | None = "open", limit: int = 100
    ) -> list[ReviewRow]:
        """Review items, newest first."""
        rows = [r for r in reversed(self.reviews.values()) if status is None or r.status == status]
        return rows[:limit]

    async def resolve_review(self, review_id: int, actor: str, note: str) -> ReviewRow:
        """Resolve an open item, audited."""
        self._check()
        row = self.reviews.get(review_id)
        if row is None:
            raise ReviewError(f"no review item {review_id}")
        if row.status != "open":
            raise ReviewError(f"review item {review_id} is already {row.status}")
        done = replace(row, status="resolved", resolved_at=self._now(), resolved_by=actor,
                       note=note)  # fmt: skip
        self.reviews[review_id] = done
        self._audit(actor, ACTION_REVIEW_RESOLVE, row.event_pk, f"review {review_id}")
        return done

    def _close_attempt(
        self,
        pk: int,
        now: datetime,
        outcome: str,
        error: tuple[str, str] | None = None,
        next_at: datetime | None = None,
    ) -> None:
        attempts = self.attempts.get(pk)
        if attempts and attempts[-1].finished_at is None:
            attempts[-1] = replace(
                attempts[-1],
                finished_at=now,
                outcome=outcome,
                error_class=None if error is None else error[0],
                error_message=None if error is None else error[1],
                next_attempt_at=next_at,
            )

    def _finish(self, s: StoredEvent, status: str, next_at: datetime | None, attempts: int) -> None:
        s.row = replace(s.row, status=status, next_attempt_at=next_at, attempts=attempts)
        s.lease_owner = s.lease_expires_at = None

    def _waiting_behind(self, s: StoredEvent) -> bool:
        """True when a later event of the subject waits for this one to finish."""
        return any(
            o.row.subject == s.row.subject
            and o.row.id > s.row.id
            and o.row.status != "processing"
            and o.row.status in BLOCKING_STATUSES
            for o in self.events.values()
        )

    async def complete(self, pk: int, owner: str) -> None:
        """Mark the event ``done``, close its attempt, drop the lease."""
        self._check()
        now = self._now()
        s = self._held(pk, owner, now)
        self._close_attempt(pk, now, "done")
        self._finish(s, "done", None, s.row.attempts)
        if self._waiting_behind(s):
            self._signal.notify()

    async def fail(
        self, pk: int, owner: str, error_class: str, message: str, retry_at: datetime | None
    ) -> str:
        """Close the attempt with its error; ``retrying`` at ``retry_at``, or ``dead``."""
        self._check()
        now = self._now()
        s = self._held(pk, owner, now)
        status = "dead" if retry_at is None else "retrying"
        next_at = None if retry_at is None else c.as_utc(retry_at)
        self._close_attempt(pk, now, status, (error_class, message), next_at)
        self._finish(s, status, next_at, s.row.attempts)
        s.last_error = f"{error_class}: {message}"
        if status == "retrying" or self._waiting_behind(s):
            self._signal.notify()
        return status

    async def release(self, pk: int, owner: str) -> None:
        """Give the event back, due now, this attempt not counted."""
        self._check()
        now = self._now()
        s = self._held(pk, owner, now)
        self._close_attempt(pk, now, "released")
        attempts = max(s.row.attempts - 1, 0)
        self._finish(s, "retrying" if attempts else "pending", now, attempts)
        self._signal.notify()

    async def replay(self, flt: ReplayFilter, actor: str, *, dry_run: bool = False) -> int:
        """Put matching finished or retrying events back to ``pending``, due now; audit each."""
        self._check()
        now = self._now()
        chosen = [s for s in self.events.values() if _replay_matches(s.row, flt)]
        if dry_run:
            return len(chosen)
        for s in chosen:
            self._audit(actor, ACTION_REPLAY, s.row.id, f"from {s.row.status}")
            self._finish(s, "pending", now, 0)
            s.last_error = None
        if chosen:
            self._signal.notify()
        return len(chosen)

    # -- reads -------------------------------------------------------------------------

    async def list_steps(self, pk: int) -> list[StepRow]:
        """Every finished step of event ``pk``, in order."""
        return list(self.steps.get(pk, {}).values())

    async def list_attempts(self, pk: int) -> list[AttemptRow]:
        """Every attempt at event ``pk``, in order."""
        return list(self.attempts.get(pk, []))

    async def last_errors(self, pks: Sequence[int]) -> dict[int, AttemptRow]:
        """The last failed attempt of each of ``pks``."""
        out: dict[int, AttemptRow] = {}
        for pk in pks:
            failed = [a for a in self.attempts.get(pk, []) if a.error_class is not None]
            if failed:
                out[pk] = failed[-1]
        return out

    async def timeline(self, subject: str, limit: int = 500) -> list[TimelineRow]:
        """The subject's latest ``limit`` timeline entries, oldest first."""
        rows = [r for r in self.timeline_rows if r.subject == subject]
        return rows[-limit:] if limit > 0 else []

    async def subject_state(self, subject: str) -> str | None:
        """A subject's current state, or None."""
        entry = self.subjects.get(subject)
        return None if entry is None else entry[0]

    async def next_due(self) -> datetime | None:
        """When ``claim`` may next find something (see the port)."""
        now = self._now()
        times: list[datetime] = []
        for s in self._heads():
            due = self._due_at(s)
            others = [
                o.lease_expires_at
                for o in self.events.values()
                if o is not s
                and o.row.subject == s.row.subject
                and o.lease_expires_at
                and self._live(o, now)
            ]
            times.append(max([due, *others]))
        return min(times, default=None)

    # the port fixes the signature: the timeout is the polling fallback, not a deadline
    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109
        """Return when this store signals new work, or after ``timeout`` seconds."""
        await self._signal.wait(timeout)

    # -- retention ---------------------------------------------------------------------------

    async def purge(
        self,
        now: datetime,
        retention_days: Mapping[str, int],
        default_retention_days: int,
        dedup_days: int,
    ) -> PurgeCounts:
        """Drop finished events' payloads past retention, and their rows past the dedup window.

        Timeline rows stay: they are the subject's history, not the event's.
        """
        self._check()
        now = c.as_utc(now)
        payloads = 0
        for s in self.events.values():
            days = retention_days.get(s.row.source, default_retention_days)
            if (
                s.ciphertext is not None
                and s.row.status in c.FINISHED_STATUSES
                and s.row.received_at < now - timedelta(days=days)
            ):
                s.ciphertext, s.payload_purged_at = None, now
                s.row = replace(s.row, payload_purged=True)
                payloads += 1
        cutoff = now - timedelta(days=dedup_days)
        gone = [
            pk
            for pk, s in self.events.items()
            if s.row.status in c.FINISHED_STATUSES and s.row.received_at < cutoff
        ]
        for pk in gone:
            s = self.events.pop(pk)
            self._keys.pop((s.row.source, s.row.event_id), None)
            self.steps.pop(pk, None)
            self.attempts.pop(pk, None)
        return PurgeCounts(payloads=payloads, dedup_keys=len(gone))


def _replay_matches(row: EventRow, flt: ReplayFilter) -> bool:
    """True when a replay by ``flt`` takes this event."""
    return (
        row.status not in c.NOT_REPLAYABLE
        and (not flt.event_pks or row.id in flt.event_pks)
        and (flt.source is None or row.source == flt.source)
        and (flt.type is None or row.type == flt.type)
        and (flt.status is None or row.status == flt.status)
        and (flt.since is None or row.received_at >= c.as_utc(flt.since))
    )
