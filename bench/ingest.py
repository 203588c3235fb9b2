"""Ingest benchmark: carehook side by side with a bare route and a FastAPI + Celery receiver.

One run on one machine, every server started afresh for every round (bench/targets.py):
  1. flat out: wrk, 64 connections, pre-signed ~1.5 KB Abridge deliveries (a new event id each),
     3 interleaved rounds, medians: requests/s, ack p50/p99, server CPU and RSS, and the ratios
     a/c, a'/c, a/d, b/d;
  2. ack latency at a fixed offered rate, 50 % of (a)'s maximum (paced wrk, 64 connections):
     delivered rate, p50/p99, and the backlog (accepted, not yet done) over the run;
  3. end to end through ``serve`` (ingress + in-process worker, SQLite): receive -> done
     p50/p99 at fixed arrival rates (500/s first), and the highest rate of a ladder sustained for
     ``--e2e-seconds`` without the backlog growing;
  4. soak: ``--soak-seconds`` at 50 % of (a)'s maximum, RSS every 10 s.
Prints tables, saves JSON and a PNG chart under bench/results/ (``ingest-latest.*`` is the one
the README shows). Not a test: it asserts nothing; goals are printed next to the figures.

    .venv/bin/python bench/ingest.py [--quick] [--rounds 3] [--seconds 10] [--soak-seconds 600]

``--quick`` is the reduced form (one round, short runs, short soak: under 3 minutes). Needs wrk
(installed with apt-get when missing), Redis (started when down), PostgreSQL for (b).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import harness as h
import targets as t
from chart import render

RESULTS = Path(__file__).resolve().parent / "results"
#: lines per second of a flat-out run in its request file: above any rate measured here (9.8k/s)
_LINES_PER_SECOND = 20_000
GOALS = {
    "a'/c": 0.50, "a/c": 0.40, "a/d": 5.0, "b/d": 5.0, "ack_p99_ms": 20.0, "e2e_p99_ms": 250.0,
    "rss_mb": 150.0, "rss_growth": 0.10,
}


def parse_args() -> argparse.Namespace:
    """Command-line options; ``--quick`` overrides the lengths."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="reduced run, under 3 minutes")
    p.add_argument("--targets", default="a,a',b,c,d", help="comma-separated subset")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10, help="each flat-out run")
    p.add_argument("--warmup", type=float, default=2, help="warm-up before each measured run")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--requests", type=int, default=0,
                   help="lines in the flat-out file (default: 20,000 per second of --seconds, so"
                   " that a fast target never sends an event id twice)")
    p.add_argument("--fixed-seconds", type=float, default=30, help="each fixed-rate run")
    p.add_argument("--e2e-seconds", type=float, default=60, help="each end-to-end rate")
    p.add_argument("--e2e-rates", default="", help="rates to try (default: 500, 750, 1000 ... in"
                   " steps of 250/s up to (a)'s maximum; --quick: 500 and 50 %%)")
    p.add_argument("--soak-seconds", type=float, default=600, help="0 skips the soak")
    p.add_argument("--paced", type=float, default=0, metavar="RATE",
                   help="only one paced run of (a) at RATE/s for --fixed-seconds, then receive"
                   " -> done; prints one line, saves nothing (for A/B runs of a change)")
    p.add_argument("--flat-only", action="store_true",
                   help="only the flat-out rounds of --targets; prints the medians, saves nothing"
                   " (for A/B runs of a change or a setting, e.g. CAREHOOK_WORKER__... variables,"
                   " which the carehook targets inherit)")
    p.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres",
                   help="PostgreSQL admin URL for (b) (a fresh database is made and dropped)")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.warmup = 1, 4, 1
        args.fixed_seconds, args.e2e_seconds, args.soak_seconds = 8, 8, min(args.soak_seconds, 20)
    return args


def machine() -> str:
    """CPU model, cores, memory and the load average when the run started."""
    model = "cpu"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()}, load {load}"


class Bench:
    """One benchmark run: the scratch dir, the secret, the request files, the results."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="carehook-bench-"))
        self.env = t.Env(self.work, "bench-" + os.urandom(12).hex(), args.pg)
        self.script = self.work / "wrk.lua"
        self.script.write_text(h.LUA)
        self.seq = 0
        self.results: dict[str, Any] = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
            "config": {k: v for k, v in vars(args).items() if k != "pg"},
        }

    def requests(self, n: int) -> Path:
        """A new file of ``n`` signed deliveries with event ids no other file has."""
        self.seq += 1
        path = self.work / f"requests-{self.seq}.tsv"
        size = h.write_requests(path, self.env.secret, n, f"{os.urandom(3).hex()}{self.seq}")
        self.results["body_bytes"] = size
        return path

    def wrk(self, run: t.Running, reqfile: Path, seconds: float, rate: float = 0) -> h.Load:
        """wrk against ``run``; warns when the file wrapped (event ids repeated)."""
        load = h.run_wrk(run.url, self.script, reqfile, seconds, self.args.connections, rate)
        if load.wraps and run.key in ("a", "a'", "b"):
            print(f"  warning: ({run.key}) went through its request file {load.wraps}x: "
                  "later requests were duplicates (raise --requests)", flush=True)
        return load

    # -- 1. flat out ---------------------------------------------------------------------------

    def flat_out(self, keys: list[str]) -> dict[str, Any]:
        """Each target afresh per round, rounds interleaved (the order rotates), medians."""
        main = self.requests(self.args.requests or int(self.args.seconds * _LINES_PER_SECOND))
        warm = self.requests(int(self.args.warmup * _LINES_PER_SECOND) + 1000)
        rounds: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
        for r in range(self.args.rounds):
            order = keys[r % len(keys):] + keys[:r % len(keys)]
            for key in order:
                run = t.start(key, self.env)
                try:
                    self.wrk(run, warm, self.args.warmup)
                    usage = h.Usage(run.proc.pid)
                    with usage.measure():
                        load = self.wrk(run, main, self.args.seconds)
                finally:
                    run.close()
                row = {"rps": load.rps, "p50_ms": load.p50_ms, "p99_ms": load.p99_ms,
                       "errors": load.errors, "non2xx": load.non2xx, **usage.summary()}
                rounds[key].append(row)
                print(f"  round {r + 1} {_row(key, row)}", flush=True)
        return {k: {"label": t.LABELS[k], "rounds": v,
                    "median": {f: statistics.median(x[f] for x in v) for f in v[0]}}
                for k, v in rounds.items()}

    # -- 2./3./4. paced runs -------------------------------------------------------------------

    def paced(self, key: str, rate: float, seconds: float, rss_every: float = 0.5,
              after: Callable[[t.Running, int], dict[str, Any]] | None = None) -> dict[str, Any]:
        """``key`` afresh, 1 s warm-up, then ``rate``/s for ``seconds`` with backlog sampling."""
        warm = self.requests(int(rate * 1.5) + 64)
        reqfile = self.requests(int(rate * seconds * 1.05) + 1000)
        run = t.start(key, self.env)
        try:
            self.wrk(run, warm, 1, rate)
            start_pk = t.max_event_pk(run) if run.sqlite_path else 0
            samples: list[tuple[float, int]] = []
            stop = threading.Event()
            sampler = threading.Thread(target=_sample_backlog, args=(run, samples, stop))
            usage = h.Usage(run.proc.pid, every=rss_every)
            sampler.start()
            with usage.measure():
                load = self.wrk(run, reqfile, seconds, rate)
            stop.set()
            sampler.join()
            out = {"offered": rate, "delivered": load.rps, "p50_ms": load.p50_ms,
                   "p99_ms": load.p99_ms, "errors": load.errors, "non2xx": load.non2xx,
                   **usage.summary(), "rss_series_mb": usage.rss_mb,
                   **_backlog_figures(samples, rate), "start_pk": start_pk}
            if after is not None:
                out.update(after(run, start_pk))
        finally:
            run.close()
        return out

    def fixed_rate(self, a_max: float) -> dict[str, Any]:
        """Ack latency at 50 % of (a)'s maximum, worker on (a) and off (a')."""
        rate = round(a_max / 2)
        out = {}
        for key in ("a", "a'"):
            out[key] = self.paced(key, rate, self.args.fixed_seconds)
            print("  " + _paced_line(key, out[key]), flush=True)
        return out

    def end_to_end(self, a_max: float) -> list[dict[str, Any]]:
        """Receive -> done at each rate of the ladder; stops after the first unsustained one."""
        given = [float(x) for x in self.args.e2e_rates.split(",") if x.strip()]
        if self.args.quick:
            ladder = given or sorted({500.0, float(round(a_max / 2))})
        else:  # 250/s steps from 500: the figure is the last rate sustained, so keep it fine
            ladder = given or [float(r) for r in range(500, max(501, int(a_max) + 1), 250)]
        out = []
        for rate in ladder:
            row = self.paced("a", rate, self.args.e2e_seconds, after=_drain_and_latency)
            row["sustained"] = (row["delivered"] >= 0.97 * rate and row["flat"]
                                and not row["non2xx"] and not row["errors"])
            out.append(row)
            print("  " + _e2e_line(row), flush=True)
            if not row["sustained"]:
                break
        return out

    def soak(self, a_max: float) -> dict[str, Any]:
        """``--soak-seconds`` at 50 % of (a)'s maximum, worker on, RSS every 10 s."""
        return self.paced("a", round(a_max / 2), self.args.soak_seconds, rss_every=10)


def _sample_backlog(run: t.Running, samples: list[tuple[float, int]],
                    stop: threading.Event) -> None:
    started = time.monotonic()
    while not stop.is_set():
        try:
            samples.append((time.monotonic() - started, t.backlog(run)))
        except Exception as exc:
            print(f"  backlog sample failed: {type(exc).__name__}", flush=True)
        stop.wait(1.0)


def _backlog_figures(samples: list[tuple[float, int]], rate: float) -> dict[str, Any]:
    """Least-squares slope of the backlog (events/s) and whether it is flat (< 1 % of rate)."""
    if len(samples) < 3:
        return {"backlog_slope": 0.0, "backlog_max": 0, "backlog_end": 0, "flat": True}
    xs, ys = [s[0] for s in samples], [s[1] for s in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    return {"backlog_slope": slope, "backlog_max": max(ys), "backlog_end": ys[-1],
            "flat": slope < max(1.0, 0.01 * rate)}


def _drain_and_latency(run: t.Running, start_pk: int, timeout: float = 120) -> dict[str, Any]:
    started = time.monotonic()
    while t.backlog(run) and time.monotonic() - started < timeout:
        time.sleep(0.5)
    lat = t.receive_to_done_ms(run, start_pk)
    if not lat:
        return {"e2e_events": 0}
    return {"e2e_events": len(lat), "drain_s": time.monotonic() - started,
            "e2e_p50_ms": statistics.median(lat),
            "e2e_p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))]}


def _row(key: str, r: dict[str, Any]) -> str:
    return (f"({key:<2}) {t.LABELS[key]:<38} {r['rps']:>8,.0f} req/s  p50 {r['p50_ms']:>7.2f}"
            f"  p99 {r['p99_ms']:>8.2f} ms  CPU {r['cpu_pct']:>4.0f} %  RSS {r['rss_mb']:>4.0f} MB"
            + (f"  errors {r['errors']} non-2xx {r['non2xx']}" if r["errors"] or r["non2xx"]
               else ""))


def _paced_line(key: str, r: dict[str, Any]) -> str:
    return (f"({key:<2}) offered {r['offered']:>6,.0f}/s delivered {r['delivered']:>6,.0f}/s  "
            f"ack p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms  backlog max "
            f"{r['backlog_max']} end {r['backlog_end']} slope {r['backlog_slope']:+.1f}/s "
            f"({_trend(key, r)})  CPU {r['cpu_pct']:.0f} % "
            f"({_cpu_us(r):.0f} µs a request)  RSS {r['rss_mb']:.0f} MB")


def _cpu_us(r: dict[str, Any]) -> float:
    """The server's CPU time (all threads, user + system) per delivered request, while loaded:
    steadier than a rate or a backlog slope for telling two builds apart."""
    return r["cpu_pct"] * 10_000 / r["delivered"] if r["delivered"] else float("nan")


def _trend(key: str, r: dict[str, Any]) -> str:
    if key == "a'":
        return "no worker: grows by design"
    return "flat" if r["flat"] else "GROWING"


def _e2e_line(r: dict[str, Any]) -> str:
    nan = float("nan")
    return (f"{r['offered']:>6,.0f}/s: delivered {r['delivered']:,.0f}/s, receive->done p50 "
            f"{r.get('e2e_p50_ms', nan):.0f} ms p99 {r.get('e2e_p99_ms', nan):.0f}"
            f" ms over {r.get('e2e_events', 0)} events, backlog slope {r['backlog_slope']:+.1f}/s"
            f" max {r['backlog_max']}: {'sustained' if r['sustained'] else 'NOT sustained'}")


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(res: dict[str, Any]) -> list[str]:
    """The summary lines (printed, and saved as ingest-latest.txt)."""
    fo = res["flat_out"]
    med = {k: v["median"] for k, v in fo.items()}
    lines = [f"carehook ingest benchmark, {res['date']}", f"machine: {res['machine']}",
             f"load: wrk -t1 -c{res['config']['connections']}, {res['body_bytes']} B signed "
             f"Abridge bodies, new event id each; median of {res['config']['rounds']} rounds of "
             f"{res['config']['seconds']:.0f} s, fresh server each", "",
             "| target | req/s | ack p50 | ack p99 | server CPU | RSS |",
             "|---|---|---|---|---|---|"]
    for k, m in med.items():
        lines.append(f"| ({k}) {fo[k]['label']} | {m['rps']:,.0f} | {m['p50_ms']:.2f} ms | "
                     f"{m['p99_ms']:.2f} ms | {m['cpu_pct']:.0f} % | {m['rss_mb']:.0f} MB |")
    lines.append("")
    for name, (x, y) in {"a/c": ("a", "c"), "a'/c": ("a'", "c"), "a/d": ("a", "d"),
                         "b/d": ("b", "d")}.items():
        if x in med and y in med:
            ratio = med[x]["rps"] / med[y]["rps"]
            goal = GOALS[name]
            text = f"{ratio * 100:.0f} %" if name.endswith("/c") else f"{ratio:.1f}x"
            want = f">= {goal * 100:.0f} %" if name.endswith("/c") else f">= {goal:.0f}x"
            lines.append(f"{name:<5} = {text:<7} goal {want:<7} {_verdict(ratio >= goal)}")
    for key, r in res.get("fixed_rate", {}).items():
        lines.append("fixed rate " + _paced_line(key, r))
        if key == "a":
            ok = r["delivered"] >= 0.97 * r["offered"] and r["p99_ms"] <= 20 and r["flat"]
            lines.append(f"  goal at 50 % of a's max: full rate, ack p99 <= 20 ms, backlog flat:"
                         f" {_verdict(ok)}")
    for r in res.get("e2e", []):
        lines.append("end to end " + _e2e_line(r))
    e2e500 = [r for r in res.get("e2e", []) if r["offered"] == 500 and "e2e_p99_ms" in r]
    if e2e500:
        lines.append(f"  goal receive->done p99 <= 250 ms at 500/s: "
                     f"{_verdict(e2e500[0]['e2e_p99_ms'] <= GOALS['e2e_p99_ms'])}")
    good = [r["offered"] for r in res.get("e2e", []) if r["sustained"]]
    if res.get("e2e"):
        lines.append(f"  highest rate sustained for {res['config']['e2e_seconds']:.0f} s: "
                     + (f"{max(good):,.0f}/s" if good else "none of the ladder"))
    if "soak" in res:
        lines.extend(_soak_lines(res["soak"], res["config"]["soak_seconds"]))
    return lines


def _soak_lines(s: dict[str, Any], seconds: float) -> list[str]:
    series = s["rss_series_mb"]
    settled = series[min(len(series) - 1, 6)] if series else 0.0  # after the first minute
    growth = (series[-1] - settled) / settled if settled else 0.0
    ok = max(series, default=0) <= GOALS["rss_mb"] and growth < GOALS["rss_growth"]
    return [f"soak {seconds:.0f} s at {s['offered']:,.0f}/s: delivered {s['delivered']:,.0f}/s, "
            f"ack p99 {s['p99_ms']:.1f} ms, backlog slope {s['backlog_slope']:+.1f}/s; RSS (every"
            f" 10 s) first {series[0] if series else 0:.0f} MB, after 1 min {settled:.0f} MB, "
            f"max {max(series, default=0):.0f} MB, last {series[-1] if series else 0:.0f} MB "
            f"(growth after 1 min {growth * 100:+.1f} %)",
            f"  goal RSS <= 150 MB and growth < 10 %: {_verdict(ok)}"]


def save(res: dict[str, Any], lines: list[str]) -> Path:
    """JSON, text and PNG under bench/results/, stamped and as <name>-latest.* (a --quick run
    is ``ingest-quick``, so it never replaces the full run the README shows)."""
    RESULTS.mkdir(exist_ok=True)
    name = "ingest-quick" if res["config"]["quick"] else "ingest"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    png = RESULTS / f"{name}-{stamp}.png"
    render(res, png)
    (RESULTS / f"{name}-{stamp}.json").write_text(json.dumps(res, indent=1))
    shutil.copyfile(png, RESULTS / f"{name}-latest.png")
    (RESULTS / f"{name}-latest.json").write_text(json.dumps(res, indent=1))
    (RESULTS / f"{name}-latest.txt").write_text("\n".join(lines) + "\n")
    return png


def main() -> None:
    """Run every part, print the summary, save the results."""
    args = parse_args()
    h.ensure_wrk()
    keys = [k.strip() for k in args.targets.split(",") if k.strip()]
    unknown = [k for k in keys if k not in t.LABELS]
    if unknown:
        known = ", ".join(t.LABELS)
        raise SystemExit(f"unknown target(s) {', '.join(unknown)}: choose from {known}")
    if "d" in keys:
        h.ensure_redis()
    if "b" in keys and not t.pg_available(args.pg):
        print(f"PostgreSQL at {args.pg} does not answer: (b) is left out", flush=True)
        keys.remove("b")
    bench = Bench(args)
    print(f"ingest benchmark: {bench.results['machine']}", flush=True)
    if args.paced:
        try:
            row = bench.paced("a", args.paced, args.fixed_seconds, after=_drain_and_latency)
        finally:
            shutil.rmtree(bench.work, ignore_errors=True)
        print(_paced_line("a", row) + f"\n  receive->done p50 {row.get('e2e_p50_ms', 0):.0f} ms"
              f" p99 {row.get('e2e_p99_ms', 0):.0f} ms over {row.get('e2e_events', 0)} events",
              flush=True)
        return
    if args.flat_only:
        try:
            flat = bench.flat_out(keys)
        finally:
            shutil.rmtree(bench.work, ignore_errors=True)
        print("\n".join(f"median {_row(k, v['median'])}" for k, v in flat.items()), flush=True)
        return
    try:
        res = bench.results
        print("1. flat out", flush=True)
        res["flat_out"] = bench.flat_out(keys)
        a_max = res["flat_out"]["a"]["median"]["rps"] if "a" in keys else 2000.0
        print(f"2. fixed rate: 50 % of (a)'s maximum = {a_max / 2:,.0f}/s", flush=True)
        res["fixed_rate"] = bench.fixed_rate(a_max)
        print("3. end to end (serve, SQLite, worker on)", flush=True)
        res["e2e"] = bench.end_to_end(a_max)
        if args.soak_seconds > 0:
            print(f"4. soak: {args.soak_seconds:.0f} s at {a_max / 2:,.0f}/s", flush=True)
            res["soak"] = bench.soak(a_max)
    finally:
        shutil.rmtree(bench.work, ignore_errors=True)
    lines = report(res)
    print("\n" + "\n".join(lines), flush=True)
    print(f"\nsaved {save(res, lines)} (and its *-latest.* copies)", flush=True)


if __name__ == "__main__":
    main()
