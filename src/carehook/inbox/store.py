"""The one inbox: intake and work store, written once over SQL for SQLite and PostgreSQL.

Every rule of :mod:`carehook.inbox.work` (who may claim what, per-subject order, leases, steps,
retries, deferrals, replay, purge) is here, once, as shared statements (:mod:`._sql`) run in
transactions by a dialect (``_sqlite.SqliteDialect``: one writer thread with group commit;
``_postgres.PostgresDialect``: pooled connections, ``FOR UPDATE SKIP LOCKED``, advisory locks,
LISTEN/NOTIFY). A transaction is a plain function of a ``tx`` (``rows``/``row``/``run``/
``send``/``many``; ``send`` for a statement whose result is not read, which PostgreSQL's
pipeline mode sends along with the next one that is); a function that raises one of our errors
(``LeaseLost``) does so before it writes (its neighbours in the transaction still commit).

Round trips, per batch of claims: the candidates, one UPDATE, the attempts and the finished
steps, one commit. Per event: ``complete`` records the last step with it (on PostgreSQL three
round trips: the fenced UPDATE, the step, "is a later event waiting", the rest sent along),
one commit.
Timestamps are aware UTC datetimes everywhere; the dialect stores them its way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from carehook.crypto import KeyRing, payload_aad
from carehook.envelope import Envelope, RequestRecord
from carehook.errors import CryptoError, LeaseLost, ReviewError, UnstorableValue
from carehook.inbox import _common as c
from carehook.inbox import _sql as q
from carehook.inbox._reads_sql import SqlReads
from carehook.inbox._signal import WorkSignal
from carehook.inbox.port import ACTION_PAYLOAD_VIEW, AuditRow, EventFilter, EventRow, RequestRow
from carehook.inbox.reads import EventQuery, RateBucket, RequestCount, RequestQuery, SecretUse
from carehook.inbox.work import (
    ACTION_REPLAY,
    ACTION_REVIEW_RESOLVE,
    ACTION_SESSION_END,
    ACTION_SESSION_START,
    CRYPTO_ERROR,
    AttemptRow,
    Claim,
    PurgeCounts,
    ReplayFilter,
    ReviewRow,
    StepRecord,
    StepRow,
    TimelineRow,
)
from carehook.workflows import ReviewRequest, TimelineEntry

T = TypeVar("T")
#: a request retention long enough to mean "kept" for sources without one
_FOREVER_DAYS = 365 * 100


class Dialect(Protocol):
    """What differs between the databases (see ``_sqlite.py`` and ``_postgres.py``)."""

    @property
    def url(self) -> str: ...
    @property
    def commits(self) -> int: ...
    @property
    def hints(self) -> Mapping[str, str]: ...
    @property
    def greatest(self) -> str: ...
    @property
    def share(self) -> str: ...

    def ts(self, value: Any) -> datetime: ...
    async def open(self, signal: WorkSignal) -> None: ...
    async def close(self) -> None: ...
    async def ingest(self, event: tuple[Any, ...] | None, request: tuple[Any, ...]) -> Any: ...
    async def write(self, fn: Callable[[Any], T]) -> T: ...
    async def read(self, fn: Callable[[Any], T]) -> T: ...
    def locked(self, sql: str) -> str: ...
    def wake(self, tx: Any) -> None: ...
    async def wait_for_work(self, signal: WorkSignal, timeout: float) -> None: ...  # noqa: ASYNC109


class SqlStore:
    """The inbox (:class:`carehook.inbox.port.Store`) on one SQL database."""

    def __init__(
        self, dialect: Dialect, keyring: KeyRing, *, clock: Callable[[], datetime] = c.utcnow
    ) -> None:
        self.dialect = dialect
        self.url = dialect.url
        self._d = dialect
        self._keyring = keyring
        self._clock = clock
        self._signal = WorkSignal()
        self._q = q.Statements(dict(dialect.hints), dialect.greatest)
        self._reads = SqlReads(dialect)

    @property
    def commits(self) -> int:
        """Group-commit transactions since open (instrumentation)."""
        return self._d.commits

    def _now(self) -> datetime:
        return c.as_utc(self._clock())

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, check (or migrate) the schema, start the writers."""
        await self._d.open(self._signal)

    async def close(self) -> None:
        """Commit what is queued and release every connection."""
        await self._d.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def ping(self) -> None:
        """Commit a write to the probe row: raise StorageUnavailable unless writes commit."""
        now = self._now()
        await self._d.write(lambda tx: tx.run(q.PROBE, [now]))

    # -- intake ------------------------------------------------------------------------------

    async def accept(self, envelope: Envelope, request: RequestRecord) -> bool:
        """Store the event (encrypted) and its request-log row in the next group commit."""
        e = envelope
        for field in ("source", "vendor", "event_id", "type", "subject"):
            reason = c.unstorable(getattr(e, field))
            if reason is not None:
                raise UnstorableValue(f"{field}: {reason}")
        event = (
            e.source, e.vendor, e.event_id, e.type, e.subject,
            None if e.occurred_at is None else c.as_utc(e.occurred_at), c.as_utc(e.received_at),
            self._keyring.encrypt(e.payload, payload_aad(e.source, e.event_id)), e.secret_index,
            c.initial_status(e.handled), c.as_utc(e.received_at) if e.handled else None,
        )  # fmt: skip
        new: bool = await self._d.ingest(event, _request_row(request, e.event_id))
        if new and e.handled:
            self._signal.notify()
        return new

    async def log_request(self, record: RequestRecord) -> None:
        """Append a request-log row (unstorable text escaped) in the next group commit."""
        await self._d.ingest(None, _request_row(record, None))

    async def list_events(self, flt: EventFilter) -> list[EventRow]:
        """Events matching ``flt``, newest first."""
        where, params = c.event_filter_sql(flt.source, flt.status, flt.type)
        sql = f"SELECT {c.EVENT_COLUMNS} FROM events{where} ORDER BY id DESC LIMIT ?"  # noqa: S608
        rows = await self._d.read(lambda tx: tx.rows(sql, [*params, flt.limit]))
        return [c.event_row(r, self._d.ts) for r in rows]

    async def get_event(self, event_pk: int) -> EventRow | None:
        """One event's metadata, or None."""
        row = await self._d.read(lambda tx: tx.row(q.SELECT_EVENT, [event_pk]))
        return None if row is None else c.event_row(row, self._d.ts)

    async def read_payload(self, event_pk: int, actor: str) -> bytes | None:
        """Decrypt one payload after committing its audit row; None once purged or unknown."""
        row = await self._d.read(lambda tx: tx.row(q.SELECT_PAYLOAD, [event_pk]))
        if row is None or row[2] is None:
            return None
        plaintext = self._keyring.decrypt(bytes(row[2]), payload_aad(row[0], row[1]))
        audit = [self._now(), actor, ACTION_PAYLOAD_VIEW, event_pk, ""]
        await self._d.write(lambda tx: tx.run(q.INSERT_AUDIT, audit))
        return plaintext

    async def list_requests(self, limit: int = 100, source: str | None = None) -> list[RequestRow]:
        """Request-log rows, newest first."""
        where = " WHERE source = ?" if source is not None else ""
        params = [source, limit] if source is not None else [limit]
        sql = f"SELECT {c.REQUEST_COLUMNS} FROM requests{where} ORDER BY id DESC LIMIT ?"  # noqa: S608
        rows = await self._d.read(lambda tx: tx.rows(sql, params))
        return [c.request_row(r, self._d.ts) for r in rows]

    async def list_audit(self, limit: int = 100) -> list[AuditRow]:
        """Audit rows, newest first."""
        rows = await self._d.read(lambda tx: tx.rows(q.SELECT_AUDIT, [limit]))
        return [c.audit_row(r, self._d.ts) for r in rows]

    # -- claiming ----------------------------------------------------------------------------

    async def claim(self, owner: str, limit: int, lease_seconds: float) -> list[Claim]:
        """Claim up to ``limit`` claimable events, oldest first, with their finished steps;
        an undecryptable payload dead-letters its own event (``crypto``) instead."""
        self._signal.register()
        now = self._now()
        expires = now + timedelta(seconds=lease_seconds)
        claims, dead = await self._d.write(
            functools.partial(self._claim_tx, owner, limit, now, expires)
        )
        if dead:
            self._signal.notify()  # events behind a dead-lettered one may run now
        return claims

    def _claim_tx(
        self, owner: str, limit: int, now: datetime, expires: datetime, tx: Any
    ) -> tuple[list[Claim], int]:
        picked = tx.rows(self._d.locked(self._q.pick_expired), [now, now, limit])
        picked += tx.rows(self._d.locked(self._q.pick_due), [now, now, limit])
        chosen = sorted(r[0] for r in picked)[:limit]
        if not chosen:
            return [], 0
        rows = sorted(
            tx.rows(q.ids(self._q.claim, len(chosen)), [owner, expires, now, now, now, *chosen])
        )
        if not rows:
            return [], 0
        pks = [r[0] for r in rows]
        # an attempt still open is one whose worker died with the lease: it expired
        tx.send(q.ids(q.EXPIRE_ATTEMPTS, len(pks)), [now, *pks])
        tx.many(q.OPEN_ATTEMPT, [(r[0], r[6], now) for r in rows])
        finished: dict[int, set[str]] = {}
        for pk, name in tx.rows(q.ids(q.FINISHED_STEPS, len(pks)), pks):
            finished.setdefault(pk, set()).add(name)
        subjects = sorted({r[5] for r in rows})
        blobs = dict(tx.rows(q.ids(q.SUBJECTS_DATA, len(subjects)), subjects))
        claims: list[Claim] = []
        for r in rows:
            claim = self._decrypted(r, expires, frozenset(finished.get(r[0], ())), blobs)
            if claim is None:
                self._dead_letter(tx, r[0], now)
            else:
                claims.append(claim)
        return claims, len(rows) - len(claims)

    def _decrypted(
        self, r: Sequence[Any], expires: datetime, done: frozenset[str], blobs: Mapping[str, Any]
    ) -> Claim | None:
        """The claim of row ``r`` (None: its payload cannot be decrypted), with its subject's
        working data when that decrypts (else the worker asks ``subject_data``, which raises)."""
        try:
            data: Mapping[str, object] | None = c.open_data(self._keyring, r[5], blobs.get(r[5]))
        except (CryptoError, ValueError):
            data = None
        try:
            blob = r[8]
            payload = (
                None
                if blob is None
                else self._keyring.decrypt(bytes(blob), payload_aad(r[1], r[3]))
            )
        except (CryptoError, ValueError):
            return None
        ts = self._d.ts
        return Claim(
            pk=r[0], source=r[1], vendor=r[2], event_id=r[3], type=r[4], subject=r[5],
            attempts=r[6], received_at=ts(r[7]), lease_expires_at=expires, payload=payload,
            finished=done, occurred_at=None if r[9] is None else ts(r[9]), subject_data=data,
        )  # fmt: skip

    def _dead_letter(self, tx: Any, pk: int, now: datetime) -> None:
        message = "the payload cannot be decrypted (key removed or ciphertext damaged)"
        tx.run(q.DEAD_LETTER, [f"{CRYPTO_ERROR}: {message}", pk])
        tx.run(q.CLOSE_ATTEMPT, [now, "dead", CRYPTO_ERROR, message, None, pk])
        self._d.wake(tx)

    async def extend_leases(self, owner: str, pks: Sequence[int], lease_seconds: float) -> set[int]:
        """Push forward the unexpired leases ``owner`` holds; the pks still held."""
        if not pks:
            return set()
        now = self._now()
        params = [now + timedelta(seconds=lease_seconds), *pks, owner, now]
        sql = q.ids(q.EXTEND_LEASES, len(pks)) + " RETURNING id"
        return {r[0] for r in await self._d.write(lambda tx: tx.rows(sql, params))}

    async def release_dead_owners(self, host: str, alive_pids: Sequence[int]) -> int:
        """Expire the live leases of owners on ``host`` whose pid is not alive."""
        now = self._now()

        def run(tx: Any) -> int:
            dead = [r[0] for r in tx.rows(q.LIVE_LEASES, [now])
                    if c.dead_owner(r[1], host, alive_pids)]  # fmt: skip
            if dead:
                tx.run(q.ids(q.EXPIRE_LEASES, len(dead)), [now, *dead])
                self._d.wake(tx)
            return len(dead)

        n: int = await self._d.write(run)
        if n:
            self._signal.notify()
        return n

    # -- steps and outcomes ------------------------------------------------------------------

    async def record_step(
        self, pk: int, owner: str, name: str, outcome: str, detail: str,
        timeline: TimelineEntry | None, *, data: Mapping[str, object] | None = None,
        review: ReviewRequest | None = None,
    ) -> None:  # fmt: skip
        """Record a step, its timeline entry, its subject's state and data and its review item
        in one transaction, once."""
        step = StepRecord(name, outcome, detail, timeline, data, review)
        now = self._now()

        def run(tx: Any) -> None:
            held = tx.row(q.HELD + self._d.share, [pk, owner, now])
            if held is None:
                raise LeaseLost(pk)
            self._step_tx(tx, pk, held, now, step)

        await self._d.write(run)

    def _step_tx(self, tx: Any, pk: int, held: Sequence[Any], now: datetime, s: StepRecord) -> None:
        subject, type_, source = held
        if tx.run(q.INSERT_STEP, [pk, s.name, s.outcome, s.detail, now]) == 0:
            return  # already recorded: its effects were committed with it
        if s.timeline is not None:
            t = s.timeline
            tx.send(q.INSERT_TIMELINE, [t.subject, pk, type_, t.state, t.detail, now])
            tx.send(q.UPSERT_STATE, [t.subject, t.state, now])
        if s.data is not None:
            tx.send(q.UPSERT_DATA, [subject, now, c.seal_data(self._keyring, subject, s.data)])
        if s.review is not None:
            r = s.review
            tx.send(q.INSERT_REVIEW, [source, subject, pk, r.kind, r.severity, r.summary,
                                      r.dedup_key, now])  # fmt: skip

    async def _finish(
        self, pk: int, sql: str, params: list[Any], attempt: tuple[Any, ...], *,
        step: StepRecord | None = None, wake: bool = False,
    ) -> None:  # fmt: skip
        """Run a fenced UPDATE of the event (LeaseLost if it matched nothing), record ``step``,
        close the open attempt, wake the workers if asked or a later event of its subject waits."""
        now = self._now()

        def run(tx: Any) -> bool:
            held = tx.row(sql, params)
            if held is None:
                raise LeaseLost(pk)
            if step is not None:
                self._step_tx(tx, pk, held, now, step)
            tx.send(q.CLOSE_ATTEMPT, [now, *attempt, pk])
            notify = wake or tx.row(self._q.waiting_behind, [held[0], pk]) is not None
            if notify:
                self._d.wake(tx)
            return notify

        if await self._d.write(run):
            self._signal.notify()

    async def complete(self, pk: int, owner: str, step: StepRecord | None = None) -> None:
        """Record ``step`` and mark the event ``done``, close its attempt, drop the lease."""
        await self._finish(pk, q.COMPLETE, [pk, owner, self._now()], ("done", None, None, None),
                           step=step)  # fmt: skip

    async def fail(
        self, pk: int, owner: str, error_class: str, message: str, retry_at: datetime | None
    ) -> str:
        """Close the attempt with its error; ``retrying`` at ``retry_at``, or ``dead``."""
        status = "dead" if retry_at is None else "retrying"
        retry = None if retry_at is None else c.as_utc(retry_at)
        params = [status, retry, f"{error_class}: {message}", pk, owner, self._now()]
        await self._finish(pk, q.FAIL, params, (status, error_class, message, retry),
                           wake=retry is not None)  # fmt: skip
        return status

    async def release(self, pk: int, owner: str) -> None:
        """Give the event back, due now, this attempt not counted."""
        now = self._now()
        await self._finish(pk, q.GIVE_BACK, [now, pk, owner, now],
                           ("released", None, None, None), wake=True)  # fmt: skip

    async def defer(self, pk: int, owner: str, until: datetime) -> None:
        """Give the event back due at ``until``: the attempt not counted, no error."""
        until = c.as_utc(until)
        await self._finish(pk, q.GIVE_BACK, [until, pk, owner, self._now()],
                           ("deferred", None, None, until), wake=True)  # fmt: skip

    async def replay(self, flt: ReplayFilter, actor: str, *, dry_run: bool = False) -> int:
        """Put matching events back to ``pending``, due now, attempts reset; audit each."""
        where, params = c.replay_filter_sql(flt)
        if dry_run:
            sql = f"SELECT count(*) FROM events{where}"  # noqa: S608
            row = await self._d.read(lambda tx: tx.row(sql, params))
            return int(row[0])
        now = self._now()

        def run(tx: Any) -> int:
            chosen = tx.rows(f"SELECT id, status FROM events{where}", params)  # noqa: S608
            if not chosen:
                return 0
            tx.run("UPDATE events SET status = 'pending', attempts = 0, next_attempt_at = ?,"  # noqa: S608
                   " last_error = NULL, lease_owner = NULL, lease_expires_at = NULL" + where,
                   [now, *params])  # fmt: skip
            audit = [(now, actor, ACTION_REPLAY, pk, f"from {status}") for pk, status in chosen]
            tx.many(q.INSERT_AUDIT, audit)
            self._d.wake(tx)
            return len(chosen)

        n: int = await self._d.write(run)
        if n:
            self._signal.notify()
        return n

    # -- workflow data and reviews -----------------------------------------------------------

    async def subject_data(self, subject: str) -> dict[str, object]:
        """A subject's working data, decrypted."""
        sql = "SELECT data FROM subjects WHERE subject = ?"
        row = await self._d.read(lambda tx: tx.row(sql, [subject]))
        return c.open_data(self._keyring, subject, None if row is None else row[0])

    async def list_reviews(self, status: str | None = "open", limit: int = 100) -> list[ReviewRow]:
        """Review items, newest first."""
        where, params = ("", []) if status is None else ("WHERE status = ?", [status])
        sql = f"SELECT {c.REVIEW_COLUMNS} FROM reviews {where} ORDER BY id DESC LIMIT ?"  # noqa: S608
        rows = await self._d.read(lambda tx: tx.rows(sql, [*params, limit]))
        return [c.review_row(r, self._d.ts) for r in rows]

    async def resolve_review(self, review_id: int, actor: str, note: str) -> ReviewRow:
        """Resolve an open item, audited."""
        now = self._now()

        def run(tx: Any) -> Any:
            found = tx.row(q.REVIEW_BY_ID + self._d.share, [review_id])
            if found is None:
                raise ReviewError(f"no review item {review_id}")
            if found[8] != "open":
                raise ReviewError(f"review item {review_id} is already {found[8]}")
            tx.run(q.RESOLVE_REVIEW, [now, actor, note, review_id])
            tx.run(q.INSERT_AUDIT, [now, actor, ACTION_REVIEW_RESOLVE, found[3],
                                    f"review {review_id}"])  # fmt: skip
            return tx.row(q.REVIEW_BY_ID, [review_id])

        return c.review_row(await self._d.write(run), self._d.ts)

    # -- dashboard sessions ------------------------------------------------------------------

    async def start_session(self, session: str, actor: str) -> None:
        """Audit a dashboard sign-in."""
        row = [self._now(), c.storable(actor), ACTION_SESSION_START, None, _session(session)]
        await self._d.write(lambda tx: tx.run(q.INSERT_AUDIT, row))

    async def end_session(self, session: str, expires_at: datetime, actor: str) -> None:
        """Remember an ended dashboard session until it would have expired; audit it."""
        params = [c.storable(session), c.as_utc(expires_at)]
        row = [self._now(), c.storable(actor), ACTION_SESSION_END, None, _session(session)]

        def run(tx: Any) -> None:
            tx.run(q.END_SESSION, params)
            tx.run(q.INSERT_AUDIT, row)

        await self._d.write(run)

    async def session_ended(self, session: str) -> bool:
        """Whether the dashboard session was ended."""
        row = await self._d.read(lambda tx: tx.row(q.SESSION_ENDED, [c.storable(session)]))
        return row is not None

    # -- reads -------------------------------------------------------------------------------

    async def finished_steps(self, pk: int) -> dict[str, StepRow]:
        """The steps of event ``pk`` already finished, by name."""
        return {s.name: s for s in await self.list_steps(pk)}

    async def list_steps(self, pk: int) -> list[StepRow]:
        """Every finished step of event ``pk``, in order."""
        rows = await self._d.read(lambda tx: tx.rows(q.STEPS_OF, [pk]))
        return [c.step_row(r, self._d.ts) for r in rows]

    async def list_attempts(self, pk: int) -> list[AttemptRow]:
        """Every attempt at event ``pk``, in order."""
        rows = await self._d.read(lambda tx: tx.rows(q.ATTEMPTS_OF, [pk]))
        return [c.attempt_row(r, self._d.ts) for r in rows]

    async def last_errors(self, pks: Sequence[int]) -> dict[int, AttemptRow]:
        """The last failed attempt of each of ``pks``."""
        out: dict[int, AttemptRow] = {}
        for i in range(0, len(pks), 500):
            chunk = list(pks[i : i + 500])
            sql = q.ids(q.LAST_ERRORS, len(chunk))
            rows: list[Any] = await self._d.read(functools.partial(_rows, sql, chunk))
            out.update((r[0], c.attempt_row(r[1:], self._d.ts)) for r in rows)
        return out

    async def timeline(self, subject: str, limit: int = 500) -> list[TimelineRow]:
        """The subject's latest ``limit`` timeline entries, oldest first."""
        rows = await self._d.read(lambda tx: tx.rows(q.TIMELINE, [subject, limit]))
        return [c.timeline_row(r, self._d.ts) for r in rows]

    async def subject_state(self, subject: str) -> str | None:
        """A subject's current state, or None."""
        sql = "SELECT state FROM subjects WHERE subject = ?"
        row = await self._d.read(lambda tx: tx.row(sql, [subject]))
        return None if row is None else str(row[0])

    async def next_due(self) -> datetime | None:
        """When ``claim`` may next find something (see the port)."""
        sql = self._q.next_due
        row = await self._d.read(lambda tx: tx.row(sql))
        return None if row is None or not row[0] else self._d.ts(row[0])

    # the port fixes the signature: the timeout is the polling fallback, not a deadline
    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109
        """Return when new work may be claimable, or after ``timeout`` seconds."""
        await self._d.wait_for_work(self._signal, timeout)

    # -- the operator's reads (carehook.inbox.reads) --------------------------------------------

    async def query_events(self, q: EventQuery) -> list[EventRow]:
        """Events matching ``q``, newest first, ids below ``q.before``."""
        return await self._reads.query_events(q)

    async def query_requests(self, q: RequestQuery) -> list[RequestRow]:
        """Request-log rows matching ``q``, newest first."""
        return await self._reads.query_requests(q)

    async def query_reviews(
        self, status: str | None, before: int | None, limit: int
    ) -> list[ReviewRow]:
        """Review items, newest first, ids below ``before``."""
        return await self._reads.query_reviews(status, before, limit)

    async def query_audit(self, before: int | None, limit: int) -> list[AuditRow]:
        """Audit rows, newest first, ids below ``before``."""
        return await self._reads.query_audit(before, limit)

    async def status_counts(self) -> dict[str, int]:
        """Events per status."""
        return await self._reads.status_counts()

    async def oldest_waiting(self) -> datetime | None:
        """The oldest pending or retrying event's receipt time."""
        return await self._reads.oldest_waiting()

    async def last_claim_at(self) -> datetime | None:
        """The newest attempt's start."""
        return await self._reads.last_claim_at()

    async def secret_usage(self) -> list[SecretUse]:
        """Per source and secret index: events verified and the newest one's time."""
        return await self._reads.secret_usage()

    async def rejection_counts(self, since: datetime) -> list[RequestCount]:
        """Rejected request-log rows since ``since`` by source and cause."""
        return await self._reads.rejection_counts(since)

    async def request_rate(self, since: datetime) -> list[RateBucket]:
        """Request-log rows since ``since`` per minute, source and outcome."""
        return await self._reads.request_rate(since)

    # -- retention ---------------------------------------------------------------------------

    async def purge(
        self, now: datetime, retention_days: Mapping[str, int], default_retention_days: int,
        dedup_days: int, request_retention_days: Mapping[str, int] | None = None,
        default_request_retention_days: int | None = None,
    ) -> PurgeCounts:  # fmt: skip
        """Drop finished events' payloads past retention, their rows (steps, attempts) past the
        dedup window, and request-log rows past their request retention; timeline rows and
        reviews stay (see the schema)."""
        now = c.as_utc(now)
        cond, params = c.purge_payloads_sql(now, retention_days, default_retention_days)
        keep_requests = request_retention_days is None and default_request_retention_days is None
        rcond, rparams = c.purge_payloads_sql(
            now, request_retention_days or {}, default_request_retention_days or _FOREVER_DAYS
        )
        cutoff = now - timedelta(days=dedup_days)

        def run(tx: Any) -> PurgeCounts:
            payloads = tx.run(
                "UPDATE events SET payload = NULL, payload_purged_at = ?"  # noqa: S608
                f" WHERE payload IS NOT NULL AND {q.FINISHED} AND {cond}",
                [now, *params],
            )
            keys = tx.run(f"DELETE FROM events WHERE {q.FINISHED} AND received_at < ?", [cutoff])  # noqa: S608
            requests = 0 if keep_requests else tx.run(f"DELETE FROM requests WHERE {rcond}",  # noqa: S608
                                                      rparams)  # fmt: skip
            sessions = tx.run("DELETE FROM admin_sessions_ended WHERE expires_at < ?", [now])
            return PurgeCounts(payloads=payloads, dedup_keys=keys, requests=requests,
                               sessions=sessions)  # fmt: skip

        result: PurgeCounts = await self._d.write(run)
        return result


def _session(session: str) -> str:
    """An audit row's detail for a dashboard session: enough of its id to pair a sign-in with
    its sign-out (a random id the cookie carries; no cookie can be rebuilt from it)."""
    return f"dashboard session {c.storable(session)[:12]}"


def _rows(sql: str, params: list[Any], tx: Any) -> list[Any]:
    return list(tx.rows(sql, params))


def _request_row(r: RequestRecord, default_event_id: str | None) -> tuple[Any, ...]:
    """A request-log row; text the store would refuse is escaped (the row is always written)."""
    event_id = r.event_id if r.event_id is not None else default_event_id
    return (
        c.storable(r.source), c.as_utc(r.received_at), c.storable(r.remote_addr), r.size,
        r.status, r.outcome, c.storable(r.cause),
        None if event_id is None else c.storable(event_id),
    )  # fmt: skip
