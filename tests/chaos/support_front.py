"""What the front-door chaos tests share: real `carehook` processes, a retrying vendor, figures.

``CAREHOOK_CHAOS_FULL=1`` (``make chaos``) runs the full sizes; otherwise (``make test``) the short
ones. Every test prints one ``CHAOS <name>: sent=... acknowledged=... stored=... terminal=...
duplicates=... 5xx=...`` line (``pytest -s`` shows it) and fails on any loss.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from carehook.envelope import SignedRequest
from carehook.settings import load_settings
from carehook.sources import Source, build_source
from carehook.vendors import builtin_vendors

CAREHOOK = str(Path(sys.executable).parent / "carehook")
FULL = os.environ.get("CAREHOOK_CHAOS_FULL") == "1"
SECRET = "abridge-chaos-secret"


def scale(short: int, full: int) -> int:
    """``full`` under ``make chaos``, else ``short``."""
    return full if FULL else short


def figures(name: str, **numbers: object) -> None:
    """Print the test's figures on one line."""
    print(f"\nCHAOS {name}: " + " ".join(f"{k}={v}" for k, v in numbers.items()), flush=True)


def env() -> dict[str, str]:
    """This environment without CAREHOOK_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CAREHOOK_")}


def write_config(folder: Path, storage_url: str | None = None, extra: str = "",
                 log_level: str = "info") -> Path:  # fmt: skip
    """A config with one Abridge source; ``extra`` TOML is appended (its lines before a table
    header still belong to ``[sources.abridge]``)."""
    lines = ['data_dir = "."', f'log_level = "{log_level}"']
    if storage_url:
        lines += ["[storage]", f'url = "{storage_url}"']
    lines += ["[worker]", "concurrency = 8", "shutdown_grace_seconds = 5", "poll_seconds = 0.5",
              "lease_seconds = 6", "[sources.abridge]", 'vendor = "abridge"',
              f'secrets = ["{SECRET}"]']  # fmt: skip
    path = folder / "carehook.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@dataclass
class Proc:
    """A carehook process with its output in a file."""

    popen: subprocess.Popen[bytes]
    log: Path
    args: tuple[str, ...]

    def alive(self) -> bool:
        """True while it runs."""
        return self.popen.poll() is None

    def kill(self) -> None:
        """kill -9."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM and wait (kill -9 after 30 s)."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def rss_kib(self) -> int:
        """Resident memory now, in KiB."""
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


def start(folder: Path, *args: str, name: str) -> Proc:
    """Start ``carehook <args>`` in ``folder``; output appended to ``<name>.log``."""
    log = folder / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen([CAREHOOK, *args], cwd=folder, env=env(), stdout=out,
                                 stderr=subprocess.STDOUT)  # fmt: skip
    return Proc(popen, log, args)


async def wait_healthy(proc: Proc, port: int, seconds: float = 60) -> Proc:
    """Return ``proc`` once ``/healthz`` on ``port`` answers."""
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            if not proc.alive() or time.monotonic() > deadline:
                raise AssertionError(f"serve did not start: {proc.log.read_text()[-2000:]}")
            await asyncio.sleep(0.1)


async def start_serve(folder: Path, config: Path, port: int, name: str, *extra: str) -> Proc:
    """`carehook serve` on ``port``, once healthy."""
    proc = start(folder, "serve", "--config", str(config), "--port", str(port), *extra, name=name)
    return await wait_healthy(proc, port)


def abridge_source(config: Path) -> Source:
    """The config's Abridge source (to sign as the vendor does)."""
    settings = load_settings(config)
    return build_source("abridge", settings.sources["abridge"], builtin_vendors())


def sign(source: Source, body: bytes, now: float | None = None,
         content_type: str = "application/json") -> dict[str, str]:  # fmt: skip
    """Headers a genuine sender of ``source`` sends with ``body``."""
    headers = {"content-type": content_type}
    request = SignedRequest("POST", source.public_path, "", headers, body)
    headers.update(source.scheme.sign(request, source.secrets[0], time.time() if now is None
                                      else now))  # fmt: skip
    return headers


def session_event(n: int, run: str, extra: dict[str, Any] | None = None) -> tuple[str, bytes]:
    """Event ``n``: a completed session ``ses_<run>_<n>`` (its own note): id and body."""
    event_id = f"evt_{run}_{n:06d}"
    data = {"session_id": f"ses_{run}_{n:06d}", "status": "completed", **(extra or {})}
    body = json.dumps({"event_id": event_id, "type": "encounter.session.completed",
                       "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "data": data}).encode()  # fmt: skip
    return event_id, body


@dataclass
class Vendor:
    """A vendor: retries each event until a 200 (5xx and connection errors), counts everything."""

    source: Source
    urls: list[str]
    run: str
    acked: set[str] = field(default_factory=set)
    attempts: int = 0
    server_errors: int = 0
    refused: list[str] = field(default_factory=list)

    async def send_all(self, count: int, lanes: int = 16) -> None:
        """Deliver events 0..count-1 over ``lanes`` keep-alive connections."""
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(count):
            queue.put_nowait(n)
        await asyncio.gather(*(self._lane(queue) for _ in range(lanes)))

    async def _lane(self, queue: asyncio.Queue[int]) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            while not queue.empty():
                await self._deliver(client, queue.get_nowait())

    async def _deliver(self, client: httpx.AsyncClient, n: int) -> None:
        event_id, body = session_event(n, self.run)
        url = self.urls[n % len(self.urls)]
        deadline = time.monotonic() + 120
        while event_id not in self.acked:
            assert time.monotonic() < deadline, f"{event_id} was never acknowledged"
            self.attempts += 1
            try:
                resp = await client.post(url, content=body, headers=sign(self.source, body))
            except httpx.TransportError:  # the gateway is down: a vendor tries again
                await asyncio.sleep(0.05)
                continue
            if resp.status_code == 200:
                self.acked.add(event_id)
            elif resp.status_code >= 500:
                self.server_errors += 1
                await asyncio.sleep(0.05)
            else:
                self.refused.append(f"{event_id}: {resp.status_code}")
                return


def sandbox_toml(base: str) -> str:
    """``extra`` TOML pointing the Abridge source and the ``ehr`` destination at a sandbox."""
    return (f'api_url = "{base}/abridge"\napi_token = "sandbox-abridge-token"\n'
            'org_id = "sandbox-org"\napi_allow_private = true\n'
            f'[destinations.ehr]\ntype = "fhir"\nurl = "{base}/fhir"\n'
            'token = "sandbox-fhir-token"\nallow_private = true\n')  # fmt: skip


async def wait_until(check: Callable[[], bool], what: str, seconds: float = 120) -> None:
    """Poll ``check`` until it holds."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.25)
