"""Healthie transcript benchmark: WebVTT parse time and memory, and the whole fetch over loopback.

1. Parse: a WebVTT file of ``--minutes`` of conversation (one cue per ~4 s, Zoom-style
   ``Name: text`` cues) is parsed with :func:`carehook.workflows.vtt.parse_vtt`; prints the file
   size, cues, ms per file (median of ``--repeat``) and the parse's peak Python memory.
2. Fetch: the transcript step's I/O against the sandbox's fake Healthie on 127.0.0.1 (query the
   appointment, download the VTT from its ``expiring_url``, parse): median ms per fetch, and with
   the first link already expired (one re-query).

Not a test: it asserts nothing.

    .venv/bin/python bench/transcripts.py [--minutes 60] [--repeat 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from carehook.connectors.healthie import HealthieClient
from carehook.connectors.outbound import outbound_client
from carehook.sandbox.healthie import FakeHealthieApi
from carehook.workflows.transcripts import fetch_vtt
from carehook.workflows.vtt import parse_vtt, speaker_roles
from loopback import serve_app

ROLES = speaker_roles("Dr. Maya Okafor", "Jordan Avery")


def _stamp(ms: int) -> str:
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    return f"{h:02d}:{m:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def synthetic_vtt(minutes: int) -> str:
    """``minutes`` of alternating speakers, one cue per 4 seconds."""
    lines = ["WEBVTT", ""]
    for n in range(minutes * 15):
        who = "Dr. Maya Okafor" if n % 2 == 0 else "Jordan Avery"
        text = "Any side effects since we increased the dose, like nausea or trouble sleeping?"
        lines += [str(n + 1), f"{_stamp(n * 4000)} --> {_stamp(n * 4000 + 3500)}",
                  f"{who}: {text}", ""]
    return "\n".join(lines)


def bench_parse(minutes: int, repeat: int) -> None:
    text = synthetic_vtt(minutes)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        items = parse_vtt(text, ROLES, "bench")
        times.append((time.perf_counter() - start) * 1000)
    tracemalloc.start()
    parse_vtt(text, ROLES, "bench")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    median = statistics.median(times)
    print(f"parse  {minutes} min, {len(text.encode()) / 1024:.0f} KiB, {len(items)} cues: "
          f"median {median:.1f} ms/file ({len(items) / median * 1000:,.0f} cues/s), "
          f"peak {peak / 1024 / 1024:.1f} MiB")


async def _fetches(url: str, fake: FakeHealthieApi, repeat: int, expire: bool) -> list[float]:
    times = []
    async with outbound_client(allow_private=True) as http:
        client = HealthieClient(http, url, "bench-key")
        for n in range(repeat):
            if expire:
                fake.expire_next_links(2)
            start = time.perf_counter()
            _, text, link = await fetch_vtt(client, str(700000 + n))
            parse_vtt(text, ROLES, link.transcript_id)
            times.append((time.perf_counter() - start) * 1000)
    return times


def bench_fetch(repeat: int) -> None:
    fake = FakeHealthieApi("bench-key")
    with serve_app(fake) as base:
        for expire in (False, True):
            times = asyncio.run(_fetches(base + "/graphql", fake, repeat, expire))
            label = "first link expired (re-query)" if expire else "fresh link"
            print(f"fetch  query + VTT download + parse over loopback, {label}: median "
                  f"{statistics.median(times):.1f} ms, max {max(times):.1f} ms ({repeat} runs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    bench_parse(args.minutes, args.repeat)
    bench_fetch(args.repeat)


if __name__ == "__main__":
    main()
