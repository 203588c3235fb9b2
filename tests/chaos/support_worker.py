"""What the storage and destination chaos tests share: a vendor-like load, `carehook serve`
in a subprocess, a throwaway PostgreSQL cluster, and the figures each test prints.

The short version (in ``make test``) runs by default; ``CAREHOOK_CHAOS=full`` runs the full one
(longer outages, more events). Each test prints its figures (sent, acknowledged, stored,
terminal, duplicates, 5xx by status) and fails on a loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any

import httpx

from carehook.envelope import SignedRequest
from carehook.settings import load_settings
from carehook.sources import Source, build_source
from carehook.vendors import builtin_vendors
from e2e.support import CAREHOOK, clean_env, free_port

SECRET = "abridge-chaos-secret"
FULL = os.environ.get("CAREHOOK_CHAOS") == "full"


def pick(short: float, full: float) -> float:
    """The short or the full figure, by ``CAREHOOK_CHAOS``."""
    return full if FULL else short


def write_config(folder: Path, storage_url: str | None, extra: str = "") -> Path:
    """One Abridge source with fast retries, a worker tuned for a short test, ``extra`` TOML."""
    lines = ['data_dir = "."', 'log_level = "info"']
    if storage_url:
        lines += ["[storage]", f'url = "{storage_url}"', "auto_migrate = true"]
    lines += ["[worker]", "poll_seconds = 0.2", "shutdown_grace_seconds = 5",
              "restart_base_seconds = 0.2", "restart_cap_seconds = 2",
              "[sources.abridge]", 'vendor = "abridge"', f'secrets = ["{SECRET}"]',
              "retry_base_seconds = 0.2", "retry_cap_seconds = 2",
              "max_attempts = 1000"]  # fmt: skip
    path = folder / "carehook.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


# -- carehook serve ------------------------------------------------------------------------------


@dataclass
class Serve:
    """A `carehook serve` process, its output in a file."""

    popen: subprocess.Popen[bytes]
    log: Path
    url: str

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)


@contextmanager
def serve(folder: Path, config: Path) -> Iterator[Serve]:
    """`carehook serve` on a free port until the block ends (started once /healthz answers)."""
    port = free_port()
    log = folder / "serve.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            [CAREHOOK, "serve", "--config", str(config), "--port", str(port)], cwd=folder,
            env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    proc = Serve(popen, log, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while not _healthy(proc.url):
            if popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve did not start: {log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.stop()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def readyz(url: str) -> int:
    """/readyz's status (0 when it did not answer in 5 s)."""
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code
    except httpx.TransportError:
        return 0


# -- the load ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """One delivery attempt: when it was sent, how long it took, what came back."""

    sent_at: float
    seconds: float
    status: int  # 0: no answer (connection refused, timeout)

    @property
    def answered_at(self) -> float:
        """When the answer came (monotonic)."""
        return self.sent_at + self.seconds


@dataclass
class Load:
    """A vendor: signs Abridge events, retries each until a 200, keeps every answer."""

    source: Source
    url: str
    lanes: int = 6
    pace_seconds: float = 0.01
    acked: set[str] = field(default_factory=set)
    sent: int = 0
    answers: list[Answer] = field(default_factory=list)
    stop_new: asyncio.Event = field(default_factory=asyncio.Event)
    #: each answer's status by the 4xx/5xx that are not "storage down" (must stay empty)
    unexpected: list[tuple[str, int, str]] = field(default_factory=list)

    @classmethod
    def for_config(cls, config: Path, base_url: str, **kw: Any) -> Load:
        """A load signing with the config's Abridge source, against ``base_url``."""
        settings = load_settings(config)
        source = build_source("abridge", settings.sources["abridge"], builtin_vendors())
        return cls(source, f"{base_url}/webhooks/abridge", **kw)

    def delivery(self, n: int) -> tuple[str, bytes, dict[str, str]]:
        """Event ``n``: its id, body and signed headers (20 subjects)."""
        event_id = f"evt_chaos_{n:06d}"
        body = json.dumps({
            "event_id": event_id, "type": "encounter.session.completed",
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "data": {"session_id": f"ses_{n % 20:04d}", "status": "completed"},
        }).encode()  # fmt: skip
        headers = {"content-type": "application/json"}
        request = SignedRequest("POST", self.source.public_path, "", headers, body)
        headers.update(self.source.scheme.sign(request, SECRET, time.time()))
        return event_id, body, headers

    async def run(self, limit: int | None = None) -> None:
        """Send new events until ``stop_new`` is set (or ``limit`` were sent); each is retried
        until acknowledged."""
        await asyncio.gather(*(self._lane(limit) for _ in range(self.lanes)))

    async def _lane(self, limit: int | None) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            while not self.stop_new.is_set() and (limit is None or self.sent < limit):
                n = self.sent
                self.sent += 1
                await self._deliver(client, n)
                await asyncio.sleep(self.pace_seconds)

    async def _deliver(self, client: httpx.AsyncClient, n: int) -> None:
        event_id, body, headers = self.delivery(n)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                response = await client.post(self.url, content=body, headers=headers)
                status = response.status_code
            except httpx.TransportError:
                status = 0
            self.answers.append(Answer(started, time.monotonic() - started, status))
            if status == 200:
                self.acked.add(event_id)
                return
            if status not in (0, 503):
                self.unexpected.append((event_id, status, response.text[:200]))
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{event_id} was never acknowledged")

    def statuses(self) -> Counter[int]:
        """How many answers of each status."""
        return Counter(a.status for a in self.answers)

    def first(self, status: int, after: float) -> float | None:
        """How long after ``after`` the first answer of ``status`` came (None: none came)."""
        times = [a.answered_at for a in self.answers if a.status == status]
        later = [t - after for t in times if t >= after]
        return min(later, default=None)

    def answered_between(self, start: float, end: float) -> list[Answer]:
        """The answers that came between ``start`` and ``end``."""
        return [a for a in self.answers if start <= a.answered_at < end]

    def of_status(self, status: int) -> list[Answer]:
        """Every answer of ``status``."""
        return [a for a in self.answers if a.status == status]


def seconds_summary(answers: list[Answer]) -> str:
    """Median and maximum answer time."""
    if not answers:
        return "none"
    times = [a.seconds for a in answers]
    return f"median {median(times):.3f} s, max {max(times):.3f} s ({len(times)} answers)"


@dataclass
class Figures:
    """What a chaos test prints."""

    name: str
    sent: int
    acknowledged: int
    stored: int
    terminal: int
    duplicates: int
    statuses: Counter[int]
    notes: list[str] = field(default_factory=list)

    def show(self) -> str:
        """Print and return the figures."""
        fivexx = {s: n for s, n in sorted(self.statuses.items()) if s >= 500}
        lines = [f"== chaos: {self.name} ({'full' if FULL else 'short'} version)",
                 f"   sent {self.sent}, acknowledged {self.acknowledged}, stored {self.stored}, "
                 f"terminal {self.terminal}, duplicates {self.duplicates}, 5xx {fivexx}, "
                 f"no answer {self.statuses.get(0, 0)}",
                 *(f"   {note}" for note in self.notes)]  # fmt: skip
        text = "\n".join(lines)
        print(text)
        return text


def assert_nothing_lost(
    load: Load, acked: set[str], stored: set[str], events: list[Any], figures: Figures
) -> None:
    """Show the figures, then what every outage test asserts: only 200/503 answers, every
    acknowledged event stored once and done, no step taking effect twice."""
    figures.show()
    assert not load.unexpected, f"answers other than 200/503: {load.unexpected[:5]}"
    assert acked <= stored, f"acknowledged but not stored: {sorted(acked - stored)[:5]}"
    assert len(events) == len(stored), "an event was stored twice"
    assert {e[2] for e in events} == {"done"}
    assert figures.duplicates == 0, "a step took effect twice"


async def wait_until(check: Callable[[], bool], what: str, seconds: float = 120) -> None:
    """Poll ``check`` until it holds."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


# -- a throwaway PostgreSQL cluster --------------------------------------------------------------


def pg_bin(tool: str) -> str:
    """The newest installed PostgreSQL's ``tool``."""
    root = Path("/usr/lib/postgresql")
    versions = sorted((p for p in root.iterdir() if (p / "bin" / tool).exists()),
                      key=lambda p: int(p.name) if p.name.isdigit() else 0)  # fmt: skip
    if not versions:
        found = shutil.which(tool)
        assert found, f"PostgreSQL's {tool} is not installed"
        return found
    return str(versions[-1] / "bin" / tool)


@dataclass
class Cluster:
    """A PostgreSQL cluster of this test's own, under a temp dir, on its own port."""

    folder: Path
    port: int

    @property
    def url(self) -> str:
        """The carehook storage URL of its ``carehook`` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/carehook"

    def _run(self, *args: str) -> None:
        command = [pg_bin(args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{args[0]} failed: {done.stdout}\n{done.stderr}"

    def init(self) -> None:
        """initdb (trust, user postgres), then create the ``carehook`` database."""
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.folder / "data"), "-U", "postgres", "--auth=trust",
                  "--no-sync")  # fmt: skip
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                  "carehook")  # fmt: skip

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-o", options,
                  "-l", str(self.folder / "postgres.log"), "-w", "start")  # fmt: skip

    def stop(self) -> None:
        """Stop at once (``-m immediate``: like a crash or a pulled cable, no goodbye)."""
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")


@contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    """A fresh cluster for the block (in its own temp dir: pytest's is private to root, and the
    server runs as ``postgres``); stopped, whatever state it is in, and removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="carehook-chaos-pg-"))
    cluster = Cluster(folder, free_port())
    try:
        cluster.init()
        yield cluster
    finally:
        with contextlib.suppress(AssertionError):  # already stopped
            cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


# -- a small filesystem of the test's own --------------------------------------------------------


@contextmanager
def small_tmpfs(folder: Path, size: str = "4m") -> Iterator[Path]:
    """``folder`` with a tmpfs of ``size`` mounted on it for the block (unmounted after).

    Where the machine refuses the mount (no root, no CAP_SYS_ADMIN), the test is skipped with
    the reason, except under CI=true, where it fails: CI must run it.
    """
    import pytest

    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    if done.returncode != 0:
        reason = f"CANNOT MOUNT A TMPFS HERE ({done.stderr.strip()}): disk-full chaos not run"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30,
                       check=False)  # fmt: skip


def fill(folder: Path) -> Path:
    """Write a file in ``folder`` until the filesystem is full; returns it (delete to free)."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as out:
        for size in (65536, 4096, 512):  # big chunks first, then the last bytes
            with contextlib.suppress(OSError):
                while out.write(b"\0" * size):
                    pass
    return filler
