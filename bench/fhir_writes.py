"""FHIR write benchmark: what idempotent creates cost, per kind of server, and what a SMART
Backend Services token costs.

Against the sandbox FHIR server on loopback (uvicorn in a thread), with the write ledger on a
migrated SQLite file (or ``--storage``), it times N distinct creates through
:class:`~carehook.connectors.fhir.writer.IdempotentEhr`:

  1. plain ``FhirClient.create`` (no idempotency: the floor),
  2. conditional mode (ledger intent + POST If-None-Exist + ledger id),
  3. search-first mode, Epic-like (ledger read + search + intent + POST + id),
  4. search-first replays of already-created notes (ledger id → one GET by id),

and the time to sign one client assertion (RS384, ES384). Prints creates/s and p50/p99 per case.
Not a test: it asserts nothing.

    .venv/bin/python bench/fhir_writes.py [--count 300] [--storage URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from carehook.connectors.fhir.client import FhirClient
from carehook.connectors.fhir.keys import KeyStore
from carehook.connectors.fhir.ledger import SqlWriteLedger
from carehook.connectors.fhir.mapping import if_none_exist
from carehook.connectors.fhir.smart import sign_assertion
from carehook.connectors.fhir.writer import IdempotentEhr
from carehook.inbox import migrate
from carehook.sandbox.fhir import FhirServer
from loopback import serve_app

SYSTEM = "urn:carehook:abridge:note"


def _doc(value: str) -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "status": "current",
            "identifier": [{"system": SYSTEM, "value": value}],
            "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                        "data": "aGk="}}]}  # fmt: skip


async def _timed(count: int, one: Callable[[int], Awaitable[object]]) -> list[float]:
    times = []
    for i in range(count):
        started = time.perf_counter()
        await one(i)
        times.append(time.perf_counter() - started)
    return times


def _report(name: str, times: list[float]) -> None:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    rate, p50 = len(times) / sum(times), statistics.median(times) * 1000
    print(f"{name:<42} {rate:8.1f}/s   p50 {p50:6.2f} ms   p99 {p99 * 1000:6.2f} ms")


async def _writes(base: str, storage: str, count: int) -> None:
    ledger = SqlWriteLedger(storage)
    async with httpx.AsyncClient() as http:
        client = FhirClient(http, base)
        conditional = IdempotentEhr(client, ledger, "bench-c", conditional_create="yes")
        search_first = IdempotentEhr(client, ledger, "bench-s", conditional_create="no")

        async def plain(i: int) -> object:
            return await client.create(_doc(f"plain-{i}"))

        def through(ehr: IdempotentEhr, prefix: str) -> Callable[[int], Awaitable[object]]:
            async def one(i: int) -> object:
                value = f"{prefix}-{i}"
                return await ehr.create(_doc(value), if_none_exist=if_none_exist(SYSTEM, value))

            return one

        cases = [("plain create (no idempotency)", plain),
                 ("conditional: intent + If-None-Exist + id", through(conditional, "c")),
                 ("search-first: search + intent + POST + id", through(search_first, "s")),
                 ("search-first replay (ledger id → GET)", through(search_first, "s"))]
        for name, one in cases:
            _report(name, await _timed(count, one))
    ledger.close()


def _signing(folder: Path, count: int) -> None:
    keys = KeyStore(folder)
    for alg in ("RS384", "ES384"):
        info = keys.new("bench", alg)  # type: ignore[arg-type]
        key = keys.private_key(info)
        times = []
        for _ in range(count):
            started = time.perf_counter()
            sign_assertion(key, info.kid, info.alg, client_id="bench", audience="https://t/token",
                           jku=None, now=time.time())  # fmt: skip
            times.append(time.perf_counter() - started)
        _report(f"sign one {alg} client assertion", times)


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--storage", default=None, help="ledger database (default: temp SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        storage = args.storage or f"sqlite:///{Path(tmp) / 'carehook.db'}"
        migrate.upgrade(storage)
        server = FhirServer(conditional_create=True)
        with serve_app(Starlette(routes=[Mount("/fhir", app=server.app)])) as url:
            asyncio.run(_writes(f"{url}/fhir", storage, args.count))
        _signing(Path(tmp) / "keys", args.count)


if __name__ == "__main__":
    main()
