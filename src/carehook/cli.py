"""The ``carehook`` command: serve the gateway, run workers, simulate vendors, explain, inspect.

The operator's inspection and replay commands live in :mod:`carehook.cli_events`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import httpx
import typer

from carehook import __version__
from carehook.cli_admin import admin_app, sources_app
from carehook.cli_common import (
    ConfigOpt,
    JsonOpt,
    err,
    jsonable,
    out,
    run,
    settings_of,
    table,
    with_operations,
)
from carehook.cli_ehr import ehr_app
from carehook.cli_events import dlq_app, events_app, purge, status
from carehook.cli_keys import keys_app
from carehook.cli_register import register
from carehook.cli_reviews import reviews_app
from carehook.cli_sandbox import sandbox
from carehook.cli_secrets import secrets_app
from carehook.errors import CarehookError, ConfigError
from carehook.settings import DEFAULT_CONFIG_PATH, config_path, load_settings

app = typer.Typer(
    help="carehook: the secure, durable front door for clinical-AI webhooks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
requests_app = typer.Typer(help="The request log: every delivery, accepted or not.",
                           no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(requests_app, name="requests")
app.add_typer(dlq_app, name="dlq")
app.add_typer(reviews_app, name="reviews")
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
app.add_typer(sources_app, name="sources")
app.add_typer(keys_app, name="keys")
app.add_typer(ehr_app, name="ehr")


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
    worker: Annotated[bool | None, typer.Option(
        "--worker/--no-worker", help="Run a worker in-process (default: [worker] enabled).",
        show_default=False)] = None,
) -> None:
    """Run the gateway: ingress and, by default, a worker and the retention purge in-process.

    The configuration is checked first: a secret, destination or channel that cannot be
    resolved stops it before it listens (exit 2, the setting named, never its value).
    """
    import uvicorn

    from carehook.bootstrap import build_app, build_components, server_config, settle_heap
    from carehook.configfile import write_default_config
    from carehook.observability import configure_logging, get_logger

    path = config_path(config)
    if not path.exists() and config is None:
        write_default_config(path)
        err.print(f"[bold]No config found: wrote {path}[/bold] "
                  "(one source per vendor, new secrets)")
    settings = load_settings(path)
    configure_logging(settings.log_level)
    components = build_components(settings)
    gateway = build_app(components, worker=worker)  # checks the configuration: fails here
    bind_host = host or settings.server.host
    bind_port = settings.server.port if port is None else port
    _print_welcome(path, bind_host, bind_port)
    get_logger("carehook.cli").info(
        "serve.starting", host=bind_host, port=bind_port, config=str(path),
        storage=settings.storage_url.split(":", 1)[0],
    )  # fmt: skip
    settle_heap()
    # uvicorn turns SIGTERM/SIGINT into the lifespan shutdown, which stops the worker gracefully
    uvicorn.Server(server_config(gateway, bind_host, bind_port, settings.server,
                                 components.metrics)).run()  # fmt: skip


@app.command("worker")
def worker_cmd(
    config: ConfigOpt = None,
    concurrency: Annotated[int | None, typer.Option(
        min=1, max=1024, help="Events at once (default: [worker] concurrency).",
        show_default=False)] = None,
) -> None:
    """Process stored events without serving HTTP; SIGTERM/SIGINT stop it gracefully.

    Any number of workers (and `serve` processes) may share one PostgreSQL database; on one
    machine, a SQLite file too (`serve --no-worker` beside it: writers take turns on a file
    lock, and the worker hears the others' commits within 20 ms).
    """
    import signal

    from carehook.bootstrap import build_components, run_worker, settle_heap
    from carehook.observability import configure_logging

    settings = settings_of(config)
    configure_logging(settings.log_level)
    components = build_components(settings, worker_alone=True)

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(components, stop, concurrency=concurrency)

    settle_heap()
    run(go())


def _print_welcome(path: Path, host: str, port: int) -> None:
    cfg = "" if path == DEFAULT_CONFIG_PATH else f" --config {path}"
    err.print(
        f"carehook {__version__} on http://{host}:{port}  (config: {path})\n"
        f"Send a first signed test event from another terminal:\n"
        f"  .venv/bin/carehook simulate abridge encounter.session.completed{cfg}\n"
        f"then see it processed:  .venv/bin/carehook events ls{cfg}\n"
        f"To see notes reach a (fake) EHR: .venv/bin/carehook sandbox --apply{cfg}, then restart"
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
                out.print("  (any type, stored as unhandled; "
                          "e.g. lab_result.available, message.created)")
        return
    if source is None or event_type is None:
        err.print("usage: carehook simulate SOURCE EVENT_TYPE (or --list)")
        raise typer.Exit(2)
    settings = settings_of(config)
    if source not in settings.sources:
        known = ", ".join(settings.sources)
        raise ConfigError(f"no source {source!r} in the config; known: {known}")
    src = build_source(source, settings.sources[source], vendors)
    target = url or f"http://{settings.server.host}:{settings.server.port}/webhooks/{source}"
    failures = 0
    with httpx.Client(timeout=15.0) as client:
        for n, delivery in enumerate(build_deliveries(src, event_type, count, duplicate), 1):
            try:
                status, text = send(target, delivery, client)
            except httpx.HTTPError as exc:
                err.print(f"cannot reach {target}: {type(exc).__name__} "
                          "(is `carehook serve` running?)")
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

    settings = settings_of(config)
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


@requests_app.command("ls")
def requests_ls(
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    outcome: Annotated[str | None, typer.Option(
        help="Only this outcome: accepted, duplicate or rejected.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
) -> None:
    """List recent requests with their outcome and cause, newest first."""
    from carehook.inbox.reads import RequestQuery

    q = RequestQuery(source=source, outcome=outcome, limit=limit)
    rows = with_operations(settings_of(config), lambda ops: ops.requests(q)).items
    if json_:
        print(json.dumps(jsonable(rows), indent=2))
    else:
        table("requests", rows, ["id", "received_at", "source", "remote_addr", "size", "status",
                                  "outcome", "cause", "event_id"])


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Apply database migrations up to the newest schema."""
    from carehook.inbox.migrate import upgrade

    settings = settings_of(config)
    upgrade(settings.storage_url)
    out.print("schema is current")


app.command()(status)
app.command()(purge)
app.command()(sandbox)
app.command()(register)
app.add_typer(secrets_app, name="secrets")


def main() -> None:
    """Entry point: run the app; carehook's own errors become one line and exit code 2."""
    try:
        app()
    except CarehookError as exc:
        err.print(f"carehook: {exc}", highlight=False, markup=False)
        sys.exit(2)
