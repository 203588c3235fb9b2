"""Idempotent creates: the write ledger on SQLite and PostgreSQL, and IdempotentEhr against the
sandbox FHIR server in both kinds (conditional create honoured, Epic-like ignored)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from carehook.connectors.fhir.client import FhirClient
from carehook.connectors.fhir.ledger import SqlWriteLedger, WriteKey
from carehook.connectors.fhir.mapping import if_none_exist
from carehook.connectors.fhir.writer import IdempotentEhr, parse_condition
from carehook.errors import RetryableError
from carehook.inbox import migrate
from carehook.sandbox.fhir import FhirServer
from carehook.services import build_services
from carehook.settings import load_settings
from loopback import serve_app

SYSTEM = "urn:carehook:abridge:note"
KEY = WriteKey("ehr", "DocumentReference", SYSTEM, "note|1,$x")
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated carehook database of each kind."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    url = f"sqlite:///{tmp_path / 'carehook.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture
async def ledger(ledger_url: str) -> AsyncIterator[SqlWriteLedger]:
    """The ledger over that database."""
    found = SqlWriteLedger(ledger_url)
    try:
        yield found
    finally:
        found.close()


async def test_the_ledger_records_intent_then_id_and_forgets(ledger: SqlWriteLedger) -> None:
    """intend → (intent, no id); written → the id; intend again → the id is dropped; forget."""
    assert await ledger.get(KEY) is None
    await ledger.intend(KEY, T0)
    entry = await ledger.get(KEY)
    assert entry is not None
    assert (entry.intent_at, entry.server_id) == (T0, None)
    await ledger.written(KEY, "42", T0)
    entry = await ledger.get(KEY)
    assert entry is not None
    assert entry.server_id == "42"
    other = WriteKey("ehr", "DocumentReference", SYSTEM, "note|2")
    assert await ledger.get(other) is None  # keys do not bleed into each other
    await ledger.intend(KEY, T0)
    entry = await ledger.get(KEY)
    assert entry is not None
    assert entry.server_id is None
    await ledger.forget(KEY)
    assert await ledger.get(KEY) is None


async def test_the_ledger_survives_a_new_process_view(ledger_url: str) -> None:
    """What one ledger committed, a second one (another process's) reads."""
    first, second = SqlWriteLedger(ledger_url), SqlWriteLedger(ledger_url)
    try:
        await first.intend(KEY, T0)
        await first.written(KEY, "7", T0)
        entry = await second.get(KEY)
        assert entry is not None
        assert entry.server_id == "7"
    finally:
        first.close()
        second.close()


def test_if_none_exist_round_trips_through_parse_condition() -> None:
    """The header the workflows build gives back the exact system and value."""
    assert parse_condition(if_none_exist(SYSTEM, "a|b,c$d\\e")) == (SYSTEM, "a|b,c$d\\e")
    with pytest.raises(ValueError, match="identifier"):
        parse_condition("_id=1")


class _LoseFirstPost(httpx.AsyncBaseTransport):
    """Fails the first POST with a read timeout, after the server stored it (``store``) or
    without sending it; or (``status``) answers it with that status, unsent."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, store: bool = False,
                 status: int | None = None) -> None:  # fmt: skip
        self.inner, self.store, self.status, self.lost = inner, store, status, False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and not self.lost:
            self.lost = True
            if self.status is not None:
                return httpx.Response(self.status, request=request)
            if self.store:
                await self.inner.handle_async_request(request)
            raise httpx.ReadTimeout("lost", request=request)
        return await self.inner.handle_async_request(request)


@pytest.fixture(params=[True, False], ids=["conditional", "epic"])
def fhir(request: pytest.FixtureRequest) -> Iterator[tuple[FhirServer, str]]:
    """The sandbox FHIR server in each mode, on loopback."""
    server = FhirServer(conditional_create=request.param)
    with serve_app(Starlette(routes=[Mount("/fhir", app=server.app)])) as url:
        yield server, f"{url}/fhir"


def _doc(value: str) -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "status": "current",
            "identifier": [{"system": SYSTEM, "value": value}],
            "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                        "data": "aGk="}}]}  # fmt: skip


def _ehr(base: str, ledger: SqlWriteLedger, transport: httpx.AsyncBaseTransport,
         clock: list[float]) -> tuple[IdempotentEhr, httpx.AsyncClient]:  # fmt: skip
    http = httpx.AsyncClient(transport=transport)
    ehr = IdempotentEhr(FhirClient(http, base), ledger, "ehr", pending_seconds=60,
                        clock=lambda: clock[0])  # fmt: skip
    return ehr, http


async def test_a_repeated_create_files_one_resource_in_either_mode(
    fhir: tuple[FhirServer, str], ledger: SqlWriteLedger
) -> None:
    """Three creates of one identifier: one resource, created once, found twice."""
    server, base = fhir
    ehr, http = _ehr(base, ledger, httpx.AsyncHTTPTransport(), [T0.timestamp()])
    async with http:
        results = [await ehr.create(_doc("n1"), if_none_exist=if_none_exist(SYSTEM, "n1"))
                   for _ in range(3)]  # fmt: skip
    assert [created for _, created in results] == [True, False, False]
    assert len(server.resources("DocumentReference")) == 1
    mode = await ehr.create_mode("DocumentReference")
    assert mode == ("conditional" if server.conditional_create else "search-first")
    entry = await ledger.get(WriteKey("ehr", "DocumentReference", SYSTEM, "n1"))
    assert entry is not None
    assert entry.server_id == results[0][0]["id"]


async def test_an_answer_lost_after_the_server_stored_is_found_not_recreated(
    fhir: tuple[FhirServer, str], ledger: SqlWriteLedger
) -> None:
    """The POST landed but its answer was lost: the retry finds it (search or If-None-Exist)."""
    server, base = fhir
    lossy = _LoseFirstPost(httpx.AsyncHTTPTransport(), store=True)
    ehr, http = _ehr(base, ledger, lossy, [T0.timestamp()])
    async with http:
        with pytest.raises(RetryableError):
            await ehr.create(_doc("n2"), if_none_exist=if_none_exist(SYSTEM, "n2"))
        stored, created = await ehr.create(_doc("n2"), if_none_exist=if_none_exist(SYSTEM, "n2"))
    assert not created
    assert [r["id"] for r in server.resources("DocumentReference")] == [stored["id"]]


async def test_an_unanswered_post_that_never_landed_is_held_then_sent_again(
    ledger: SqlWriteLedger,
) -> None:
    """Epic-like: nothing found after a lost POST → wait pending_seconds, then create once."""
    server = FhirServer(conditional_create=False)
    with serve_app(Starlette(routes=[Mount("/fhir", app=server.app)])) as url:
        clock = [T0.timestamp()]
        lossy = _LoseFirstPost(httpx.AsyncHTTPTransport(), store=False)
        ehr, http = _ehr(f"{url}/fhir", ledger, lossy, clock)
        condition = if_none_exist(SYSTEM, "n3")
        async with http:
            with pytest.raises(RetryableError, match="ReadTimeout"):
                await ehr.create(_doc("n3"), if_none_exist=condition)
            clock[0] += 10
            with pytest.raises(RetryableError, match="earlier create") as held:
                await ehr.create(_doc("n3"), if_none_exist=condition)
            assert held.value.retry_after == pytest.approx(50, abs=1)
            clock[0] += 60
            _, created = await ehr.create(_doc("n3"), if_none_exist=condition)
    assert created
    assert len(server.resources("DocumentReference")) == 1


async def test_a_refused_post_drops_its_intent(ledger: SqlWriteLedger) -> None:
    """A 503 created nothing: the next attempt creates at once, no waiting."""
    server = FhirServer(conditional_create=False)
    with serve_app(Starlette(routes=[Mount("/fhir", app=server.app)])) as url:
        refusing = _LoseFirstPost(httpx.AsyncHTTPTransport(), status=503)
        ehr, http = _ehr(f"{url}/fhir", ledger, refusing, [T0.timestamp()])
        condition = if_none_exist(SYSTEM, "n4")
        async with http:
            with pytest.raises(RetryableError, match="503"):
                await ehr.create(_doc("n4"), if_none_exist=condition)
            _, created = await ehr.create(_doc("n4"), if_none_exist=condition)
    assert created
    assert len(server.resources("DocumentReference")) == 1


async def test_the_worker_reads_the_capability_statement_at_start(tmp_path: Path) -> None:
    """prepare() reads /metadata once; an unreachable EHR does not stop the start."""
    server = FhirServer(conditional_create=False)
    with serve_app(Starlette(routes=[Mount("/fhir", app=server.app)])) as url:
        for base, expect in ((f"{url}/fhir", True), ("http://127.0.0.1:9/fhir", False)):
            config = tmp_path / f"carehook-{expect}.toml"
            config.write_text(f'data_dir = "."\n[destinations.ehr]\ntype = "fhir"\n'
                              f'url = "{base}"\ntoken = "t"\nallow_private = true\n')  # fmt: skip
            services = build_services(load_settings(config))
            try:
                await services.prepare()
                ehr = services.services.ehr
                assert isinstance(ehr, IdempotentEhr)
                if expect:
                    assert await ehr.create_mode("DocumentReference") == "search-first"
            finally:
                await services.aclose()
    assert server.requests == [("GET", "/metadata")]


async def test_a_recorded_id_naming_another_resource_is_not_trusted(
    ledger: SqlWriteLedger,
) -> None:
    """After the EHR's url changed, a ledger id that now names another note is not "found"."""
    server = FhirServer(conditional_create=False)
    with serve_app(Starlette(routes=[Mount("/fhir", app=server.app)])) as url:
        ehr, http = _ehr(f"{url}/fhir", ledger, httpx.AsyncHTTPTransport(), [T0.timestamp()])
        async with http:
            other, _ = await ehr.create(_doc("someone-else"))
            key = WriteKey("ehr", "DocumentReference", SYSTEM, "n5")
            await ledger.written(key, str(other["id"]), T0)  # a stale id from the old server
            condition = if_none_exist(SYSTEM, "n5")
            stored, created = await ehr.create(_doc("n5"), if_none_exist=condition)
    assert created
    assert stored["id"] != other["id"]
    assert len(server.resources("DocumentReference")) == 2
