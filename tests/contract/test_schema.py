"""The migrations build exactly the schema that ``carehook.inbox.schema`` describes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from carehook.inbox import migrate
from carehook.inbox._common import sqlalchemy_url
from carehook.inbox.schema import metadata

TABLES = {
    "requests", "events", "steps", "attempts", "subjects", "reviews", "audit", "timeline", "probe",
    "fhir_writes", "admin_sessions_ended",
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """An empty database of each kind."""
    if request.param == "sqlite":
        return sqlite_url
    url: str = request.getfixturevalue("pg_empty_url")
    return url


def _diff(url: str) -> list[Any]:
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            diffs: list[Any] = compare_metadata(ctx, metadata)
            return diffs
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _indexes(url: str) -> Iterator[tuple[str, str, tuple[str, ...], bool]]:
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.NullPool)
    try:
        inspector = sa.inspect(engine)
        for table in TABLES:
            for ix in inspector.get_indexes(table):
                yield table, str(ix["name"]), tuple(map(str, ix["column_names"])), ix["unique"]
            for uq in inspector.get_unique_constraints(table):
                yield table, str(uq["name"]), tuple(uq["column_names"]), True
    finally:
        engine.dispose()


def test_empty_database_is_not_current(empty_url: str) -> None:
    """Before any migration there is no revision, and open() would refuse the database."""
    assert migrate.current_revision(empty_url) is None
    assert not migrate.is_current(empty_url)


def test_migrations_build_exactly_the_schema_module(empty_url: str) -> None:
    """Migrating an empty database leaves no difference with the metadata of schema.py."""
    migrate.upgrade(empty_url)
    assert migrate.is_current(empty_url)
    assert migrate.current_revision(empty_url) == migrate.head_revision()
    assert _tables(empty_url) == TABLES | {"alembic_version"}
    assert _diff(empty_url) == []


def test_migrated_schema_has_the_keys_the_inbox_relies_on(empty_url: str) -> None:
    """The dedup key and the indexes the worker and the dashboard query by exist."""
    migrate.upgrade(empty_url)
    found = {(table, cols, unique) for table, _name, cols, unique in _indexes(empty_url)}
    assert ("events", ("source", "event_id"), True) in found
    assert ("events", ("status", "next_attempt_at"), False) in found
    assert ("events", ("subject", "id"), False) in found
    assert ("events", ("received_at",), False) in found
    assert ("steps", ("event_pk", "name"), True) in found
    assert ("timeline", ("subject", "id"), False) in found
    # partial: rejected requests only (the operator's rejection counts, 0006_admin)
    assert ("requests", ("received_at",), False) in {
        (t, cols, u)
        for t, name, cols, u in _indexes(empty_url)
        if name.endswith("rejected_received_at")
    }
    # partial: the unfinished events only (claim's head-of-subject lookups)
    assert ("events", ("subject", "id"), False) in {
        (t, cols, u)
        for t, name, cols, u in _indexes(empty_url)
        if name.endswith("active_subject_id")
    }


def test_downgrade_to_base_and_upgrade_again(empty_url: str) -> None:
    """The initial revision reverts cleanly and reapplies."""
    migrate.upgrade(empty_url)
    migrate.downgrade(empty_url, "base")
    assert _tables(empty_url) == {"alembic_version"}
    assert migrate.current_revision(empty_url) is None
    migrate.upgrade(empty_url)
    assert _diff(empty_url) == []


def test_upgrade_is_idempotent(empty_url: str) -> None:
    """Upgrading a current database changes nothing (every store open does it)."""
    migrate.upgrade(empty_url)
    migrate.upgrade(empty_url)
    assert migrate.is_current(empty_url)
