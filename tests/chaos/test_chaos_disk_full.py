"""Chaos: SQLite on a full filesystem (a 16 MiB tmpfs the test mounts), under load.

16 MiB, not 4: SQLite's WAL grows to ~4 MiB (1,000 pages) before it checkpoints, so on a 4 MiB
filesystem the WAL alone fills it after ~120 events and no space ever comes back by itself; here
a filler file makes the disk full and deleting it gives the space back.

While the disk is full, deliveries are answered 503 (a vendor retries); once space returns,
every acknowledged event is stored once and reaches done.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from .support_worker import (
    Figures,
    Load,
    assert_nothing_lost,
    fill,
    pick,
    readyz,
    seconds_summary,
    serve,
    small_tmpfs,
    wait_until,
    write_config,
)

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute(sql).fetchall()


async def test_a_full_disk_answers_503_and_recovers_when_space_returns(tmp_path: Path) -> None:
    """Fill the database's filesystem under load: 503 (never another error) while full,
    nothing acknowledged lost, every event stored once and done once space returns."""
    full_for = pick(4, 15)
    with small_tmpfs(tmp_path / "data", "16m") as data:
        db = data / "carehook.db"
        config = write_config(tmp_path, f"sqlite:///{db}", "")
        config.write_text(config.read_text().replace('data_dir = "."', f'data_dir = "{data}"'))
        with serve(tmp_path, config) as gateway:
            load = Load.for_config(config, gateway.url)
            sending = asyncio.create_task(load.run())
            await asyncio.sleep(pick(1.5, 5))
            filler = await asyncio.to_thread(fill, data)
            filled_at = time.monotonic()
            await asyncio.sleep(full_for / 2)
            ready_while_full = await asyncio.to_thread(readyz, gateway.url)
            await asyncio.sleep(full_for / 2)
            filler.unlink()
            freed_at = time.monotonic()
            await asyncio.sleep(pick(2, 5))
            load.stop_new.set()
            await asyncio.wait_for(sending, 180)
            acked = set(load.acked)

            def all_done() -> bool:
                rows = _rows(db, "SELECT count(*) FROM events WHERE status = 'done'")
                return int(rows[0][0]) >= len(acked)

            await wait_until(all_done, "every acknowledged event to be done")
            ready_after = await asyncio.to_thread(readyz, gateway.url)
        events = _rows(db, "SELECT id, event_id, status FROM events")
        timeline = _rows(db, "SELECT event_pk FROM timeline")

    while_full = load.answered_between(filled_at, freed_at)
    stored = {str(e[1]) for e in events}
    per_event: dict[object, int] = {}
    for (pk,) in timeline:
        per_event[pk] = per_event.get(pk, 0) + 1
    first_200 = load.first(200, freed_at)
    figures = Figures(
        "SQLite on a full filesystem", load.sent, len(acked), len(stored & acked),
        sum(1 for e in events if e[2] in ("done", "dead")),
        sum(n - 1 for n in per_event.values() if n > 1), load.statuses(),
        [f"disk full {full_for:.0f} s; answers while full: {seconds_summary(while_full)}, "
         f"statuses {sorted({a.status for a in while_full})}",
         f"first 200 after space returned: "
         f"{'never' if first_200 is None else f'{first_200:.3f} s'}",
         f"/readyz while full {ready_while_full}, after recovery {ready_after}"],
    )  # fmt: skip
    assert_nothing_lost(load, acked, stored, events, figures)
    assert any(a.status == 503 for a in while_full), "the full disk was never seen"
    assert ready_after == 200
