"""``carehook register SOURCE``: register the source's endpoint with its vendor.

Abridge and OpenEvidence (REST) and Healthie (GraphQL) are registered over their APIs, with the
source's ``api_url`` and credentials; Nabla is console only (the steps are printed). Secrets go
into the config file (mode 0600) and are never printed. A running gateway reads its secrets at
start: restart it after a registration added one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from carehook import registration as reg
from carehook.cli_common import ConfigOpt, err, out, table
from carehook.connectors.webhooks import RegisteredWebhook
from carehook.errors import ConfigError
from carehook.settings import config_path, load_settings

UrlOpt = Annotated[str | None, typer.Option(
    "--url", help="The gateway's public URL (the source's path is appended when it has none); "
    "default: public_url from the config.", show_default=False)]
EventsOpt = Annotated[list[str] | None, typer.Option(
    "--events", help="Event types (repeat, or comma-separated); default: every type carehook "
    "handles for the vendor.", show_default=False)]


def register(
    source: Annotated[str, typer.Argument(help="Configured source name.")],
    url: UrlOpt = None,
    events: EventsOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be registered; "
                                          "call nothing, write nothing.")] = False,
    list_: Annotated[bool, typer.Option("--list", help="List the vendor's webhooks.")] = False,
    delete: Annotated[str | None, typer.Option("--delete", metavar="ID",
                                               help="Delete the vendor's webhook ID.")] = None,
    rotate: Annotated[str | None, typer.Option("--rotate", metavar="ID", help="Healthie: expire "
                      "webhook ID's secret; the new one is added, the old one kept.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Register SOURCE's endpoint with its vendor (or --list, --delete ID, --rotate ID)."""
    if sum((list_, delete is not None, rotate is not None)) > 1:
        raise ConfigError("give at most one of --list, --delete and --rotate")
    path = config_path(config)
    settings = load_settings(path)
    if source not in settings.sources:
        known = ", ".join(settings.sources)
        raise ConfigError(f"no source {source!r} in the config; known: {known}")
    vendor = settings.sources[source].vendor
    chosen = tuple(e.strip() for raw in events or () for e in raw.split(",") if e.strip())
    chosen = chosen or reg.default_events(settings, source)
    if not (list_ or delete or rotate):
        target = reg.endpoint_url(settings, source, url)
        if vendor in ("nabla", "standard-webhooks") or dry_run:
            _plan(source, vendor, target, chosen)
            return
    asyncio.run(_call(path, source, url, chosen, list_, delete, rotate))


def _plan(source: str, vendor: str, url: str, events: tuple[str, ...]) -> None:
    """What --dry-run (or a vendor without an API) prints."""
    if vendor == "nabla":
        say(out, reg.console_steps(source, url, events))
    elif vendor == "standard-webhooks":
        say(out, "Standard Webhooks senders have no common registration API: give the sender "
            f"{url} and the source's secret.")
    else:
        say(out, f"would register {url} with {vendor} for {len(events)} event types: "
            f"{', '.join(events)}")


async def _call(path: Path, source: str, url: str | None, events: tuple[str, ...],
                list_: bool, delete: str | None, rotate: str | None) -> None:  # fmt: skip
    from carehook.services import build_registrar

    settings = load_settings(path)
    registrar, held = build_registrar(settings, source)
    if registrar is None:
        vendor = settings.sources[source].vendor
        raise ConfigError(f"{vendor} has no registration API (console only)")
    try:
        if list_:
            table(f"{source} webhooks", [_row(w) for w in await registrar.list()],
                  ["id", "url", "enabled", "events"])  # fmt: skip
        elif delete:
            await registrar.delete(delete)
            say(out, f"deleted webhook {delete} at {source}'s vendor")
        elif rotate:
            done = await reg.rotate(registrar, path, source, rotate)
            _report(source, done, "rotated: the vendor signs with the new secret now")
        else:
            target = reg.endpoint_url(settings, source, url)
            done = await reg.register(registrar, path, source, target, events)
            _report(source, done, f"registered {target} for {len(events)} event types")
    finally:
        await held.aclose()


def say(console: Console, text: str) -> None:
    """Print plain text: no markup, no highlighting, no wrapping (URLs and ids stay whole)."""
    console.print(text, highlight=False, markup=False, soft_wrap=True)


def _row(webhook: RegisteredWebhook) -> dict[str, object]:
    return {"id": webhook.webhook_id, "url": webhook.url, "enabled": webhook.enabled,
            "events": ", ".join(webhook.events)}  # fmt: skip


def _report(source: str, done: reg.Registration, what: str) -> None:
    say(out, f"{what}; webhook id {done.webhook.webhook_id}")
    if done.added:
        say(err, f"the signing secret was added to sources.{source} as secret "
            f"{done.secret_index} (not shown); restart the gateway to use it")
    else:
        say(err, f"signed with sources.{source} secret {done.secret_index}")
