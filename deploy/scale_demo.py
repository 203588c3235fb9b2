"""Running at scale on one machine: PostgreSQL, nginx, two ``serve --no-worker``, two workers.

Starts, all on loopback:
  - a fresh PostgreSQL database (on the server of ``--pg``), migrated with ``carehook db upgrade``
    (dropped at the end);
  - two ``carehook serve --no-worker`` processes (ingress only) and nginx (Debian nginx-light)
    balancing over them with keep-alive upstream connections;
  - two ``carehook worker`` processes on the same database.
Every process gets the same config file and the same data keys (``CAREHOOK_DATA_KEYS``): across
machines those two, and the database, are all that must be shared. Then it sends, through nginx,
a flat-out wrk load and a paced one, waits for the workers to finish every event, prints the
figures (also written to bench/results/scale-demo-latest.txt) and stops everything.

    .venv/bin/python deploy/scale_demo.py [--seconds 15] [--rate 1000] [--pg URL]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import harness as h  # noqa: E402 (bench/ is put on the path just above)
import psycopg  # noqa: E402
import targets as t  # noqa: E402

from carehook.crypto import new_key_spec  # noqa: E402
from carehook.settings import WorkerSettings  # noqa: E402

BIN = Path(sys.executable).parent
PORTS = range(8400, 8500)  # this demo's manual-run port range


def _free_ports(n: int) -> list[int]:
    found = []
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == n:
            return found
    raise SystemExit(f"fewer than {n} free ports in {PORTS.start}-{PORTS.stop - 1}")


class Topology:
    """The processes of the demo and the files they share."""

    def __init__(self, work: Path, pg_url: str, secret: str, workers: int = 2) -> None:
        self.work = work
        self.workers = workers
        self.pg_url = pg_url
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.config = work / "carehook.toml"
        self.config.write_text(
            f'data_dir = "."\nlog_level = "warning"\n[storage]\nurl = "{pg_url}"\n'
            f'[sources.abridge]\nvendor = "abridge"\nsecrets = ["{secret}"]\n'
            f'tolerance_seconds = {t.TOLERANCE}\ntrusted_proxies = ["127.0.0.1/32"]\n')
        # the one thing besides the database every machine must share: the payload keys
        self.env = {**os.environ, "CAREHOOK_DATA_KEYS": new_key_spec("demo")}

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = (self.work / f"{name}.log").open("wb")
        proc = subprocess.Popen(cmd, cwd=self.work, env=self.env, stdout=log, stderr=log)
        self.procs.append((name, proc))
        return proc

    def start(self) -> str:
        """Migrate, then start both ingress processes, nginx and both workers; nginx's URL."""
        carehook = str(BIN / "carehook")
        subprocess.run([carehook, "db", "upgrade", "--config", str(self.config)], check=True,
                       env=self.env, cwd=self.work, stdout=subprocess.DEVNULL)
        serve_a, serve_b, front = _free_ports(3)
        for i, port in enumerate((serve_a, serve_b)):
            proc = self._spawn(f"serve-{i + 1}", [carehook, "serve", "--no-worker", "--config",
                                                  str(self.config), "--port", str(port)])
            h.wait_up(port, proc)
        prefix = self.work / "nginx"
        prefix.mkdir()
        prefix.chmod(0o777)  # nginx's worker process runs as nobody
        template = (ROOT / "deploy" / "nginx.conf.template").read_text()
        upstreams = "\n".join(f"    server 127.0.0.1:{p};" for p in (serve_a, serve_b))
        conf = (template.replace("{listen}", f"127.0.0.1:{front}")
                .replace("{upstreams}", upstreams).replace("{prefix}", str(prefix)))
        (prefix / "nginx.conf").write_text(conf)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        proc = self._spawn("nginx", [nginx, "-e", str(prefix / "error.log"), "-p", str(prefix),
                                     "-c", str(prefix / "nginx.conf")])
        try:
            h.wait_up(front, proc)
        except SystemExit:
            print((prefix / "error.log").read_text() + (self.work / "nginx.log").read_text())
            raise
        for i in range(self.workers):
            self._spawn(f"worker-{i + 1}", [carehook, "worker", "--config", str(self.config)])
        return f"http://127.0.0.1:{front}/webhooks/abridge"

    def stop(self) -> None:
        """SIGTERM every process, newest first (workers finish or release what they hold)."""
        for _, proc in reversed(self.procs):
            h.stop(proc)

    def pids(self, prefix: str) -> list[int]:
        """The process ids of the processes whose name starts with ``prefix``."""
        return [p.pid for name, p in self.procs if name.startswith(prefix)]


def _query(url: str, sql: str) -> Any:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchone()


def _wait_drained(url: str, workers: int, timeout: float = 300) -> float:
    started = time.monotonic()
    if not workers:
        return 0.0
    sql = "SELECT count(*) FROM events WHERE status IN ('pending', 'processing', 'retrying')"
    while _query(url, sql)[0] and time.monotonic() - started < timeout:
        time.sleep(0.25)
    return time.monotonic() - started


def _latencies(url: str, after_pk: int) -> list[float]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM a.finished_at - e.received_at) * 1000 FROM events e"
            " JOIN attempts a ON a.event_pk = e.id AND a.outcome = 'done' WHERE e.id > %s",
            (after_pk,)).fetchall()
    return sorted(float(r[0]) for r in rows)


_BACKLOG = "SELECT count(*) FROM events WHERE status IN ('pending', 'processing', 'retrying')"
_DONE = "SELECT count(*) FROM events WHERE status = 'done'"


def _paced(url: str, script: Path, pg_url: str, secret: str, work: Path,
           args: argparse.Namespace) -> str:
    """A steady rate through nginx; ack latency, then receive -> done once drained."""
    paced = work / "paced.tsv"
    h.write_requests(paced, secret, int(args.rate * args.seconds * 1.05) + 500,
                     "paced" + os.urandom(3).hex())
    load = h.run_wrk(url, script, paced, args.seconds, 64, args.rate)
    _wait_drained(pg_url, args.workers, args.drain_seconds)
    lat = _latencies(pg_url, 0)
    nan = float("nan")
    p50 = statistics.median(lat) if lat else nan
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else nan
    return (f"paced {args.rate:,.0f}/s for {args.seconds:.0f} s: delivered {load.rps:,.0f}/s, "
            f"ack p50 {load.p50_ms:.1f} ms p99 {load.p99_ms:.1f} ms, non-2xx {load.non2xx}; "
            f"receive->done p50 {p50:.0f} ms p99 {p99:.0f} ms over {len(lat):,} events "
            f"(backlog left {_query(pg_url, _BACKLOG)[0]})")


def _flat_out(url: str, script: Path, pg_url: str, secret: str, work: Path,
              args: argparse.Namespace) -> str:
    """Flat out through nginx, then the workers' rate on the backlog it left."""
    flat = work / "flat.tsv"
    h.write_requests(flat, secret, args.requests, "flat" + os.urandom(3).hex())
    load = h.run_wrk(url, script, flat, args.seconds, 64)
    done0, started = _query(pg_url, _DONE)[0], time.monotonic()
    _wait_drained(pg_url, args.workers, args.drain_seconds)
    elapsed = time.monotonic() - started
    done, left = _query(pg_url, _DONE)[0], _query(pg_url, _BACKLOG)[0]
    return (f"flat out (wrk -c64, {args.seconds:.0f} s): {load.rps:,.0f} req/s acked, ack p50 "
            f"{load.p50_ms:.1f} ms p99 {load.p99_ms:.1f} ms, non-2xx {load.non2xx}, errors "
            f"{load.errors}; then the {args.workers} workers finished "
            f"{(done - done0) / elapsed:,.0f} events/s for {elapsed:.0f} s "
            f"(backlog left {left:,})")


def run_demo(args: argparse.Namespace) -> list[str]:
    """Start the topology, load it, collect the figures, stop it."""
    work = Path(tempfile.mkdtemp(prefix="carehook-scale-"))
    work.chmod(0o755)
    secret = "demo-" + os.urandom(12).hex()
    pg_url = t.create_pg_database(args.pg, "carehook_scale_demo")
    topo = Topology(work, pg_url, secret, args.workers)
    script = work / "wrk.lua"
    script.write_text(h.LUA)
    lines = [f"scale demo, {datetime.now(UTC):%Y-%m-%d %H:%M UTC}, {_machine()}",
             "topology: PostgreSQL + nginx -> 2 x `carehook serve --no-worker`, "
             f"{args.workers} x `carehook worker` (concurrency "
             f"{WorkerSettings().concurrency} each), all on loopback"]
    try:
        url = topo.start()
        lines.append(_paced(url, script, pg_url, secret, work, args))
        lines.append(_flat_out(url, script, pg_url, secret, work, args))
        lines.append("RSS: " + ", ".join(f"{name} {_rss(p.pid):.0f} MB" for name, p in topo.procs))
    finally:
        topo.stop()
        t.drop_pg_database(args.pg, pg_url)
        if args.keep:
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return lines


def _rss(pid: int) -> float:
    import psutil

    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:
        return 0.0


def _machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, load {load}"


def main() -> None:
    """Parse options, run the demo, print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rate", type=float, default=150, help="the paced run's requests/s")
    parser.add_argument("--drain-seconds", type=float, default=45,
                        help="how long to watch the workers drain after each load")
    parser.add_argument("--requests", type=int, default=80_000, help="flat-out request file")
    parser.add_argument("--workers", type=int, default=2, help="carehook worker processes")
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir (logs)")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    h.ensure_wrk()
    if not shutil.which("nginx"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx-light"], check=False)
    lines = run_demo(args)
    print("\n".join(lines))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "scale-demo-latest.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
