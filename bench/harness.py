"""What the benchmarks share: signed request files, wrk (flat out or paced), servers, sampling.

Request files hold one pre-signed Abridge delivery per line (``signature TAB timestamp TAB
body``), every body a new event id and about 1.5 KB. wrk's Lua script reads the file line by
line as it sends (nothing is preloaded, so a file may hold millions of requests) and, at the end,
reopens it and counts the wrap (a wrapped run repeats event ids: the run prints a warning).

Paced runs ("open loop"): the script keeps one schedule per wrk thread, a send slot every
``1/rate`` s; a connection that is free asks ``delay()`` for the wait to its slot. With 64
connections this is an open loop until all 64 are waiting for answers; then the delivered rate
falls below the offered one, which the run reports. Latencies are wrk's (send to answer).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

LUA = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } carehook_timespec;
int clock_gettime(int clk, carehook_timespec *tp);
]]
local tspec = ffi.new("carehook_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, tspec)
  return tonumber(tspec.tv_sec) * 1000 + tonumber(tspec.tv_nsec) / 1e6
end
local threads = {}
setup = function(thread) table.insert(threads, thread) end
local fh, path, interval, start, sent, wraps = nil, nil, 0, nil, 0, 0
init = function(args)
  path = args[1]
  fh = assert(io.open(args[2], "r"))
  local rate = tonumber(args[3]) or 0
  if rate > 0 then interval = 1000 / rate end
  wrk.thread:set("wraps", 0)
end
request = function()
  local line = fh:read("*l")
  if line == nil then
    fh:seek("set", 0)
    wraps = wraps + 1
    wrk.thread:set("wraps", wraps)
    line = fh:read("*l")
  end
  local sig, ts, body = line:match("^(%S+)\t(%S+)\t(.*)$")
  return wrk.format("POST", path, {
    ["Content-Type"] = "application/json",
    ["x-abridge-signature"] = sig,
    ["x-abridge-timestamp"] = ts,
  }, body)
end
if os.getenv("CAREHOOK_BENCH_PACED") == "1" then
  delay = function()
    local t = now_ms()
    if start == nil then start = t end
    local slot = start + sent * interval
    sent = sent + 1
    if slot <= t then return 0 end
    return slot - t
  end
end
done = function(summary, latency, requests)
  local wrapped = 0
  for _, t in ipairs(threads) do wrapped = wrapped + (tonumber(t:get("wraps")) or 0) end
  io.write(string.format("RESULT {\"requests\": %d, \"duration_us\": %d, \"p50_us\": %d, " ..
    "\"p99_us\": %d, \"errors\": %d, \"non2xx\": %d, \"wraps\": %d}\n", summary.requests,
    summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, wrapped))
end
"""

#: a realistic, PHI-free Abridge ``data`` block (ids and metadata), padded to about 1.5 KB
_SECTIONS = ("chief_complaint", "history_of_present_illness", "review_of_systems",
             "physical_exam", "assessment", "plan", "medications", "allergies", "follow_up")


def _body(run: str, i: int, stamp: str) -> str:
    data = {
        "session_id": f"ses_{run}_{i % 5000:05d}", "note_id": f"note_{run}_{i:08d}",
        "provider_id": f"prov_{i % 40:04d}", "status": "completed", "org_id": "org_bench_0001",
        "encounter": {"id": f"enc_{i % 5000:05d}", "kind": "ambulatory", "language": "en-US",
                      "started_at": stamp, "duration_seconds": 900 + i % 600,
                      "location_id": f"loc_{i % 12:03d}", "specialty": "internal_medicine"},
        "audio": {"codec": "opus", "sample_rate_hz": 16000, "channels": 1,
                  "duration_ms": 912000 + i % 9000, "segments": 12, "diarized": True},
        "sections": [{"name": n, "status": "generated", "version": 3, "words": 100 + k * 17}
                     for k, n in enumerate(_SECTIONS)],
        "model": {"name": "abridge-note", "version": "2026.11.3", "region": "us-east-1"},
        "links": {"session": f"https://api.abridge.example/v1/sessions/ses_{i % 5000:05d}",
                  "note": f"https://api.abridge.example/v1/notes/note_{run}_{i:08d}"},
    }
    return json.dumps({"event_id": f"evt_{run}_{i:08d}", "type": "encounter.session.completed",
                       "timestamp": stamp, "data": data}, separators=(",", ":"))


def write_requests(path: Path, secret: str, n: int, run: str) -> int:
    """Write ``n`` pre-signed deliveries (new event ids ``evt_<run>_<i>``); their mean size."""
    now = str(int(time.time()))
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    key = secret.encode()
    total = 0
    with path.open("w") as fh:
        for i in range(n):
            body = _body(run, i, stamp)
            sig = hmac.new(key, f"{now}.{body}".encode(), hashlib.sha256).hexdigest()
            fh.write(f"{sig}\t{now}\t{body}\n")
            total += len(body)
    return total // max(n, 1)


@dataclass
class Load:
    """What one wrk run saw."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    non2xx: int
    wraps: int

    @property
    def rps(self) -> float:
        """Delivered requests per second."""
        return self.requests / self.seconds


def run_wrk(url: str, script: Path, reqfile: Path, seconds: float, conns: int,
            rate: float = 0.0) -> Load:
    """One wrk run, flat out (``rate`` 0) or paced at ``rate`` requests/s."""
    path = "/" + url.split("/", 3)[3]
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
           "-s", str(script), url, "--", path, str(reqfile), str(rate)]
    env = {**os.environ, "CAREHOOK_BENCH_PACED": "1" if rate else "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            return Load(r["requests"], r["duration_us"] / 1e6, r["p50_us"] / 1000,
                        r["p99_us"] / 1000, r["errors"], r["non2xx"], r["wraps"])
    raise SystemExit(f"wrk printed no result:\n{proc.stdout}\n{proc.stderr}")


def ensure_wrk() -> None:
    """Install wrk (Debian) when it is missing and we are root."""
    if shutil.which("wrk"):
        return
    if os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install -y wrk")


def ensure_redis(host: str = "127.0.0.1", port: int = 6379) -> None:
    """Start a Redis server (no persistence) on ``host:port`` when none answers."""
    if _redis_up(host, port):
        return
    print(f"Redis is down: starting redis-server on {host}:{port}", flush=True)
    subprocess.run(["redis-server", "--daemonize", "yes", "--bind", host, "--port", str(port),
                    "--save", "", "--appendonly", "no"], check=True)
    deadline = time.monotonic() + 10
    while not _redis_up(host, port):
        if time.monotonic() > deadline:
            raise SystemExit("redis-server did not come up")
        time.sleep(0.1)


def _redis_up(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the benchmarks' servers take any free port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    """Wait until something accepts connections on ``port`` (or the process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listened on port {port} within {timeout:.0f} s")


@dataclass
class Usage:
    """CPU and memory of a process tree over a run, sampled in a thread."""

    pid: int
    every: float = 0.5
    cpu_seconds: float = 0.0
    rss_mb: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.pid)
        return [root, *root.children(recursive=True)]

    def _cpu(self) -> float:
        total = 0.0
        for p in self._tree():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def _rss(self) -> float:
        total = 0
        for p in self._tree():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total / 2**20

    @contextlib.contextmanager
    def measure(self) -> Iterator[Usage]:
        """Sample RSS every ``every`` s and count CPU seconds while the block runs."""
        before, started = self._cpu(), time.monotonic()
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            self.cpu_seconds = self._cpu() - before
            self.wall = time.monotonic() - started

    def _sample(self) -> None:
        while True:
            with contextlib.suppress(psutil.Error):
                self.rss_mb.append(self._rss())
            if self._stop.wait(self.every):
                return

    def summary(self) -> dict[str, Any]:
        """CPU as % of one core over the run, peak and last RSS."""
        return {"cpu_pct": 100 * self.cpu_seconds / max(self.wall, 1e-9),
                "rss_mb": max(self.rss_mb, default=0.0),
                "rss_last_mb": self.rss_mb[-1] if self.rss_mb else 0.0}


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
