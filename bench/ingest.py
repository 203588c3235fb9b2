"""Ingest benchmark: verified, durably committed requests/s and ack latency vs a bare endpoint.

Starts, one after the other on this machine and under the same load from wrk:
  1. a bare Starlette endpoint that answers 200 without work (the ceiling),
  2. carehook (``carehook serve``) on the embedded SQLite store,
and replays pre-signed Abridge requests, each a new event (distinct event ids), so every request
carehook acknowledges is verified, parsed, encrypted and committed. Prints requests/s and ack
p50/p99 per target and the ratio. Not a test: it asserts nothing.

    .venv/bin/python bench/ingest.py [--seconds 10] [--connections 64] [--storage URL]

Needs wrk (Debian package ``wrk``); installs it with apt-get when run as root and it is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent

LUA = r"""
local reqs = {}
local idx = 0
init = function(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    local sig, ts, body = line:match("^(%S+)\t(%S+)\t(.*)$")
    reqs[#reqs + 1] = wrk.format("POST", args[2], {
      ["Content-Type"] = "application/json",
      ["x-abridge-signature"] = sig,
      ["x-abridge-timestamp"] = ts,
    }, body)
  end
  f:close()
  idx = tonumber(args[3]) or 0
end
request = function()
  idx = idx + 1
  if idx > #reqs then idx = 1 end
  return reqs[idx]
end
local statuses = {}
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT {\"requests\": %d, \"duration_us\": %d, \"p50_us\": %d, " ..
    "\"p99_us\": %d, \"errors\": %d, \"non2xx\": %d}\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""

BARE_APP = """
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

async def ok(request):
    await request.body()
    return Response(b'{"received":true}', media_type="application/json")

app = Starlette(routes=[Route("/webhooks/{source}", ok, methods=["POST"])])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server on port {port} did not come up")


def make_requests(path: Path, secret: str, n: int, run: str) -> None:
    now = str(int(time.time()))
    with path.open("w") as fh:
        for i in range(n):
            body = json.dumps({
                "event_id": f"evt_{run}_{i}", "type": "encounter.session.completed",
                "timestamp": "2026-11-23T10:00:00Z",
                "data": {"session_id": f"ses_{i % 500}", "note_id": f"note_{i}",
                         "status": "completed"},
            }, separators=(",", ":"))
            sig = hmac.new(secret.encode(), f"{now}.{body}".encode(), hashlib.sha256).hexdigest()
            fh.write(f"{sig}\t{now}\t{body}\n")


def run_wrk(port: int, reqfile: Path, script: Path, seconds: int, conns: int, offset: int) -> dict:
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script),
           f"http://127.0.0.1:{port}/webhooks/abridge", "--", str(reqfile), "/webhooks/abridge",
           str(offset)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
            result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
            return result
    raise SystemExit(f"wrk printed no result:\n{proc.stdout}\n{proc.stderr}")


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")


def bench_target(name: str, cmd: list[str], port: int, env: dict, args: argparse.Namespace,
                 reqfile: Path, script: Path, offset: int) -> dict:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_up(port)
        run_wrk(port, reqfile, script, 2, args.connections, offset + 10_000_000)  # warm-up
        result = run_wrk(port, reqfile, script, args.seconds, args.connections, offset)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"{name:<28} {result['rps']:>9.0f} req/s   p50 {result['p50_us'] / 1000:>6.2f} ms   "
          f"p99 {result['p99_us'] / 1000:>6.2f} ms   errors {result['errors']}  "
          f"non-2xx {result['non2xx']}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--storage", default=None, help="storage URL (default: SQLite)")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--no-worker", action="store_true",
                        help="serve without the in-process worker (the ingest path alone)")
    args = parser.parse_args()
    ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="carehook-bench-"))
    secret = "bench-secret-" + os.urandom(8).hex()
    reqfile, script = work / "requests.tsv", work / "replay.lua"
    script.write_text(LUA)
    make_requests(reqfile, secret, 200_000, os.urandom(4).hex())
    (work / "bare_app.py").write_text(BARE_APP)
    storage = f'[storage]\nurl = "{args.storage}"\nauto_migrate = true\n' if args.storage else ""
    (work / "carehook.toml").write_text(
        f'data_dir = "."\nlog_level = "{args.log_level}"\n{storage}'
        + ("[worker]\nenabled = false\n" if args.no_worker else "")
        + f'[sources.abridge]\nvendor = "abridge"\nsecrets = ["{secret}"]\n')
    print(f"ingest benchmark: wrk -t1 -c{args.connections} -d{args.seconds}s, pre-signed Abridge "
          f"events, {os.cpu_count()} cores", flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(work), os.environ.get("PYTHONPATH")]))}
    env.pop("CAREHOOK_CONFIG", None)
    uv = [str(BIN / "uvicorn"), "--log-level", "warning", "--no-access-log"]
    p1, p2 = free_port(), free_port()
    bare = bench_target("bare starlette (ceiling)", [*uv, "bare_app:app", "--port", str(p1)],
                        p1, env, args, reqfile, script, 0)
    label = (args.storage or "sqlite").split(":")[0] + (", no worker" if args.no_worker else "")
    ours = bench_target(f"carehook ({label})",
                        [str(BIN / "carehook"), "serve", "--config", str(work / "carehook.toml"),
                         "--port", str(p2)], p2, env, args, reqfile, script, 0)
    print(f"carehook / bare = {ours['rps'] / bare['rps'] * 100:.0f} %   "
          f"(goal >= 50 %; ack p99 goal <= 20 ms at 64 connections)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
