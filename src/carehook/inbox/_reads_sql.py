"""The operator's reads (:class:`carehook.inbox.reads.AdminReads`) in SQL, once for both adapters.

:class:`SqlReads` builds every statement; the two small subclasses say how to run a query and
how timestamps travel (SQLite: fixed-width ISO text, PostgreSQL: ``timestamptz``). Only
constant fragments are joined into SQL; every value is a bound parameter.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from carehook.inbox import _common as c
from carehook.inbox.port import AuditRow, EventRow, RequestRow
from carehook.inbox.reads import EventQuery, RateBucket, RequestCount, RequestQuery, SecretUse
from carehook.inbox.work import ReviewRow

T = TypeVar("T")
_EVENT_EQ = ("source", "type", "status", "subject")


class SqlReads:
    """The statements of every operator read; subclasses run them."""

    _mark = "?"
    _minute = "substr(received_at, 1, 16)"

    async def _rows(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        """Run ``sql`` on a read connection."""
        raise NotImplementedError

    def _to_db(self, value: datetime) -> Any:
        return value

    def _from_db(self, value: Any) -> datetime:
        return c.as_utc(value)

    def _where(self, pairs: Sequence[tuple[str, Any]]) -> tuple[str, list[Any]]:
        """``WHERE`` over (clause with one ``{}`` mark, value) pairs whose value is not None."""
        given = [(clause, value) for clause, value in pairs if value is not None]
        params = [self._to_db(v) if isinstance(v, datetime) else v for _, v in given]
        clauses = [clause.format(self._mark) for clause, _ in given]
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    async def query_events(self, q: EventQuery) -> list[EventRow]:
        """Events matching ``q``, newest first."""
        pairs = [(f"{col} = {{}}", getattr(q, col)) for col in _EVENT_EQ]
        pairs += [("received_at >= {}", q.since), ("received_at < {}", q.until),
                  ("id < {}", q.before)]  # fmt: skip
        where, params = self._where(pairs)
        sql = f"SELECT {c.EVENT_COLUMNS} FROM events{where} ORDER BY id DESC LIMIT {self._mark}"  # noqa: S608
        return [c.event_row(r, self._from_db) for r in await self._rows(sql, [*params, q.limit])]

    async def query_requests(self, q: RequestQuery) -> list[RequestRow]:
        """Request-log rows matching ``q``, newest first."""
        where, params = self._where([("source = {}", q.source), ("outcome = {}", q.outcome),
                                     ("received_at >= {}", q.since), ("id < {}", q.before)])
        sql = f"SELECT {c.REQUEST_COLUMNS} FROM requests{where} ORDER BY id DESC LIMIT {self._mark}"  # noqa: S608
        return [c.request_row(r, self._from_db) for r in await self._rows(sql, [*params, q.limit])]

    async def query_reviews(
        self, status: str | None, before: int | None, limit: int
    ) -> list[ReviewRow]:
        """Review items, newest first."""
        where, params = self._where([("status = {}", status), ("id < {}", before)])
        sql = f"SELECT {c.REVIEW_COLUMNS} FROM reviews{where} ORDER BY id DESC LIMIT {self._mark}"  # noqa: S608
        return [c.review_row(r, self._from_db) for r in await self._rows(sql, [*params, limit])]

    async def query_audit(self, before: int | None, limit: int) -> list[AuditRow]:
        """Audit rows, newest first."""
        where, params = self._where([("id < {}", before)])
        sql = f"SELECT {c.AUDIT_COLUMNS} FROM audit{where} ORDER BY id DESC LIMIT {self._mark}"  # noqa: S608
        return [c.audit_row(r, self._from_db) for r in await self._rows(sql, [*params, limit])]

    async def status_counts(self) -> dict[str, int]:
        """Events per status."""
        rows = await self._rows("SELECT status, count(*) FROM events GROUP BY status", [])
        return {str(r[0]): int(r[1]) for r in rows}

    async def oldest_waiting(self) -> datetime | None:
        """The oldest pending or retrying event's receipt time."""
        sql = "SELECT min(received_at) FROM events WHERE status IN ('pending', 'retrying')"
        rows = await self._rows(sql, [])
        return None if not rows or rows[0][0] is None else self._from_db(rows[0][0])

    async def last_claim_at(self) -> datetime | None:
        """The newest attempt's start."""
        rows = await self._rows("SELECT max(started_at) FROM attempts", [])
        return None if not rows or rows[0][0] is None else self._from_db(rows[0][0])

    async def secret_usage(self) -> list[SecretUse]:
        """Per source and secret index: events verified and the newest one's time."""
        sql = ("SELECT source, secret_index, count(*), max(received_at) FROM events"
               " GROUP BY source, secret_index ORDER BY source, secret_index")  # fmt: skip
        return [SecretUse(r[0], int(r[1]), int(r[2]), self._from_db(r[3]))
                for r in await self._rows(sql, [])]  # fmt: skip

    async def rejection_counts(self, since: datetime) -> list[RequestCount]:
        """Rejected rows since ``since`` by source and cause (the partial index of rejections)."""
        sql = ("SELECT source, outcome, cause, count(*), max(received_at) FROM requests"  # noqa: S608
               f" WHERE outcome = 'rejected' AND received_at >= {self._mark}"
               " GROUP BY source, outcome, cause ORDER BY source, outcome, cause")  # fmt: skip
        rows = await self._rows(sql, [self._to_db(since)])
        return [RequestCount(r[0], r[1], r[2], int(r[3]), self._from_db(r[4])) for r in rows]

    async def request_rate(self, since: datetime) -> list[RateBucket]:
        """Request-log rows since ``since`` per minute, source and outcome."""
        sql = (f"SELECT {self._minute} AS m, source, outcome, count(*) FROM requests"  # noqa: S608
               f" WHERE received_at >= {self._mark} GROUP BY m, source, outcome ORDER BY m")
        rows = await self._rows(sql, [self._to_db(since)])
        return [RateBucket(self._minute_of(r[0]), r[1], r[2], int(r[3])) for r in rows]

    def _minute_of(self, value: Any) -> datetime:
        return c.as_utc(value)


class SqliteReads(SqlReads):
    """The operator's reads on the SQLite inbox's reader threads."""

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on a reader thread's connection (the inbox's)."""
        raise NotImplementedError

    async def _rows(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        return await self._read(lambda conn: conn.execute(sql, tuple(params)).fetchall())

    def _to_db(self, value: datetime) -> Any:
        return c.to_text(value)

    def _from_db(self, value: Any) -> datetime:
        return c.from_text(value)

    def _minute_of(self, value: Any) -> datetime:
        return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


class PostgresReads(SqlReads):
    """The operator's reads on the PostgreSQL inbox's pool."""

    _mark = "%s"
    _minute = "date_trunc('minute', received_at)"

    async def _fetch(self, sql: str, params: tuple[Any, ...] | list[Any]) -> list[tuple[Any, ...]]:
        """Run ``sql`` on a pooled connection (the inbox's)."""
        raise NotImplementedError

    async def _rows(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        return list(await self._fetch(sql, list(params)))
