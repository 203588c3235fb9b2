"""Fixtures shared by every test suite.

PostgreSQL comes from the ``PG*`` environment variables (defaults: 127.0.0.1:5432, user
postgres). Each test that asks for ``pg_url`` gets a fresh database cloned from a template
migrated once per session, as procrastinate does: a clone is a file copy, far faster than
migrating. Names carry the pid and a random suffix so parallel runs never collide. When the
server cannot be reached the PostgreSQL tests are skipped loudly, except under CI
(``CI=true``), where they fail: CI must never pass by skipping them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from carehook.crypto import KeyRing, new_key_spec, parse_key_spec
from carehook.inbox import migrate, open_store
from carehook.inbox.port import Store

PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = os.environ.get("PGPORT", "5432")
PG_USER = os.environ.get("PGUSER", "postgres")
#: the database we connect to in order to create and drop the test databases
PG_ADMIN_DB = os.environ.get("PGDATABASE", "postgres")


def pg_url_for(dbname: str) -> str:
    """A carehook storage URL for ``dbname`` on the test server (password from PGPASSWORD)."""
    return f"postgresql://{quote(PG_USER, safe='')}@{PG_HOST}:{PG_PORT}/{dbname}"


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=PG_HOST,
        port=PG_PORT,
        user=PG_USER,
        dbname=PG_ADMIN_DB,
        autocommit=True,
        connect_timeout=3,
    )


def _unique(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:10]}"


def _create_db(name: str, template: str | None = None) -> None:
    stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        stmt = sql.SQL("{} TEMPLATE {}").format(stmt, sql.Identifier(template))
    with _admin() as conn:
        conn.execute(stmt)


def _drop_db(name: str) -> None:
    with _admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def pg_server() -> None:
    """Skip (or, under CI, fail) loudly unless the PostgreSQL server answers."""
    try:
        with _admin() as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        reason = (
            f"!!! PostgreSQL at {PG_HOST}:{PG_PORT} (user {PG_USER}) is unreachable: {exc}. "
            "The PostgreSQL tests did NOT run. !!!"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI=true: never skipped)", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_template(pg_server: None) -> Iterator[str]:
    """A database migrated to head once per session, to clone test databases from."""
    name = _unique("carehook_template")
    _create_db(name)
    try:
        migrate.upgrade(pg_url_for(name))
        yield name
    finally:
        _drop_db(name)


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """URL of a fresh, migrated PostgreSQL database, dropped after the test."""
    name = _unique("carehook_test")
    _create_db(name, template=pg_template)
    try:
        yield pg_url_for(name)
    finally:
        _drop_db(name)


@pytest.fixture
def pg_empty_url(pg_server: None) -> Iterator[str]:
    """URL of a fresh PostgreSQL database with no schema at all, dropped after the test."""
    name = _unique("carehook_empty")
    _create_db(name)
    try:
        yield pg_url_for(name)
    finally:
        _drop_db(name)


@pytest.fixture
def keyring() -> KeyRing:
    """A key ring with one random key."""
    return parse_key_spec(new_key_spec("test"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a (not yet existing) SQLite file in the test's temporary directory."""
    return f"sqlite:///{tmp_path / 'data' / 'carehook.db'}"


#: short lock waits, so a test that holds a lock sees StorageUnavailable quickly
TEST_LOCK_WAIT = 0.2


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(
    request: pytest.FixtureRequest, keyring: KeyRing, sqlite_url: str
) -> AsyncIterator[Store]:
    """An opened inbox on each database (SQLite, PostgreSQL), closed after."""
    inbox: Store
    if request.param == "sqlite":
        inbox = open_store(sqlite_url, keyring, busy_timeout=TEST_LOCK_WAIT)
    else:
        url = request.getfixturevalue("pg_url")
        inbox = open_store(url, keyring, lock_timeout=TEST_LOCK_WAIT, timeout=2.0)
    await inbox.open()
    try:
        yield inbox
    finally:
        await inbox.close()
