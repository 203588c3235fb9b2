"""The worker's half of the SQLite inbox (:class:`carehook.inbox.work.WorkStore`).

Every write is a ``CALL`` of the group-commit writer: a function run on the writer's one
connection, so claims are serialised without any locking of ours, and the calls queued together
share one transaction and one fsync (see :mod:`carehook.inbox._sqlite_writer`). Each function
raises ``LeaseLost`` before it writes anything, or not at all. Reads run on the reader pool.

Time is the store's clock, formatted as the fixed-width text the schema keeps, so every
comparison (``lease_expires_at > now``, ``next_attempt_at <= now``) is a text comparison.
"""

# S608 is off for this module: its SQL is built from constant fragments and placeholder counts
# only; every value is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

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

T = TypeVar("T")

_ACTIVE: Final = "status IN ('pending', 'processing', 'retrying')"
# The partial index of unfinished events by (subject, id), named: without statistics the planner
# would take the status index and sort, which grows with the backlog.
_BY_SUBJECT: Final = "INDEXED BY ix_events_active_subject_id"
_FINISHED: Final = "status IN ('done', 'dead', 'unhandled')"
#: the caller holds the event: processing, its lease, unexpired (params: owner, now)
_FENCE: Final = "status = 'processing' AND lease_owner = ? AND lease_expires_at > ?"

# Each subject's head (its smallest unfinished id, found in the partial index) is claimable when
# due, or when it is processing under an expired lease, and no other event of its subject runs
# under a live lease. (params: now, now, now, limit)
_HEADS: Final = f"SELECT min(id) AS id FROM events {_BY_SUBJECT} WHERE {_ACTIVE} GROUP BY subject"
_CLAIMABLE: Final = f"""
SELECT e.id FROM ({_HEADS}) AS h JOIN events AS e ON e.id = h.id
WHERE ((e.status IN ('pending', 'retrying') AND e.next_attempt_at <= ?)
       OR (e.status = 'processing' AND e.lease_expires_at <= ?))
  AND NOT EXISTS (SELECT 1 FROM events AS b {_BY_SUBJECT}
                  WHERE b.subject = e.subject AND b.id > e.id AND b.{_ACTIVE}
                  AND b.status = 'processing' AND b.lease_expires_at > ?)
ORDER BY e.id LIMIT ?
"""
# Heads' due times; a head held back by a later event running is due when that lease ends.
_NEXT_DUE: Final = f"""
SELECT min(max(CASE WHEN e.status = 'processing' THEN e.lease_expires_at
                    ELSE e.next_attempt_at END,
               coalesce((SELECT max(b.lease_expires_at) FROM events AS b {_BY_SUBJECT}
                         WHERE b.subject = e.subject AND b.id > e.id AND b.{_ACTIVE}
                         AND b.status = 'processing'), '')))
FROM ({_HEADS}) AS h JOIN events AS e ON e.id = h.id
"""
# true when a later event of the subject waits for this one (worth a wake-up once it finishes);
# a statement of its own: a subquery in RETURNING cannot search an index by the row's values
_WAITING_BEHIND: Final = f"""SELECT EXISTS (SELECT 1 FROM events AS b {_BY_SUBJECT}
    WHERE b.subject = ? AND b.id > ? AND b.{_ACTIVE} AND b.status <> 'processing')"""
_CLOSE_ATTEMPT: Final = """
UPDATE attempts SET finished_at = ?, outcome = ?, error_class = ?, error_message = ?,
       next_attempt_at = ?
WHERE event_pk = ? AND finished_at IS NULL
"""
_COMPLETE: Final = f"""
UPDATE events SET status = 'done', next_attempt_at = NULL, lease_owner = NULL,
       lease_expires_at = NULL
WHERE id = ? AND {_FENCE} RETURNING subject
"""
_FAIL: Final = f"""
UPDATE events SET status = ?, next_attempt_at = ?, last_error = ?, lease_owner = NULL,
       lease_expires_at = NULL
WHERE id = ? AND {_FENCE} RETURNING subject
"""
_RELEASE: Final = f"""
UPDATE events SET status = CASE WHEN attempts > 1 THEN 'retrying' ELSE 'pending' END,
       attempts = max(attempts - 1, 0), next_attempt_at = ?, lease_owner = NULL,
       lease_expires_at = NULL
WHERE id = ? AND {_FENCE} RETURNING subject
"""
_HELD_TYPE: Final = f"SELECT type, source, subject FROM events WHERE id = ? AND {_FENCE}"
_INSERT_STEP: Final = """
INSERT INTO steps (event_pk, name, outcome, result, finished_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (event_pk, name) DO NOTHING
"""
_INSERT_TIMELINE: Final = (
    "INSERT INTO timeline (subject, event_pk, type, state, detail, at) VALUES (?, ?, ?, ?, ?, ?)"
)
_UPSERT_SUBJECT: Final = """
INSERT INTO subjects (subject, state, updated_at) VALUES (?, ?, ?)
ON CONFLICT (subject) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at
"""
_UPSERT_DATA: Final = """
INSERT INTO subjects (subject, state, updated_at, data) VALUES (?, '', ?, ?)
ON CONFLICT (subject) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at
"""
_INSERT_REVIEW: Final = """
INSERT INTO reviews (source, subject, event_pk, kind, severity, summary, dedup_key, status,
                     created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?)
"""
_REVIEW_BY_ID: Final = f"SELECT {c.REVIEW_COLUMNS} FROM reviews WHERE id = ?"
_RESOLVE_REVIEW: Final = """
UPDATE reviews SET status = 'resolved', resolved_at = ?, resolved_by = ?, note = ?
WHERE id = ? AND status = 'open'
"""
_INSERT_AUDIT: Final = (
    "INSERT INTO audit (at, actor, action, event_pk, detail) VALUES (?, ?, ?, ?, ?)"
)
_LIVE_LEASES: Final = (
    "SELECT id, lease_owner FROM events WHERE status = 'processing' AND lease_expires_at > ?"
)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _fetch_all(sql: str, params: Sequence[Any]) -> Callable[[sqlite3.Connection], list[Any]]:
    """A reader function running one query."""
    return lambda conn: conn.execute(sql, params).fetchall()


class SqliteWork:
    """The WorkStore methods of :class:`carehook.inbox.sqlite.SqliteInbox`."""

    _keyring: KeyRing
    _clock: Callable[[], datetime]
    _signal: WorkSignal

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in the writer thread, in the next calls' transaction."""
        raise NotImplementedError

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on a reader thread's connection."""
        raise NotImplementedError

    def _now(self) -> tuple[datetime, str]:
        now = c.as_utc(self._clock())
        return now, c.to_text(now)

    # -- claiming ----------------------------------------------------------------------------

    async def claim(self, owner: str, limit: int, lease_seconds: float) -> list[Claim]:
        """Claim up to ``limit`` claimable events, oldest first (see the port's rules)."""
        self._signal.register()
        now_dt, now = self._now()
        expires_dt = now_dt + timedelta(seconds=lease_seconds)
        expires = c.to_text(expires_dt)

        def run(conn: sqlite3.Connection) -> tuple[list[Any], dict[int, set[str]]]:
            ids = [r[0] for r in conn.execute(_CLAIMABLE, (now, now, now, limit))]
            if not ids:
                return [], {}
            marks = _marks(len(ids))
            rows = conn.execute(
                "UPDATE events SET status = 'processing', lease_owner = ?, lease_expires_at = ?,"
                f" attempts = attempts + 1 WHERE id IN ({marks}) RETURNING {c.CLAIM_COLUMNS}",
                (owner, expires, *ids),
            ).fetchall()
            # an attempt still open is one whose worker died with the lease: it expired
            conn.execute(
                "UPDATE attempts SET finished_at = ?, outcome = 'expired'"
                f" WHERE finished_at IS NULL AND event_pk IN ({marks})",
                (now, *ids),
            )
            conn.executemany(
                "INSERT INTO attempts (event_pk, number, started_at, outcome)"
                " VALUES (?, ?, ?, 'running')",
                [(r[0], r[6], now) for r in rows],
            )
            # read the finished steps here, in the writer, rather than one call per event later
            finished: dict[int, set[str]] = {}
            for pk, name in conn.execute(
                f"SELECT event_pk, name FROM steps WHERE event_pk IN ({marks})", ids
            ):
                finished.setdefault(pk, set()).add(name)
            return sorted(rows), finished

        rows, finished = await self._call(run)
        return [
            c.claim_of(r, c.from_text, expires_dt, self._keyring,
                       frozenset(finished.get(r[0], ())))
            for r in rows
        ]  # fmt: skip

    async def extend_leases(self, owner: str, pks: Sequence[int], lease_seconds: float) -> set[int]:
        """Push forward the unexpired leases ``owner`` holds; the pks still held."""
        if not pks:
            return set()
        now_dt, now = self._now()
        expires = c.to_text(now_dt + timedelta(seconds=lease_seconds))
        sql = (
            f"UPDATE events SET lease_expires_at = ? WHERE id IN ({_marks(len(pks))})"
            f" AND {_FENCE} RETURNING id"
        )

        def run(conn: sqlite3.Connection) -> set[int]:
            return {r[0] for r in conn.execute(sql, (expires, *pks, owner, now))}

        return await self._call(run)

    async def release_dead_owners(self, host: str, alive_pids: Sequence[int]) -> int:
        """Expire the live leases of owners on ``host`` whose pid is not alive."""
        _now_dt, now = self._now()

        def run(conn: sqlite3.Connection) -> int:
            dead = [
                pk
                for pk, owner in conn.execute(_LIVE_LEASES, (now,))
                if c.dead_owner(owner, host, alive_pids)
            ]
            if dead:
                conn.execute(
                    f"UPDATE events SET lease_expires_at = ? WHERE id IN ({_marks(len(dead))})",
                    (now, *dead),
                )
            return len(dead)

        n = await self._call(run)
        if n:
            self._signal.notify()
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
        """Record a step, its timeline entry, its subject's state and data and its review item
        in one transaction, once."""
        _now_dt, now = self._now()

        def run(conn: sqlite3.Connection) -> None:
            held = conn.execute(_HELD_TYPE, (pk, owner, now)).fetchone()
            if held is None:
                raise LeaseLost(pk)
            if conn.execute(_INSERT_STEP, (pk, name, outcome, detail, now)).rowcount == 0:
                return  # already recorded: its effects were committed with it
            type_, source, subject = held
            if timeline is not None:
                t = timeline
                conn.execute(_INSERT_TIMELINE, (t.subject, pk, type_, t.state, t.detail, now))
                conn.execute(_UPSERT_SUBJECT, (t.subject, t.state, now))
            if data is not None:
                blob = c.seal_data(self._keyring, subject, data)
                conn.execute(_UPSERT_DATA, (subject, now, blob))
            if review is not None:
                r = review
                conn.execute(_INSERT_REVIEW, (source, subject, pk, r.kind, r.severity,
                                              r.summary, r.dedup_key, now))  # fmt: skip

        await self._call(run)

    async def subject_data(self, subject: str) -> dict[str, object]:
        """A subject's working data, decrypted."""
        sql = "SELECT data FROM subjects WHERE subject = ?"
        row = await self._read(lambda conn: conn.execute(sql, (subject,)).fetchone())
        return c.open_data(self._keyring, subject, None if row is None else row[0])

    async def list_reviews(
        self, status: str | None = "open", limit: int = 100
    ) -> list[ReviewRow]:
        """Review items, newest first."""
        where, params = ("", ()) if status is None else ("WHERE status = ?", (status,))
        sql = f"SELECT {c.REVIEW_COLUMNS} FROM reviews {where} ORDER BY id DESC LIMIT ?"
        rows = await self._read(lambda conn: conn.execute(sql, (*params, limit)).fetchall())
        return [c.review_row(r, c.from_text) for r in rows]

    async def resolve_review(self, review_id: int, actor: str, note: str) -> ReviewRow:
        """Resolve an open item, audited."""
        _now_dt, now = self._now()

        def run(conn: sqlite3.Connection) -> ReviewRow:
            found = conn.execute(_REVIEW_BY_ID, (review_id,)).fetchone()
            if found is None:
                raise ReviewError(f"no review item {review_id}")
            if found[8] != "open":
                raise ReviewError(f"review item {review_id} is already {found[8]}")
            conn.execute(_RESOLVE_REVIEW, (now, actor, note, review_id))
            conn.execute(_INSERT_AUDIT, (now, actor, ACTION_REVIEW_RESOLVE, found[3],
                                         f"review {review_id}"))  # fmt: skip
            return c.review_row(conn.execute(_REVIEW_BY_ID, (review_id,)).fetchone(), c.from_text)

        return await self._call(run)

    async def _finish(
        self, pk: int, sql: str, params: tuple[Any, ...], attempt: tuple[Any, ...]
    ) -> bool:
        """Run a fenced UPDATE of the event (LeaseLost if it matched nothing), close its open
        attempt; returns whether a later event of its subject waits."""
        _now_dt, now = self._now()

        def run(conn: sqlite3.Connection) -> bool:
            row = conn.execute(sql, params).fetchone()
            if row is None:
                raise LeaseLost(pk)
            conn.execute(_CLOSE_ATTEMPT, (now, *attempt, pk))
            return bool(conn.execute(_WAITING_BEHIND, (row[0], pk)).fetchone()[0])

        return await self._call(run)

    async def complete(self, pk: int, owner: str) -> None:
        """Mark the event ``done``, close its attempt, drop the lease."""
        _now_dt, now = self._now()
        waiting = await self._finish(pk, _COMPLETE, (pk, owner, now), ("done", None, None, None))
        if waiting:
            self._signal.notify()

    async def fail(
        self, pk: int, owner: str, error_class: str, message: str, retry_at: datetime | None
    ) -> str:
        """Close the attempt with its error; ``retrying`` at ``retry_at``, or ``dead``."""
        _now_dt, now = self._now()
        status = "dead" if retry_at is None else "retrying"
        retry = c.opt_text(retry_at)
        params = (status, retry, f"{error_class}: {message}", pk, owner, now)
        attempt = (status, error_class, message, retry)
        waiting = await self._finish(pk, _FAIL, params, attempt)
        if waiting or retry is not None:
            self._signal.notify()
        return status

    async def release(self, pk: int, owner: str) -> None:
        """Give the event back, due now, this attempt not counted."""
        _now_dt, now = self._now()
        await self._finish(pk, _RELEASE, (now, pk, owner, now), ("released", None, None, None))
        self._signal.notify()

    async def replay(self, flt: ReplayFilter, actor: str, *, dry_run: bool = False) -> int:
        """Put matching events back to ``pending``, due now, attempts reset; audit each."""
        where, params = c.replay_filter_sql(flt, "?", c.to_text)
        if dry_run:
            sql = f"SELECT count(*) FROM events{where}"
            count: int = await self._read(lambda conn: conn.execute(sql, params).fetchone()[0])
            return count
        _now_dt, now = self._now()

        def run(conn: sqlite3.Connection) -> int:
            chosen = conn.execute(f"SELECT id, status FROM events{where}", params).fetchall()
            if not chosen:
                return 0
            conn.execute(
                "UPDATE events SET status = 'pending', attempts = 0, next_attempt_at = ?,"
                f" last_error = NULL, lease_owner = NULL, lease_expires_at = NULL{where}",
                (now, *params),
            )
            conn.executemany(
                _INSERT_AUDIT,
                [(now, actor, ACTION_REPLAY, pk, f"from {status}") for pk, status in chosen],
            )
            return len(chosen)

        n = await self._call(run)
        if n:
            self._signal.notify()
        return n

    # -- reads -------------------------------------------------------------------------------

    async def list_steps(self, pk: int) -> list[StepRow]:
        """Every finished step of event ``pk``, in order."""
        sql = f"SELECT {c.STEP_COLUMNS} FROM steps WHERE event_pk = ? ORDER BY id"
        rows = await self._read(lambda conn: conn.execute(sql, (pk,)).fetchall())
        return [c.step_row(r, c.from_text) for r in rows]

    async def list_attempts(self, pk: int) -> list[AttemptRow]:
        """Every attempt at event ``pk``, in order."""
        sql = f"SELECT {c.ATTEMPT_COLUMNS} FROM attempts WHERE event_pk = ? ORDER BY id"
        rows = await self._read(lambda conn: conn.execute(sql, (pk,)).fetchall())
        return [c.attempt_row(r, c.from_text) for r in rows]

    async def last_errors(self, pks: Sequence[int]) -> dict[int, AttemptRow]:
        """The last failed attempt of each of ``pks``."""
        out: dict[int, AttemptRow] = {}
        for i in range(0, len(pks), 500):
            chunk = list(pks[i : i + 500])
            sql = (
                f"SELECT event_pk, {c.ATTEMPT_COLUMNS} FROM attempts WHERE event_pk IN"
                f" ({_marks(len(chunk))}) AND error_class IS NOT NULL ORDER BY id"
            )
            rows = await self._read(_fetch_all(sql, chunk))
            out.update((r[0], c.attempt_row(r[1:], c.from_text)) for r in rows)
        return out

    async def timeline(self, subject: str, limit: int = 500) -> list[TimelineRow]:
        """The subject's latest ``limit`` timeline entries, oldest first."""
        sql = (
            f"SELECT * FROM (SELECT {c.TIMELINE_COLUMNS} FROM timeline WHERE subject = ?"
            " ORDER BY id DESC LIMIT ?) ORDER BY id"
        )
        rows = await self._read(lambda conn: conn.execute(sql, (subject, limit)).fetchall())
        return [c.timeline_row(r, c.from_text) for r in rows]

    async def subject_state(self, subject: str) -> str | None:
        """A subject's current state, or None."""
        sql = "SELECT state FROM subjects WHERE subject = ?"
        row = await self._read(lambda conn: conn.execute(sql, (subject,)).fetchone())
        return None if row is None else str(row[0])

    async def next_due(self) -> datetime | None:
        """When ``claim`` may next find something (see the port)."""
        row = await self._read(lambda conn: conn.execute(_NEXT_DUE).fetchone())
        return None if row is None or not row[0] else c.from_text(row[0])

    # the port fixes the signature: the timeout is the polling fallback, not a deadline
    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109
        """Return when this process commits new work, or after ``timeout`` seconds."""
        await self._signal.wait(timeout)

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
        cond, params = c.purge_payloads_sql(
            now, retention_days, default_retention_days, "?", c.to_text
        )
        stamp = c.to_text(now)
        cutoff = c.to_text(now - timedelta(days=dedup_days))

        def run(conn: sqlite3.Connection) -> PurgeCounts:
            payloads = conn.execute(
                f"UPDATE events SET payload = NULL, payload_purged_at = ?"
                f" WHERE payload IS NOT NULL AND {_FINISHED} AND {cond}",
                (stamp, *params),
            ).rowcount
            keys = conn.execute(
                f"DELETE FROM events WHERE {_FINISHED} AND received_at < ?", (cutoff,)
            ).rowcount
            return PurgeCounts(payloads=payloads, dedup_keys=keys)

        return await self._call(run)
