"""The ``carehook`` command: serve the gateway, simulate vendors, explain, inspect."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.console import Console
from rich.table import Table

from carehook import __version__
from carehook.errors import CarehookError, ConfigError
from carehook.settings import DEFAULT_CONFIG_PATH, Settings, config_path, load_settings

T = TypeVar("T")
app = typer.Typer(
    help="carehook: the secure, durable front door for clinical-AI webhooks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
events_app = typer.Typer(help="List and inspect stored events.", no_args_is_help=True)
requests_app = typer.Typer(help="The request log: every delivery, accepted or not.",
                           no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(requests_app, name="requests")
app.add_typer(db_app, name="db")

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="carehook.toml (default: $CAREHOOK_CONFIG or "
                 f"{DEFAULT_CONFIG_PATH})", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _settings(config: Path | None) -> Settings:
    return load_settings(config_path(config))


def _run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def _with_store(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    from carehook.bootstrap import build_keyring, build_store

    async def go() -> T:
        store = build_store(settings, build_keyring(settings))
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return _run(go())


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _table(title: str, rows: list[Any], columns: list[str]) -> None:
    table = Table(title=title, show_lines=False)
    for col in columns:
        table.add_column(col)
    for row in rows:
        data = _jsonable(row)
        table.add_row(*("" if data.get(c) is None else str(data.get(c)) for c in columns))
    out.print(table)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        out.print(f"carehook {__version__}")
        raise typer.Exit()


@app.command()
def init(
    config: ConfigOpt = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a config with one source per built-in vendor and fresh random secrets."""
    from carehook.configfile import write_default_config

    path = config_path(config)
    if path.exists() and force:
        path.unlink()
    if path.exists():
        err.print(f"{path} exists already (use --force to replace it)")
        raise typer.Exit(1)
    write_default_config(path)
    out.print(f"wrote {path}")


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Run the gateway (ingress; the embedded SQLite store unless storage.url says otherwise)."""
    import uvicorn

    from carehook.bootstrap import build_app, build_components, server_config
    from carehook.configfile import write_default_config
    from carehook.observability import configure_logging, get_logger

    path = config_path(config)
    if not path.exists() and config is None:
        write_default_config(path)
        err.print(f"[bold]No config found: wrote {path}[/bold] (one source per vendor, new secrets)")
    settings = load_settings(path)
    configure_logging(settings.log_level)
    components = build_components(settings)
    bind_host = host or settings.server.host
    bind_port = settings.server.port if port is None else port
    _print_welcome(path, bind_host, bind_port)
    get_logger("carehook.cli").info(
        "serve.starting", host=bind_host, port=bind_port, config=str(path),
        storage=settings.storage_url.split(":", 1)[0],
    )  # fmt: skip
    uvicorn.Server(server_config(build_app(components), bind_host, bind_port)).run()


def _print_welcome(path: Path, host: str, port: int) -> None:
    cfg = "" if path == DEFAULT_CONFIG_PATH else f" --config {path}"
    err.print(
        f"carehook {__version__} on http://{host}:{port}  (config: {path})\n"
        f"Send a first signed test event from another terminal:\n"
        f"  .venv/bin/carehook simulate abridge encounter.session.completed{cfg}\n"
        f"then list it:  .venv/bin/carehook events ls{cfg}"
    )


@app.command()
def simulate(
    source: Annotated[str | None, typer.Argument(help="Configured source name.")] = None,
    event_type: Annotated[str | None, typer.Argument(help="Event type to send.")] = None,
    config: ConfigOpt = None,
    url: Annotated[str | None, typer.Option(help="Gateway URL (default from the config).")] = None,
    count: Annotated[int, typer.Option(min=1, max=100000, help="How many events.")] = 1,
    duplicate: Annotated[bool, typer.Option(help="Send every event twice.")] = False,
    list_: Annotated[bool, typer.Option("--list", help="List every vendor's events.")] = False,
) -> None:
    """Send correctly signed, realistic sample events to a running gateway."""
    from carehook.simulate import build_deliveries, send
    from carehook.sources import build_source
    from carehook.vendors import builtin_vendors

    vendors = builtin_vendors()
    if list_:
        for name, vendor in vendors.items():
            out.print(f"[bold]{name}[/bold]")
            for t in vendor.event_types:
                out.print(f"  {t}")
            if not vendor.event_types:
                out.print("  (any type, stored as unhandled; e.g. lab_result.available, message.created)")
        return
    if source is None or event_type is None:
        err.print("usage: carehook simulate SOURCE EVENT_TYPE (or --list)")
        raise typer.Exit(2)
    settings = _settings(config)
    if source not in settings.sources:
        raise ConfigError(f"no source {source!r} in the config; known: {', '.join(settings.sources)}")
    src = build_source(source, settings.sources[source], vendors)
    target = url or f"http://{settings.server.host}:{settings.server.port}/webhooks/{source}"
    failures = 0
    with httpx.Client(timeout=15.0) as client:
        for n, delivery in enumerate(build_deliveries(src, event_type, count, duplicate), 1):
            try:
                status, text = send(target, delivery, client)
            except httpx.HTTPError as exc:
                err.print(f"cannot reach {target}: {type(exc).__name__} (is `carehook serve` running?)")
                raise typer.Exit(1) from None
            failures += status != 200
            out.print(f"{n:>5} {delivery.event_type} -> {status} {text}")
    raise typer.Exit(1 if failures else 0)


@app.command()
def verify(
    source: Annotated[str, typer.Option(help="Configured source name.")],
    headers: Annotated[Path, typer.Option(help="Headers: JSON object or 'Name: value' lines.")],
    body: Annotated[Path, typer.Option(help="The raw body bytes, as received.")],
    config: ConfigOpt = None,
    method: Annotated[str | None, typer.Option(help="Request method (default POST).")] = None,
    path: Annotated[str | None, typer.Option(help="Signed path (default: the source's).")] = None,
    now: Annotated[float | None, typer.Option(help="Verify as of this unix time.")] = None,
) -> None:
    """Explain why a captured request passes or fails (never prints secrets or the body)."""
    import time

    from carehook.explain import explain, parse_header_text, signed_request
    from carehook.sources import build_source
    from carehook.vendors import builtin_vendors

    settings = _settings(config)
    if source not in settings.sources:
        raise ConfigError(f"no source {source!r} in the config")
    src = build_source(source, settings.sources[source], builtin_vendors())
    hdrs, line_method, target = parse_header_text(headers.read_text(errors="replace"))
    target_path, _, query = (path or target or src.public_path).partition("?")
    request = signed_request(hdrs, body.read_bytes(), method or line_method or "POST",
                             target_path, query)
    result = explain(src, request, time.time() if now is None else now)
    for line in result.lines:
        out.print(line, highlight=False, markup=False)
    raise typer.Exit(0 if result.ok else 1)


_EVENT_COLUMNS = ["id", "source", "vendor", "event_id", "type", "subject", "status", "attempts",
                  "received_at"]


@events_app.command("ls")
def events_ls(
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
    type_: Annotated[str | None, typer.Option("--type", help="Only this event type.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
) -> None:
    """List stored events, newest first."""
    from carehook.inbox.port import EventFilter

    flt = EventFilter(source=source, status=status, type=type_, limit=limit)
    rows = _with_store(_settings(config), lambda s: s.list_events(flt))
    if json_:
        print(json.dumps(_jsonable(rows), indent=2))
    else:
        _table("events", rows, _EVENT_COLUMNS)


@events_app.command("show")
def events_show(
    event: Annotated[int, typer.Argument(help="The event's id (first column of `events ls`).")],
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    payload: Annotated[bool, typer.Option(help="Also print the decrypted payload (audited).")] = False,
    actor: Annotated[str, typer.Option(help="Who is looking, for the audit log.")] = "cli",
) -> None:
    """Show one event's metadata (and, with --payload, its decrypted payload)."""

    async def work(store: Any) -> tuple[Any, bytes | None]:
        row = await store.get_event(event)
        data = await store.read_payload(event, actor) if (row and payload) else None
        return row, data

    row, data = _with_store(_settings(config), work)
    if row is None:
        err.print(f"no event {event}")
        raise typer.Exit(1)
    doc = _jsonable(row)
    if payload:
        doc["payload"] = None if data is None else data.decode("utf-8", errors="replace")
    if json_:
        print(json.dumps(doc, indent=2))
        return
    for key, value in doc.items():
        if key != "payload":
            out.print(f"{key:>16}: {value}", highlight=False)
    if payload:
        out.print("payload (access recorded in the audit log):")
        print(doc["payload"] if doc["payload"] is not None else "(purged)")


@requests_app.command("ls")
def requests_ls(
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
) -> None:
    """List recent requests with their outcome and cause, newest first."""
    rows = _with_store(_settings(config), lambda s: s.list_requests(limit, source))
    if json_:
        print(json.dumps(_jsonable(rows), indent=2))
    else:
        _table("requests", rows, ["id", "received_at", "source", "remote_addr", "size", "status",
                                  "outcome", "cause", "event_id"])


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Apply database migrations up to the newest schema."""
    from carehook.inbox.migrate import upgrade

    settings = _settings(config)
    upgrade(settings.storage_url)
    out.print("schema is current")


def main() -> None:
    """Entry point: run the app; carehook's own errors become one line and exit code 2."""
    try:
        app()
    except CarehookError as exc:
        err.print(f"carehook: {exc}", highlight=False, markup=False)
        sys.exit(2)
