"""Chaos: PostgreSQL stopped mid-load (20 s; short version ~5 s), on a throwaway cluster.

While the database is down, deliveries are answered 503 only (a vendor retries), /readyz says
503; once it is back, everything acknowledged is stored once and reaches done. Printed: how long
the 503s took to come and how long the recovery took (goals, not asserted here: 503 within 1 s
and recovery within 1 s of the restart).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from .support_worker import (
    Figures,
    Load,
    assert_nothing_lost,
    pick,
    readyz,
    seconds_summary,
    serve,
    throwaway_cluster,
    wait_until,
    write_config,
)

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.slow]


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def _s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.3f} s"


async def test_postgres_down_mid_load_answers_503_and_loses_nothing(tmp_path: Path) -> None:
    """Stop the database under load: only 503 (or no answer) while down, nothing acknowledged
    lost, every event stored once and done after the restart."""
    down_for = pick(5, 20)
    with throwaway_cluster() as cluster, serve(
        tmp_path, write_config(tmp_path, cluster.url)
    ) as gateway:
        load = Load.for_config(tmp_path / "carehook.toml", gateway.url)
        sending = asyncio.create_task(load.run())
        await asyncio.sleep(pick(2, 5))
        acked_before = len(load.acked)
        await asyncio.to_thread(cluster.stop)
        stopped_at = time.monotonic()
        await asyncio.sleep(min(1.5, down_for / 2))
        ready_while_down = await asyncio.to_thread(readyz, gateway.url)
        await asyncio.sleep(down_for - (time.monotonic() - stopped_at))
        restart_at = time.monotonic()  # it may take commits before pg_ctl returns
        await asyncio.to_thread(cluster.start)
        started_at = time.monotonic()
        await asyncio.sleep(pick(3, 5))
        load.stop_new.set()
        await asyncio.wait_for(sending, 180)
        ready_after = await asyncio.to_thread(readyz, gateway.url)
        acked = set(load.acked)

        def all_terminal() -> bool:
            rows = _rows(cluster.url, "SELECT count(*) FROM events WHERE status IN "
                                      "('done', 'dead')")  # fmt: skip
            return int(rows[0][0]) >= len(acked)

        await wait_until(all_terminal, "every acknowledged event to be terminal")
        events = _rows(cluster.url, "SELECT id, event_id, status FROM events")
        timeline = _rows(cluster.url, "SELECT event_pk FROM timeline")

    outage = load.answered_between(stopped_at, restart_at)
    # sent and answered while down (a commit just before the stop may be answered just after)
    inside = [a for a in outage if a.sent_at >= stopped_at]
    first_503 = load.first(503, stopped_at)
    first_200 = load.first(200, started_at)
    stored = {str(e[1]) for e in events}
    per_event: dict[object, int] = {}
    for (pk,) in timeline:
        per_event[pk] = per_event.get(pk, 0) + 1
    figures = Figures(
        "PostgreSQL down mid-load", load.sent, len(acked), len(stored & acked),
        sum(1 for e in events if e[2] in ("done", "dead")),
        sum(n - 1 for n in per_event.values() if n > 1), load.statuses(),
        [f"database down {down_for:.0f} s; acknowledged before the stop: {acked_before}",
         f"first 503 came {_s(first_503)} after the stop; "
         f"503 answer times: {seconds_summary(load.of_status(503))}",
         f"answers that came while down: {seconds_summary(outage)}",
         f"first 200 came {_s(first_200)} after the database was back",
         f"/readyz while down {ready_while_down}, after recovery {ready_after}"],
    )  # fmt: skip
    assert_nothing_lost(load, acked, stored, events, figures)
    assert {a.status for a in inside} <= {0, 503}, "only 503 (or no answer) while down"
    assert first_503 is not None, "the outage was never seen: proved nothing"
    assert ready_while_down == 503
    assert ready_after == 200
