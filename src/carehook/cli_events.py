"""``carehook events``, ``dlq``, ``status`` and ``purge``: what an operator inspects and re-runs."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from carehook.cli_common import (
    ConfigOpt,
    JsonOpt,
    err,
    jsonable,
    out,
    run,
    settings_of,
    table,
    with_store,
)

events_app = typer.Typer(help="List, inspect and replay stored events.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: events that failed for good.", no_args_is_help=True)


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
    rows = with_store(settings_of(config), lambda s: s.list_events(flt))
    if json_:
        print(json.dumps(jsonable(rows), indent=2))
    else:
        table("events", rows, _EVENT_COLUMNS)


PayloadOpt = Annotated[bool, typer.Option(help="Also print the decrypted payload (audited).")]


@events_app.command("show")
def events_show(
    event: Annotated[int, typer.Argument(help="The event's id (first column of `events ls`).")],
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    payload: PayloadOpt = False,
    actor: Annotated[str, typer.Option(help="Who is looking, for the audit log.")] = "cli",
) -> None:
    """Show one event: metadata, finished steps, every attempt (with --payload: the payload)."""

    async def work(store: Any) -> tuple[Any, list[Any], list[Any], bytes | None]:
        row = await store.get_event(event)
        if row is None:
            return None, [], [], None
        data = await store.read_payload(event, actor) if payload else None
        return row, await store.list_steps(event), await store.list_attempts(event), data

    row, steps, attempts, data = with_store(settings_of(config), work)
    if row is None:
        err.print(f"no event {event}")
        raise typer.Exit(1)
    doc = jsonable(row)
    # "attempts" is the count (as in `events ls`); every try is listed under "attempt_log"
    doc["steps"], doc["attempt_log"] = jsonable(steps), jsonable(attempts)
    if payload:
        doc["payload"] = None if data is None else data.decode("utf-8", errors="replace")
    if json_:
        print(json.dumps(doc, indent=2))
        return
    for key, value in doc.items():
        if key not in ("payload", "steps", "attempt_log"):
            out.print(f"{key:>16}: {value}", highlight=False)
    table("steps", steps, ["name", "outcome", "detail", "finished_at"])
    table("attempts", attempts, ["number", "started_at", "finished_at", "outcome", "error_class",
                                  "error_message", "next_attempt_at"])
    if payload:
        out.print("payload (access recorded in the audit log):")
        print(doc["payload"] if doc["payload"] is not None else "(purged)")


@events_app.command("replay")
def events_replay(
    event: Annotated[int | None, typer.Argument(help="Replay this one event.")] = None,
    config: ConfigOpt = None,
    source: Annotated[str | None, typer.Option(help="Events of this source.")] = None,
    type_: Annotated[str | None, typer.Option("--type", help="Events of this type.")] = None,
    status: Annotated[str | None, typer.Option(
        help="Events in this status: pending, retrying, done or dead.")] = None,
    since: Annotated[str | None, typer.Option(
        help="Events received at or after this date or time (ISO 8601; UTC unless given).")
    ] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Only count what would be replayed.")] = False,
    actor: Annotated[str, typer.Option(help="Who replays, for the audit log.")] = "cli",
) -> None:
    """Run events again from their first unfinished step (each replay is audited).

    Give an event id, or filters that must all match; never replays unhandled events or events
    being processed.
    """
    from carehook.inbox.work import ReplayFilter

    if event is None and not (source or type_ or status or since):
        err.print("give an event id or at least one of --source, --type, --status, --since")
        raise typer.Exit(2)
    if status is not None and status not in _REPLAYABLE:
        err.print(f"--status must be one of: {', '.join(_REPLAYABLE)}")
        raise typer.Exit(2)
    flt = ReplayFilter(event_pks=() if event is None else (event,), source=source, type=type_,
                       status=status, since=None if since is None else _parse_since(since))
    count = with_store(settings_of(config), lambda s: s.replay(flt, actor, dry_run=dry_run))
    noun = "event" if count == 1 else "events"
    out.print(f"would replay {count} {noun} (dry run)" if dry_run else f"replayed {count} {noun}")
    if event is not None and count == 0:
        err.print(f"event {event} was not replayed (unknown, processing or unhandled)")
        raise typer.Exit(1)


_REPLAYABLE = ("pending", "retrying", "done", "dead")


def _parse_since(text: str) -> datetime:
    """An ISO date or date-time; naive means UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 date or time: {text!r}",
                                 param_hint="--since") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dlq_app.command("ls")
def dlq_ls(
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
) -> None:
    """List dead events, newest first, with their last error class and message."""
    from carehook.inbox.port import EventFilter

    async def work(store: Any) -> list[dict[str, Any]]:
        rows = await store.list_events(EventFilter(source=source, status="dead", limit=limit))
        errors = await store.last_errors([r.id for r in rows])
        return [_dead_letter(row, errors.get(row.id)) for row in rows]

    rows = with_store(settings_of(config), work)
    if json_:
        print(json.dumps(rows, indent=2))
    else:
        table("dead letters", rows, ["id", "source", "type", "subject", "attempts",
                                      "received_at", "failed_at", "error_class", "error_message"])


def _dead_letter(row: Any, error: Any) -> dict[str, Any]:
    doc: dict[str, Any] = jsonable(row)
    last = jsonable(error) if error is not None else {}
    doc["failed_at"] = last.get("finished_at")
    doc["error_class"] = last.get("error_class")
    doc["error_message"] = last.get("error_message")
    return doc


def status(
    subject: Annotated[str, typer.Argument(help="e.g. abridge:session:<id>, nabla:job:<id>")],
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 500,
) -> None:
    """A subject's timeline: events, states and durations.

    Each entry's state and time, the time since the previous entry and since the first, and
    how long the subject spent in each state."""

    async def work(store: Any) -> tuple[str | None, list[Any]]:
        return await store.subject_state(subject), await store.timeline(subject, limit)

    state, rows = with_store(settings_of(config), work)
    entries = _timeline(rows)
    spans = _state_durations(rows)
    total = (rows[-1].at - rows[0].at).total_seconds() if rows else None
    if json_:
        print(json.dumps({"subject": subject, "state": state, "timeline": entries,
                          "total_seconds": total, "state_seconds": spans}, indent=2))
        return
    if not entries:
        err.print(f"no timeline for {subject}")
        raise typer.Exit(1)
    out.print(f"{subject}: {state}", highlight=False)
    table("timeline", entries, ["at", "since_previous", "elapsed", "event_pk", "type", "state",
                                "detail"])  # fmt: skip
    if len(rows) > 1 and total is not None:
        parts = ", ".join(f"{name} {_duration(secs)[1:]}" for name, secs in spans.items())
        out.print(f"{len(rows)} entries over {_duration(total)[1:]}; time per state: {parts}",
                  highlight=False)  # fmt: skip


def _timeline(rows: list[Any]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    previous: datetime | None = None
    first: datetime | None = rows[0].at if rows else None
    for row in rows:
        doc: dict[str, Any] = jsonable(row)
        gap = None if previous is None else (row.at - previous).total_seconds()
        doc["since_previous_seconds"] = gap
        doc["since_previous"] = "" if gap is None else _duration(gap)
        elapsed = 0.0 if first is None else (row.at - first).total_seconds()
        doc["elapsed_seconds"] = elapsed
        doc["elapsed"] = _duration(elapsed)
        entries.append(doc)
        previous = row.at
    return entries


def _state_durations(rows: list[Any]) -> dict[str, float]:
    """Seconds spent in each state: from an entry to the next, summed per state (the current
    state's open span is not counted)."""
    spans: dict[str, float] = {}
    for row, following in itertools.pairwise(rows):
        spans[row.state] = spans.get(row.state, 0.0) + (following.at - row.at).total_seconds()
    return spans


def _duration(seconds: float) -> str:
    """``+0.250s``, ``+12.0s``, ``+3m05s``, ``+2h04m``, ``+3d02h``."""
    if seconds < 60:
        return f"+{seconds:.3f}s" if seconds < 10 else f"+{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"+{days}d{hours:02d}h"
    return f"+{hours}h{minutes:02d}m" if hours else f"+{minutes}m{secs:02d}s"


def purge(config: ConfigOpt = None) -> None:
    """Drop payloads past their source's retention_days and dedup keys past worker.dedup_days.

    `serve` and `worker` do the same every worker.purge_interval_seconds.
    """
    from carehook.bootstrap import build_components, build_purger
    from carehook.observability import configure_logging

    settings = settings_of(config)
    configure_logging(settings.log_level)
    components = build_components(settings)

    async def go() -> Any:
        await components.store.open()
        try:
            return await build_purger(components).once()
        finally:
            await components.store.close()

    counts = run(go())
    out.print(f"purged {counts.payloads} payloads and {counts.dedup_keys} expired events")
