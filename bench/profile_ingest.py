"""Profile carehook's request path under load: py-spy on one fresh target while wrk runs.

Starts a target of bench/targets.py afresh (default (a'): SQLite, worker off), warms it up,
then records it with py-spy (all threads, GIL holder only with ``--gil``) during a flat-out wrk
run and prints the hottest frames by own time and by inclusive time (carehook frames), and
writes a speedscope JSON / raw file under bench/results/ for a closer look.

    .venv/bin/python bench/profile_ingest.py [--target a'] [--seconds 10] [--gil]
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import harness as h
import targets as t

RESULTS = Path(__file__).resolve().parent / "results"


def summarize(raw: Path, top: int) -> list[str]:
    """Own-time leaves and inclusive carehook frames as shares of all samples."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():  # a frame whose text spans lines (a SQL string): not a sample
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            if "carehook/" in frame and "bin/carehook" not in frame:
                incl[frame] += n
    lines = [f"{total} samples"]
    lines += [f"{n * 100 / total:5.1f} % own  {f[:120]}" for f, n in own.most_common(top)]
    lines += [f"{n * 100 / total:5.1f} % incl {f[:120]}" for f, n in incl.most_common(top)]
    return lines


def main() -> None:
    """Start, load, record, print."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", default="a'", choices=["a", "a'", "b"])
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--rate", type=float, default=0, help="paced instead of flat out")
    p.add_argument("--gil", action="store_true", help="only samples holding the GIL")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    h.ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="carehook-profile-"))
    env = t.Env(work, "bench-" + os.urandom(12).hex(),
                "postgresql://postgres@127.0.0.1:5432/postgres")
    script = work / "wrk.lua"
    script.write_text(h.LUA)
    reqs = work / "requests.tsv"
    h.write_requests(reqs, env.secret, 80_000, os.urandom(3).hex())
    warm = work / "warm.tsv"
    h.write_requests(warm, env.secret, 10_000, "warm" + os.urandom(3).hex())
    RESULTS.mkdir(exist_ok=True)
    raw = RESULTS / f"profile-{args.target.replace(chr(39), 'p')}.txt"
    run = t.start(args.target, env)
    try:
        h.run_wrk(run.url, script, warm, 1, 64)
        spy = [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(run.proc.pid),
               "-d", str(int(args.seconds)), "-r", "200", "-f", "raw", "-o", str(raw),
               "--nonblocking", *(["--gil"] if args.gil else [])]
        recorder = threading.Thread(target=subprocess.run, args=(spy,),
                                    kwargs={"capture_output": True})
        recorder.start()
        load = h.run_wrk(run.url, script, reqs, args.seconds, 64, args.rate)
        recorder.join()
    finally:
        run.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"({args.target}) {load.rps:,.0f} req/s, p50 {load.p50_ms:.1f} ms, p99 "
          f"{load.p99_ms:.1f} ms while recording")
    print("\n".join(summarize(raw, args.top)))
    print(f"raw stacks: {raw} (flamegraph: py-spy's raw format, e.g. speedscope.app)")


if __name__ == "__main__":
    main()
