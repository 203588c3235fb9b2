"""The operator's reads (:class:`carehook.inbox.reads.AdminReads`) in SQL, once for both
databases: :class:`SqlReads` runs its statements through the store's dialect (which converts
timestamps its way). Only constant fragments are joined into SQL; every value is a bound
parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from carehook.inbox import _common as c
from carehook.inbox.port import AuditRow, EventRow, RequestRow
from carehook.inbox.reads import EventQuery, RateBucket, RequestCount, RequestQuery, SecretUse
from carehook.inbox.work import ReviewRow

_EVENT_EQ = ("source", "type", "status", "subject")


class SqlReads:
    """Every operator read, run on a dialect's read connections."""

    _mark = "?"

    def __init__(self, dialect: Any) -> None:
        self._d = dialect
        # a minute bucket: the first 16 characters of SQLite's ISO text, PostgreSQL's date_trunc
        sqlite = dialect.name == "sqlite"
        pg_minute = "date_trunc('minute', received_at)"
        self._minute = "substr(received_at, 1, 16)" if sqlite else pg_minute
        self._sqlite = sqlite

    async def _rows(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        rows: list[Sequence[Any]] = await self._d.read(lambda tx: tx.rows(sql, list(params)))
        return rows

    def _to_db(self, value: datetime) -> Any:
        return c.as_utc(value)

    def _from_db(self, value: Any) -> datetime:
        return self._d.ts(value)  # type: ignore[no-any-return]

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
        if self._sqlite:
            return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)
        return c.as_utc(value)
