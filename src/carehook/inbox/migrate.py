"""Run the inbox migrations from code: no ``alembic.ini`` is needed at run time.

The Alembic config is built here with ``script_location`` pointing at the ``migrations`` folder
shipped in the package. ``carehook db upgrade`` calls :func:`upgrade`; the stores call
:func:`upgrade` (``auto_migrate``) or :func:`is_current` when they open.

    upgrade("sqlite:///var/carehook/carehook.db")
    is_current("postgresql://carehook@db:5432/carehook")
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from carehook.errors import StorageError, StorageUnavailable
from carehook.inbox._common import ensure_private_file, is_sqlite, sqlalchemy_url, sqlite_path

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    """An Alembic config for ``url``, built in code."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolates '%': a percent-encoded password must be escaped
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest revision the code knows."""
    head = ScriptDirectory.from_config(alembic_config("sqlite:///unused")).get_current_head()
    assert head is not None, "the migrations folder holds no revision"
    return head


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (default: the newest), atomically."""
    if is_sqlite(url):
        ensure_private_file(sqlite_path(url))
    cfg = alembic_config(url)
    with _connection(url) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` back to ``revision`` (``"base"``: empty)."""
    cfg = alembic_config(url)
    with _connection(url) as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def current_revision(url: str) -> str | None:
    """The revision the database is at; None for an empty (or absent SQLite) database."""
    if is_sqlite(url) and not sqlite_path(url).exists():
        return None  # do not create the file just by looking
    with _connection(url) as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_current(url: str) -> bool:
    """True when the database is at the newest revision."""
    return current_revision(url) == head_revision()


@contextmanager
def _connection(url: str) -> Iterator[sa.Connection]:
    """One connection in one transaction (committed on success), driver errors translated."""
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            yield conn
    except sqlalchemy.exc.OperationalError as exc:
        raise StorageUnavailable(f"cannot reach the database: {type(exc.orig).__name__}") from exc
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StorageError(f"migration failed: {type(exc).__name__}") from exc
    finally:
        engine.dispose()


def _engine(url: str) -> sa.Engine:
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.NullPool)
    if engine.dialect.name == "sqlite":
        _transactional_sqlite_ddl(engine)
    return engine


def _transactional_sqlite_ddl(engine: sa.Engine) -> None:
    """Make a SQLite migration all-or-nothing.

    Python's sqlite3 does not open a transaction before DDL, so a migration that fails halfway
    would leave half a schema; this is SQLAlchemy's documented recipe to BEGIN explicitly.
    """

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
