"""What the ``carehook`` commands share: consoles, common options, the store, JSON and tables."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from carehook.settings import DEFAULT_CONFIG_PATH, Settings, config_path, load_settings

T = TypeVar("T")

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="carehook.toml (default: $CAREHOOK_CONFIG or "
                 f"{DEFAULT_CONFIG_PATH})", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def settings_of(config: Path | None) -> Settings:
    """The settings of ``--config`` (or its defaults)."""
    return load_settings(config_path(config))


def run(coro: Awaitable[T]) -> T:
    """Run a coroutine to completion."""
    return asyncio.run(coro)  # type: ignore[arg-type]


def with_store(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Open the configured store, run ``work(store)``, close it."""
    from carehook.bootstrap import build_keyring, build_store

    async def go() -> T:
        store = build_store(settings, build_keyring(settings))
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return run(go())


def jsonable(value: Any) -> Any:
    """Dataclasses, datetimes and containers as JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def table(title: str, rows: list[Any], columns: list[str]) -> None:
    """Print ``rows`` (dataclasses or dicts) as a table of ``columns``."""
    grid = Table(title=title, show_lines=False)
    for col in columns:
        grid.add_column(col)
    for row in rows:
        data = jsonable(row)
        grid.add_row(*("" if data.get(c) is None else str(data.get(c)) for c in columns))
    out.print(grid)


def with_operations(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Open the configured store, run ``work(operations)`` over it (the operator service that
    the admin API uses too), close it."""
    from carehook.operations import Operations, source_configs

    return with_store(settings, lambda store: work(Operations(store, source_configs(settings))))
