"""A PostgreSQL outage, on a throwaway cluster this test starts (initdb on its own port, never the
shared server): the store answers StorageUnavailable at once while the database is down, and the
first write after it is back succeeds."""

from __future__ import annotations

import contextlib
import glob
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from carehook.crypto import KeyRing
from carehook.envelope import Envelope, RequestRecord
from carehook.errors import StorageUnavailable
from carehook.inbox import open_store
from carehook.inbox.port import EventFilter

pytestmark = pytest.mark.postgres


@dataclass
class Cluster:
    """A private PostgreSQL cluster: ``stop()`` and ``start()`` it at will."""

    bindir: Path
    datadir: Path
    port: int

    def _ctl(self, *args: str) -> None:
        cmd = [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-w", *args]
        _as_postgres(cmd)

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        opts = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-o", opts, "-l", str(self.datadir.parent / "log"), "start")

    def stop(self) -> None:
        """Stop at once (``-m fast``: sessions are terminated)."""
        self._ctl("-m", "fast", "stop")

    @property
    def url(self) -> str:
        """The URL of its ``postgres`` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


def _as_postgres(cmd: list[str]) -> None:
    if os.geteuid() == 0:
        cmd = ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(cmd)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A fresh cluster on a free port, removed after the test."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL server binaries (initdb) are not installed")
    bindir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="carehook-pg-outage-"))
    datadir = root / "data"
    datadir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(datadir, "postgres")
    _as_postgres([str(bindir / "initdb"), "-D", str(datadir), "-A", "trust", "-U", "postgres"])
    c = Cluster(bindir, datadir, _free_port())
    c.start()
    try:
        yield c
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"])
        shutil.rmtree(root, ignore_errors=True)


def _event(n: int) -> tuple[Envelope, RequestRecord]:
    now = datetime.now(UTC)
    env = Envelope("abridge", "abridge", f"evt_{n}", "encounter.session.completed",
                   f"abridge:session:{n}", None, now, b'{"n": 1}', 0, True)  # fmt: skip
    return env, RequestRecord("abridge", now, "127.0.0.1", 8, 200, "accepted")


async def test_an_outage_is_answered_at_once_and_the_return_noticed_at_once(
    cluster: Cluster, keyring: KeyRing
) -> None:
    """Down: accept and ping raise StorageUnavailable within a second (no queueing behind a
    pool wait, no reconnect back-off). Back: the very first accept commits."""
    async with open_store(cluster.url, keyring, auto_migrate=True) as store:
        assert await store.accept(*_event(1))
        cluster.stop()
        for n in (2, 3):
            started = time.monotonic()
            with pytest.raises(StorageUnavailable):
                await store.accept(*_event(n))
            assert time.monotonic() - started < 1.0
        with pytest.raises(StorageUnavailable):
            await store.ping()
        cluster.start()
        assert await store.accept(*_event(4))
        await store.ping()
        stored = {r.event_id for r in await store.list_events(EventFilter())}
        assert stored == {"evt_1", "evt_4"}


def test_the_admin_surface_answers_503_while_the_database_is_down(
    cluster: Cluster, tmp_path: Path
) -> None:
    """With the database down, the admin API answers 503 with Retry-After and the dashboard a
    503 page (a session check and a sign-in both need the store), never a 500; back up, both
    answer again without a restart."""
    import re

    import httpx

    from .admin_support import TOKENS, admin_env

    bearer = {"authorization": f"Bearer {TOKENS['root'][0]}"}
    with admin_env(tmp_path, cluster.url) as env, httpx.Client(base_url=env.gw.url,
                                                                timeout=10) as client:  # fmt: skip
        assert client.get("/admin/api/events", headers=bearer).status_code == 200
        form = client.get("/admin/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf
        login = {"csrf": csrf.group(1), "token": TOKENS["root"][0]}
        assert client.post("/admin/login", data=login).status_code == 303
        cluster.stop()
        try:
            api = client.get("/admin/api/events", headers=bearer)
            assert (api.status_code, api.headers.get("retry-after")) == (503, "5")
            assert api.json() == {"detail": "storage temporarily unavailable"}
            page = client.get("/admin/events")
            assert (page.status_code, page.headers.get("retry-after")) == (503, "5")
            assert "storage temporarily unavailable" in page.text
            form = client.get("/admin/login")
            assert form.status_code == 200  # needs no store
            fresh = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert fresh
            again = client.post("/admin/login", data={**login, "csrf": fresh.group(1)})
            # a sign-in is refused while its audit row cannot be written
            assert again.status_code == 503
            assert "carehook_admin" not in again.headers.get("set-cookie", "")
        finally:
            cluster.start()
        deadline = time.monotonic() + 20
        while client.get("/admin/api/events", headers=bearer).status_code != 200:
            assert time.monotonic() < deadline, "the admin API did not come back"
            time.sleep(0.2)
        assert client.get("/admin/events").status_code == 200
