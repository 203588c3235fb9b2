"""The worker's half of the PostgreSQL inbox (:class:`carehook.inbox.work.WorkStore`).

Any number of worker processes on any number of machines share one database. Every write is a
single transaction on a pooled connection; time is the store's clock, passed in as ``now``.

Why a claim can never give one event to two workers, nor run two events of one subject at once
-----------------------------------------------------------------------------------------------
A claim is one transaction of two statements:

1. ``_LOCK_HEADS`` picks each subject's head that is due (the head-of-subject rule of
   :mod:`carehook.inbox.work`), oldest first, ``FOR UPDATE OF e SKIP LOCKED``, and keeps those
   whose subject it can take a transaction-scoped advisory lock on
   (``pg_try_advisory_xact_lock``, never waiting).
2. ``_CLAIM`` sets those events ``processing`` after checking the rule *again*.

Same event: the row lock is held from (1) to COMMIT and SKIP LOCKED passes over rows locked by
another claim; a row that another claim already committed is re-read by PostgreSQL under
``FOR UPDATE`` (READ COMMITTED re-checks the WHERE on the newest row version), and is then
``processing`` under a live lease, so not claimable. Fenced writes (complete, fail, record_step)
lock the same row first, so a lease is taken over or finished, never both.

Same subject: a single statement is not enough. Its snapshot is taken when it starts, so two
claims running side by side can each see the *other's* event as not yet running — e.g. a replay
or a late-committing insert makes an earlier event of the subject pending between the two
snapshots, and one claim takes that event while the other takes the later one. Hence the
advisory lock: claims of one subject are serialised from (1) to COMMIT, and statement (2) takes
a fresh snapshot *after* the lock was granted. PostgreSQL makes a transaction visible before it
releases its locks, so (2) sees every earlier claim of the subject, and refuses an event while
another event of its subject is ``processing`` under a live lease or an earlier one is still
unfinished. Only a claim ever sets ``processing``. (Two subjects whose hashes collide merely
take turns.)
"""

# S608 is off for this module: its SQL is built from constant fragments and placeholder counts
# only; every value is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any, Final

import psycopg

from carehook.crypto import KeyRing
from carehook.errors import LeaseLost, ReviewError
from carehook.inbox import _common as c
from carehook.inbox._signal import WorkSignal
from carehook.inbox.work import (
    ACTION_REPLAY,
    ACTION_REVIEW_RESOLVE,
    AttemptRow,
    Claim,
    PurgeCounts,
    ReplayFilter,
    ReviewRow,
    StepRow,
    TimelineRow,
)
from carehook.workflows import ReviewRequest, TimelineEntry

#: the LISTEN/NOTIFY channel of "there may be work"
CHANNEL: Final = "carehook_work"
NOTIFY: Final = f"pg_notify('{CHANNEL}', '')"
#: first key of our advisory locks ("care"), the second is the subject's hash
_LOCK_SPACE: Final = 0x63617265

_ACTIVE: Final = "status IN ('pending', 'processing', 'retrying')"
_FINISHED: Final = "status IN ('done', 'dead', 'unhandled')"
_DUE: Final = """((e.status IN ('pending', 'retrying') AND e.next_attempt_at <= %(now)s)
       OR (e.status = 'processing' AND e.lease_expires_at <= %(now)s))"""
#: the caller holds the event: processing, its lease, unexpired
_FENCE: Final = "status = 'processing' AND lease_owner = %(owner)s AND lease_expires_at > %(now)s"
_HEADS: Final = f"SELECT min(id) AS id FROM events WHERE {_ACTIVE} GROUP BY subject"

_LOCK_HEADS: Final = f"""
WITH cand AS MATERIALIZED (
  SELECT e.id, e.subject FROM ({_HEADS}) AS h JOIN events AS e ON e.id = h.id
  WHERE {_DUE}
    AND NOT EXISTS (SELECT 1 FROM events AS b WHERE b.subject = e.subject AND b.id > e.id
                    AND b.{_ACTIVE} AND b.status = 'processing'
                    AND b.lease_expires_at > %(now)s)
  ORDER BY e.id LIMIT %(limit)s
  FOR UPDATE OF e SKIP LOCKED
)
SELECT id FROM cand WHERE pg_try_advisory_xact_lock({_LOCK_SPACE}, hashtext(subject))
ORDER BY id
"""
_CLAIM: Final = f"""
WITH taken AS (
  UPDATE events AS e SET status = 'processing', lease_owner = %(owner)s,
         lease_expires_at = %(expires)s, attempts = e.attempts + 1
  WHERE e.id = ANY(%(ids)s) AND {_DUE}
    AND NOT EXISTS (SELECT 1 FROM events AS b WHERE b.subject = e.subject AND b.id <> e.id
                    AND b.{_ACTIVE} AND (b.id < e.id OR (b.status = 'processing'
                                                         AND b.lease_expires_at > %(now)s)))
  RETURNING e.id, e.source, e.vendor, e.event_id, e.type, e.subject, e.attempts,
            e.received_at, e.payload, e.occurred_at
), expired AS (
  UPDATE attempts SET finished_at = %(now)s, outcome = 'expired'
  WHERE finished_at IS NULL AND event_pk IN (SELECT id FROM taken)
), opened AS (
  INSERT INTO attempts (event_pk, number, started_at, outcome)
  SELECT id, attempts, %(now)s, 'running' FROM taken
)
SELECT * FROM taken ORDER BY id
"""
# Notifies (delivered at COMMIT) when asked to, or when a later event of the finished one's
# subject waits for it. CASE fixes the order: the planner may reorder AND-ed quals by cost.
_WAKE_BEHIND: Final = f"""
SELECT count(*) FROM done_ev AS d
WHERE CASE WHEN %(wake)s OR EXISTS (SELECT 1 FROM events AS b
                                    WHERE b.subject = d.subject AND b.id > d.id
                                    AND b.{_ACTIVE} AND b.status <> 'processing')
           THEN {NOTIFY}::text IS NOT NULL ELSE false END
"""
_CLOSE_ATTEMPT: Final = """
closed AS (
  UPDATE attempts SET finished_at = %(now)s, outcome = %(outcome)s, error_class = %(eclass)s,
         error_message = %(emsg)s, next_attempt_at = %(retry)s
  WHERE finished_at IS NULL AND event_pk IN (SELECT id FROM done_ev)
)"""
_COMPLETE: Final = f"""
WITH done_ev AS (
  UPDATE events SET status = 'done', next_attempt_at = NULL, lease_owner = NULL,
         lease_expires_at = NULL
  WHERE id = %(pk)s AND {_FENCE} RETURNING id, subject
), {_CLOSE_ATTEMPT}
SELECT (SELECT count(*) FROM done_ev), ({_WAKE_BEHIND})
"""
_FAIL: Final = f"""
WITH done_ev AS (
  UPDATE events SET status = %(outcome)s, next_attempt_at = %(retry)s, last_error = %(last)s,
         lease_owner = NULL, lease_expires_at = NULL
  WHERE id = %(pk)s AND {_FENCE} RETURNING id, subject
), {_CLOSE_ATTEMPT}
SELECT (SELECT count(*) FROM done_ev), ({_WAKE_BEHIND})
"""
_RELEASE: Final = f"""
WITH done_ev AS (
  UPDATE events SET status = CASE WHEN attempts > 1 THEN 'retrying' ELSE 'pending' END,
         attempts = GREATEST(attempts - 1, 0), next_attempt_at = %(now)s, lease_owner = NULL,
         lease_expires_at = NULL
  WHERE id = %(pk)s AND {_FENCE} RETURNING id, subject
), {_CLOSE_ATTEMPT}
SELECT (SELECT count(*) FROM done_ev), ({_WAKE_BEHIND})
"""
_RECORD_STEP: Final = f"""
WITH ev AS (
  SELECT id, type, source, subject FROM events WHERE id = %(pk)s AND {_FENCE} FOR SHARE
), step AS (
  INSERT INTO steps (event_pk, name, outcome, result, finished_at)
  SELECT id, %(name)s, %(outcome)s, %(detail)s, %(now)s FROM ev
  ON CONFLICT (event_pk, name) DO NOTHING RETURNING event_pk
), line AS (
  INSERT INTO timeline (subject, event_pk, type, state, detail, at)
  SELECT %(subject)s, ev.id, ev.type, %(state)s, %(tdetail)s, %(now)s
  FROM ev JOIN step ON step.event_pk = ev.id WHERE %(has_line)s
), subject AS (
  INSERT INTO subjects (subject, state, updated_at)
  SELECT %(subject)s, %(state)s, %(now)s FROM step WHERE %(has_line)s
  ON CONFLICT (subject) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at
)
SELECT ev.source, ev.subject, (SELECT count(*) FROM step) FROM ev
"""
_UPSERT_DATA: Final = """
INSERT INTO subjects (subject, state, updated_at, data) VALUES (%s, '', %s, %s)
ON CONFLICT (subject) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at
"""
_INSERT_REVIEW: Final = """
INSERT INTO reviews (source, subject, event_pk, kind, severity, summary, dedup_key, status,
                     created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, 'open', %s)
"""
_RESOLVE_REVIEW: Final = f"""
WITH r AS (
  UPDATE reviews SET status = 'resolved', resolved_at = %(now)s, resolved_by = %(actor)s,
         note = %(note)s
  WHERE id = %(id)s AND status = 'open' RETURNING {c.REVIEW_COLUMNS}
), a AS (
  INSERT INTO audit (at, actor, action, event_pk, detail)
  SELECT %(now)s, %(actor)s, %(action)s, r.event_pk, 'review ' || r.id FROM r
)
SELECT {c.REVIEW_COLUMNS} FROM r
"""
_NEXT_DUE: Final = f"""
SELECT min(GREATEST(CASE WHEN e.status = 'processing' THEN e.lease_expires_at
                         ELSE e.next_attempt_at END,
                    (SELECT max(b.lease_expires_at) FROM events AS b
                     WHERE b.subject = e.subject AND b.id > e.id AND b.{_ACTIVE}
                     AND b.status = 'processing')))
FROM ({_HEADS}) AS h JOIN events AS e ON e.id = h.id
"""
_LIVE_LEASES: Final = (
    "SELECT id, lease_owner FROM events WHERE status = 'processing' AND lease_expires_at > %s"
)
_EXPIRE_OWNERS: Final = """
UPDATE events SET lease_expires_at = %s
FROM unnest(%s::bigint[], %s::text[]) AS d(id, owner)
WHERE events.id = d.id AND events.lease_owner = d.owner AND events.status = 'processing'
  AND events.lease_expires_at > %s
"""


class PostgresWork:
    """The WorkStore methods of :class:`carehook.inbox.postgres.PostgresInbox`."""

    _keyring: KeyRing
    _clock: Callable[[], datetime]
    _signal: WorkSignal
    _conninfo: str
    _listener: asyncio.Task[None] | None
    _listening: asyncio.Event | None

    def _tx(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        """A pooled connection in one transaction (committed on success), errors translated."""
        raise NotImplementedError

    async def _fetch(self, sql: str, params: tuple[Any, ...] | list[Any]) -> list[tuple[Any, ...]]:
        """Rows of one query."""
        raise NotImplementedError

    def _now(self) -> datetime:
        return c.as_utc(self._clock())

    # -- claiming ----------------------------------------------------------------------------

    async def claim(self, owner: str, limit: int, lease_seconds: float) -> list[Claim]:
        """Claim up to ``limit`` claimable events, oldest first (see the module doc)."""
        self._signal.register()
        self._start_listener()
        now = self._now()
        expires = now + timedelta(seconds=lease_seconds)
        params = {"now": now, "limit": limit, "owner": owner, "expires": expires}
        async with self._tx() as conn:
            cur = await conn.execute(_LOCK_HEADS, params)
            ids = [r[0] for r in await cur.fetchall()]
            if not ids:
                return []
            cur = await conn.execute(_CLAIM, {**params, "ids": ids})
            rows = await cur.fetchall()
        return [c.claim_of(r, c.as_utc, expires, self._keyring) for r in rows]

    async def extend_leases(self, owner: str, pks: Sequence[int], lease_seconds: float) -> set[int]:
        """Push forward the unexpired leases ``owner`` holds; the pks still held."""
        if not pks:
            return set()
        now = self._now()
        sql = (
            "UPDATE events SET lease_expires_at = %(expires)s"
            f" WHERE id = ANY(%(pks)s) AND {_FENCE} RETURNING id"
        )
        params = {
            "expires": now + timedelta(seconds=lease_seconds),
            "pks": list(pks),
            "owner": owner,
            "now": now,
        }
        async with self._tx() as conn:
            cur = await conn.execute(sql, params)
            return {r[0] for r in await cur.fetchall()}

    async def release_dead_owners(self, host: str, alive_pids: Sequence[int]) -> int:
        """Expire the live leases of owners on ``host`` whose pid is not alive."""
        now = self._now()
        async with self._tx() as conn:
            cur = await conn.execute(_LIVE_LEASES, (now,))
            dead = [
                (pk, owner)
                for pk, owner in await cur.fetchall()
                if c.dead_owner(owner, host, alive_pids)
            ]
            if not dead:
                return 0
            ids, owners = [d[0] for d in dead], [d[1] for d in dead]
            cur = await conn.execute(_EXPIRE_OWNERS, (now, ids, owners, now))
            n = cur.rowcount
            if n:
                await conn.execute(f"SELECT {NOTIFY}")
        return n

    # -- steps and outcomes ------------------------------------------------------------------

    async def finished_steps(self, pk: int) -> dict[str, StepRow]:
        """The steps of event ``pk`` already finished, by name."""
        return {s.name: s for s in await self.list_steps(pk)}

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
        """Record a step, its timeline entry and its subject's state in one statement, once;
        the subject's data and a review item follow in the same transaction."""
        t = timeline
        now = self._now()
        params = {
            "pk": pk,
            "owner": owner,
            "now": now,
            "name": name,
            "outcome": outcome,
            "detail": detail,
            "has_line": t is not None,
            "subject": t.subject if t else "",
            "state": t.state if t else "",
            "tdetail": t.detail if t else "",
        }
        async with self._tx() as conn:
            cur = await conn.execute(_RECORD_STEP, params)
            row = await cur.fetchone()
            if row is None:
                raise LeaseLost(pk)
            source, subject, new = row
            if not new:
                return  # already recorded: its effects were committed with it
            if data is not None:
                blob = c.seal_data(self._keyring, subject, data)
                await conn.execute(_UPSERT_DATA, (subject, now, blob))
            if review is not None:
                r = review
                await conn.execute(_INSERT_REVIEW, (source, subject, pk, r.kind, r.severity,
                                                    r.summary, r.dedup_key, now))  # fmt: skip

    async def subject_data(self, subject: str) -> dict[str, object]:
        """A subject's working data, decrypted."""
        rows = await self._fetch("SELECT data FROM subjects WHERE subject = %s", (subject,))
        return c.open_data(self._keyring, subject, rows[0][0] if rows else None)

    async def list_reviews(
        self, status: str | None = "open", limit: int = 100
    ) -> list[ReviewRow]:
        """Review items, newest first."""
        where, params = ("", ()) if status is None else ("WHERE status = %s", (status,))
        sql = f"SELECT {c.REVIEW_COLUMNS} FROM reviews {where} ORDER BY id DESC LIMIT %s"
        return [c.review_row(r, c.as_utc) for r in await self._fetch(sql, (*params, limit))]

    async def resolve_review(self, review_id: int, actor: str, note: str) -> ReviewRow:
        """Resolve an open item, audited, in one statement."""
        params = {"now": self._now(), "actor": actor, "note": note, "id": review_id,
                  "action": ACTION_REVIEW_RESOLVE}  # fmt: skip
        async with self._tx() as conn:
            cur = await conn.execute(_RESOLVE_REVIEW, params)
            row = await cur.fetchone()
        if row is not None:
            return c.review_row(row, c.as_utc)
        found = await self._fetch("SELECT status FROM reviews WHERE id = %s", (review_id,))
        if not found:
            raise ReviewError(f"no review item {review_id}")
        raise ReviewError(f"review item {review_id} is already {found[0][0]}")

    async def _finish(self, sql: str, pk: int, owner: str, **extra: Any) -> None:
        params = {
            "pk": pk,
            "owner": owner,
            "now": self._now(),
            "eclass": None,
            "emsg": None,
            "retry": None,
            "wake": False,
            **extra,
        }
        async with self._tx() as conn:
            cur = await conn.execute(sql, params)
            row = await cur.fetchone()
            if row is None or row[0] == 0:
                raise LeaseLost(pk)

    async def complete(self, pk: int, owner: str) -> None:
        """Mark the event ``done``, close its attempt, drop the lease."""
        await self._finish(_COMPLETE, pk, owner, outcome="done")

    async def fail(
        self, pk: int, owner: str, error_class: str, message: str, retry_at: datetime | None
    ) -> str:
        """Close the attempt with its error; ``retrying`` at ``retry_at``, or ``dead``."""
        status = "dead" if retry_at is None else "retrying"
        await self._finish(
            _FAIL,
            pk,
            owner,
            outcome=status,
            eclass=error_class,
            emsg=message,
            retry=None if retry_at is None else c.as_utc(retry_at),
            last=f"{error_class}: {message}",
            wake=retry_at is not None,
        )
        return status

    async def release(self, pk: int, owner: str) -> None:
        """Give the event back, due now, this attempt not counted."""
        await self._finish(_RELEASE, pk, owner, outcome="released", wake=True)

    async def replay(self, flt: ReplayFilter, actor: str, *, dry_run: bool = False) -> int:
        """Put matching events back to ``pending``, due now, attempts reset; audit each."""
        where, params = c.replay_filter_sql(flt, "%s", c.as_utc)
        if dry_run:
            rows = await self._fetch(f"SELECT count(*) FROM events{where}", params)
            return int(rows[0][0])
        now = self._now()
        sql = f"""
        WITH chosen AS (SELECT id, status FROM events{where} FOR UPDATE),
        reset AS (
          UPDATE events AS e SET status = 'pending', attempts = 0, next_attempt_at = %s,
                 last_error = NULL, lease_owner = NULL, lease_expires_at = NULL
          FROM chosen WHERE e.id = chosen.id
        ), audited AS (
          INSERT INTO audit (at, actor, action, event_pk, detail)
          SELECT %s, %s, %s, id, 'from ' || status FROM chosen
        )
        SELECT count(*) FROM chosen
        """
        async with self._tx() as conn:
            cur = await conn.execute(sql, [*params, now, now, actor, ACTION_REPLAY])
            row = await cur.fetchone()
            n = 0 if row is None else int(row[0])
            if n:
                await conn.execute(f"SELECT {NOTIFY}")
        return n

    # -- reads -------------------------------------------------------------------------------

    async def list_steps(self, pk: int) -> list[StepRow]:
        """Every finished step of event ``pk``, in order."""
        sql = f"SELECT {c.STEP_COLUMNS} FROM steps WHERE event_pk = %s ORDER BY id"
        return [c.step_row(r, c.as_utc) for r in await self._fetch(sql, (pk,))]

    async def list_attempts(self, pk: int) -> list[AttemptRow]:
        """Every attempt at event ``pk``, in order."""
        sql = f"SELECT {c.ATTEMPT_COLUMNS} FROM attempts WHERE event_pk = %s ORDER BY id"
        return [c.attempt_row(r, c.as_utc) for r in await self._fetch(sql, (pk,))]

    async def last_errors(self, pks: Sequence[int]) -> dict[int, AttemptRow]:
        """The last failed attempt of each of ``pks``."""
        sql = (
            f"SELECT DISTINCT ON (event_pk) event_pk, {c.ATTEMPT_COLUMNS} FROM attempts"
            " WHERE event_pk = ANY(%s) AND error_class IS NOT NULL ORDER BY event_pk, id DESC"
        )
        rows = await self._fetch(sql, (list(pks),))
        return {r[0]: c.attempt_row(r[1:], c.as_utc) for r in rows}

    async def timeline(self, subject: str, limit: int = 500) -> list[TimelineRow]:
        """The subject's latest ``limit`` timeline entries, oldest first."""
        sql = (
            f"SELECT * FROM (SELECT {c.TIMELINE_COLUMNS} FROM timeline WHERE subject = %s"
            " ORDER BY id DESC LIMIT %s) AS t ORDER BY id"
        )
        return [c.timeline_row(r, c.as_utc) for r in await self._fetch(sql, (subject, limit))]

    async def subject_state(self, subject: str) -> str | None:
        """A subject's current state, or None."""
        rows = await self._fetch("SELECT state FROM subjects WHERE subject = %s", (subject,))
        return str(rows[0][0]) if rows else None

    async def next_due(self) -> datetime | None:
        """When ``claim`` may next find something (see the port)."""
        rows = await self._fetch(_NEXT_DUE, ())
        return c.utc_or_none(rows[0][0]) if rows else None

    # -- waking ------------------------------------------------------------------------------

    # the port fixes the signature: the timeout is the polling fallback, not a deadline
    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109
        """Return on a NOTIFY on :data:`CHANNEL` (from any process), or after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        listening = self._start_listener()
        if not listening.is_set():  # the first wait: do not miss what comes before LISTEN
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listening.wait(), timeout)
        await self._signal.wait(deadline - loop.time())

    def _start_listener(self) -> asyncio.Event:
        """Start the LISTEN task once (lazily: an ingress-only process needs none)."""
        if self._listening is None:
            self._listening = asyncio.Event()
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="carehook-pg-listen")
        return self._listening

    async def _listen(self) -> None:
        """Hold a LISTEN connection and turn its notifications into the in-process signal;
        reconnect after a failure (the waits poll meanwhile)."""
        assert self._listening is not None
        backoff = 0.5
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    self._signal.notify()  # whatever was sent while nobody listened
                    backoff = 0.5
                    async for _note in conn.notifies():
                        self._signal.notify()
            except (psycopg.Error, OSError):
                pass
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _stop_listener(self) -> None:
        task, self._listener, self._listening = self._listener, None, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- retention ---------------------------------------------------------------------------

    async def purge(
        self,
        now: datetime,
        retention_days: Mapping[str, int],
        default_retention_days: int,
        dedup_days: int,
    ) -> PurgeCounts:
        """Drop finished events' payloads past retention, and their rows (steps, attempts)
        past the dedup window; timeline rows and reviews stay (see the schema)."""
        now = c.as_utc(now)
        cond, params = c.purge_payloads_sql(
            now, retention_days, default_retention_days, "%s", c.as_utc
        )
        async with self._tx() as conn:
            cur = await conn.execute(
                "UPDATE events SET payload = NULL, payload_purged_at = %s"
                f" WHERE payload IS NOT NULL AND {_FINISHED} AND {cond}",
                [now, *params],
            )
            payloads = cur.rowcount
            cur = await conn.execute(
                f"DELETE FROM events WHERE {_FINISHED} AND received_at < %s",
                (now - timedelta(days=dedup_days),),
            )
            return PurgeCounts(payloads=payloads, dedup_keys=cur.rowcount)
