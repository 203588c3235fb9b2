"""The ingest benchmark's five servers, each started afresh (own data dir, database or queue).

(a)  ``carehook serve`` on SQLite, as ``make run`` starts it (in-process worker on)
(a') the same with the worker off (the ingest path alone)
(b)  ``carehook serve`` on PostgreSQL (a fresh database, dropped after), worker on
(c)  a bare Starlette route answering 200 after reading the body (the ceiling)
(d)  what most Python teams write: FastAPI verifying the HMAC, ``json.loads``, and a Celery
     ``.delay()`` onto Redis (its own queue, deleted after)
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from harness import free_port, stop, wait_up

BIN = Path(sys.executable).parent
#: Abridge signs a timestamp; the request files are made once per run, so allow a long window
TOLERANCE = 86400

BARE_APP = """
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

async def ok(request):
    await request.body()
    return Response(b'{"received":true}', media_type="application/json")

app = Starlette(routes=[Route("/webhooks/{source}", ok, methods=["POST"])])
"""

CELERY_APP = """
import hashlib, hmac, json, os, time

from celery import Celery
from fastapi import FastAPI, HTTPException, Request

SECRET = os.environ["BENCH_SECRET"].encode()
TOLERANCE = int(os.environ["BENCH_TOLERANCE"])
celery = Celery("receiver", broker=os.environ["BENCH_BROKER"])
celery.conf.task_default_queue = os.environ["BENCH_QUEUE"]


@celery.task(name="process_webhook")
def process_webhook(payload):
    return payload["event_id"]


app = FastAPI()


@app.post("/webhooks/abridge")
async def abridge(request: Request):
    body = await request.body()
    ts = request.headers.get("x-abridge-timestamp", "")
    sig = request.headers.get("x-abridge-signature", "")
    expected = hmac.new(SECRET, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, sig) or abs(time.time() - int(ts or 0)) > TOLERANCE:
        raise HTTPException(401, "invalid signature")
    payload = json.loads(body)
    process_webhook.delay(payload)
    return {"received": True}
"""


@dataclass
class Running:
    """A started target: its process, URL, and what to undo afterwards."""

    key: str
    proc: subprocess.Popen[bytes]
    url: str
    cleanup: Callable[[], None]
    sqlite_path: Path | None = None
    pg_url: str | None = None

    def close(self) -> None:
        """Stop the server, then drop its data."""
        stop(self.proc)
        self.cleanup()


@dataclass(frozen=True)
class Env:
    """What every target needs: a scratch dir, the shared secret, PostgreSQL and Redis URLs."""

    work: Path
    secret: str
    pg_admin: str
    redis: str = "redis://127.0.0.1:6379/0"


LABELS = {
    "a": "carehook SQLite, worker on (make run)",
    "a'": "carehook SQLite, worker off",
    "b": "carehook PostgreSQL, worker on",
    "c": "bare Starlette (ceiling)",
    "d": "FastAPI + HMAC + Celery/Redis",
}


def _carehook_config(folder: Path, secret: str, worker: bool, storage: str | None) -> Path:
    text = 'data_dir = "."\n'
    if storage:
        text += f'[storage]\nurl = "{storage}"\nauto_migrate = true\n'
    if not worker:
        text += "[worker]\nenabled = false\n"
    text += (f'[sources.abridge]\nvendor = "abridge"\nsecrets = ["{secret}"]\n'
             f"tolerance_seconds = {TOLERANCE}\n")
    path = folder / "carehook.toml"
    path.write_text(text)
    return path


def create_pg_database(admin: str, prefix: str = "carehook_bench_ingest") -> str:
    """A fresh, empty database on the server of ``admin``; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(admin: str, url: str) -> None:
    """Drop the database of ``url`` (closing whatever is still connected)."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_available(admin: str) -> bool:
    """Whether the PostgreSQL server of ``admin`` answers."""
    try:
        with psycopg.connect(admin, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def start(key: str, env: Env) -> Running:
    """Start target ``key`` afresh on a free port and wait until it listens."""
    folder = env.work / f"{key.replace(chr(39), 'p')}-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/abridge"
    if key in ("a", "a'", "b"):
        pg = create_pg_database(env.pg_admin) if key == "b" else None
        config = _carehook_config(folder, env.secret, worker=key != "a'", storage=pg)
        cmd = [str(BIN / "carehook"), "serve", "--config", str(config), "--port", str(port)]
        proc = subprocess.Popen(cmd, cwd=folder, stdout=subprocess.DEVNULL,
                                stderr=(folder / "stderr.log").open("wb"))

        def cleanup() -> None:
            if pg:
                drop_pg_database(env.pg_admin, pg)
            shutil.rmtree(folder, ignore_errors=True)

        wait_up(port, proc)
        return Running(key, proc, url, cleanup, None if pg else folder / "carehook.db", pg)
    return _start_plain(key, env, folder, port, url)


def _start_plain(key: str, env: Env, folder: Path, port: int, url: str) -> Running:
    queue = f"carehook_bench_{uuid.uuid4().hex[:8]}"
    (folder / "bare_app.py").write_text(BARE_APP)
    (folder / "celery_app.py").write_text(CELERY_APP)
    module = "bare_app:app" if key == "c" else "celery_app:app"
    cmd = [str(BIN / "uvicorn"), "--log-level", "warning", "--no-access-log", "--port", str(port),
           module]
    child_env = {"PATH": str(BIN) + ":/usr/bin:/bin", "BENCH_SECRET": env.secret,
                 "BENCH_BROKER": env.redis, "BENCH_QUEUE": queue,
                 "BENCH_TOLERANCE": str(TOLERANCE)}
    proc = subprocess.Popen(cmd, cwd=folder, env=child_env, stdout=subprocess.DEVNULL,
                            stderr=(folder / "stderr.log").open("wb"))

    def cleanup() -> None:
        if key == "d":
            _delete_queue(env.redis, queue)
        shutil.rmtree(folder, ignore_errors=True)

    wait_up(port, proc)
    return Running(key, proc, url, cleanup)


def _delete_queue(url: str, queue: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.delete(queue, f"_kombu.binding.{queue}")
    client.close()


def backlog(run: Running) -> int:
    """Events accepted but not finished yet (pending, processing, retrying)."""
    sql = "SELECT count(*) FROM events WHERE status IN ('pending', 'processing', 'retrying')"
    if run.sqlite_path is not None:
        with sqlite3.connect(f"file:{run.sqlite_path}?mode=ro", uri=True, timeout=30) as conn:
            return int(conn.execute(sql).fetchone()[0])
    assert run.pg_url is not None
    with psycopg.connect(run.pg_url) as conn:
        row = conn.execute(sql).fetchone()
        return int(row[0]) if row else 0


def receive_to_done_ms(run: Running, after_pk: int) -> list[float]:
    """Receive-to-done of every finished event with id > ``after_pk``, sorted (ms)."""
    sql = ("SELECT e.received_at, a.finished_at FROM events e JOIN attempts a"
           " ON a.event_pk = e.id AND a.outcome = 'done' WHERE e.id > ?")
    assert run.sqlite_path is not None
    with sqlite3.connect(f"file:{run.sqlite_path}?mode=ro", uri=True, timeout=30) as conn:
        rows = conn.execute(sql, (after_pk,)).fetchall()
    from datetime import datetime

    return sorted((datetime.fromisoformat(f) - datetime.fromisoformat(r)).total_seconds() * 1000
                  for r, f in rows)


def max_event_pk(run: Running) -> int:
    """The highest event row id so far (0 when empty)."""
    assert run.sqlite_path is not None
    with sqlite3.connect(f"file:{run.sqlite_path}?mode=ro", uri=True, timeout=30) as conn:
        return int(conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])
