"""``carehook events``, ``dlq``, ``status`` and ``purge``: what an operator inspects and re-runs."""

from __future__ import annotations

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
    with_operations,
)
from carehook.operations.timeline import duration

events_app = typer.Typer(help="List, inspect and replay stored events.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: events that failed for good.", no_args_is_help=True)


_EVENT_COLUMNS = ["id", "source", "vendor", "event_id", "type", "subject", "status", "attempts",
                  "received_at"]


_DateOpt = Annotated[str | None, typer.Option(
    help="ISO 8601 date or time (UTC unless given).", show_default=False)]


@events_app.command("ls")
def events_ls(
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
    type_: Annotated[str | None, typer.Option("--type", help="Only this event type.")] = None,
    subject: Annotated[str | None, typer.Option(help="Only this subject.")] = None,
    since: _DateOpt = None,
    until: _DateOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
) -> None:
    """List stored events, newest first (received since/until: --since, --until)."""
    from carehook.inbox.reads import EventQuery

    q = EventQuery(source=source, status=status, type=type_, subject=subject,
                   since=_parse_time(since, "--since"), until=_parse_time(until, "--until"),
                   limit=limit)  # fmt: skip
    rows = with_operations(settings_of(config), lambda ops: ops.events(q)).items
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

    async def work(ops: Any) -> tuple[Any, bytes | None]:
        detail = await ops.event(event)
        data = await ops.payload(event, actor) if payload and detail is not None else None
        return detail, data

    detail, data = with_operations(settings_of(config), work)
    if detail is None:
        err.print(f"no event {event}")
        raise typer.Exit(1)
    steps, attempts = detail.steps, detail.attempts
    doc = jsonable(detail.event)
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
    from carehook.operations import OperationRefused

    flt = ReplayFilter(event_pks=() if event is None else (event,), source=source, type=type_,
                       status=status, since=_parse_time(since, "--since"))

    async def work(ops: Any) -> int | OperationRefused:
        try:
            count: int = await ops.replay(flt, actor, dry_run=dry_run)
        except OperationRefused as exc:
            return exc
        return count

    count = with_operations(settings_of(config), work)
    if isinstance(count, OperationRefused):
        text = str(count).replace("status must", "--status must")
        text = text.replace("source, type, status, since", "--source, --type, --status, --since")
        err.print(text, highlight=False)
        raise typer.Exit(2)
    noun = "event" if count == 1 else "events"
    out.print(f"would replay {count} {noun} (dry run)" if dry_run else f"replayed {count} {noun}")
    if event is not None and count == 0:
        err.print(f"event {event} was not replayed (unknown, processing or unhandled)")
        raise typer.Exit(1)


def _parse_time(text: str | None, hint: str) -> datetime | None:
    """An ISO date or date-time; naive means UTC."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 date or time: {text!r}",
                                 param_hint=hint) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dlq_app.command("ls")
def dlq_ls(
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
) -> None:
    """List dead events, newest first, with their last error class and message."""
    page = with_operations(settings_of(config), lambda ops: ops.dead_letters(source, None, limit))
    rows = [_dead_letter(d) for d in page.items]
    if json_:
        print(json.dumps(rows, indent=2))
    else:
        table("dead letters", rows, ["id", "source", "type", "subject", "attempts",
                                      "received_at", "failed_at", "error_class", "error_message"])


def _dead_letter(letter: Any) -> dict[str, Any]:
    doc: dict[str, Any] = jsonable(letter.event)
    doc["failed_at"] = jsonable(letter.failed_at)
    doc["error_class"] = letter.error_class
    doc["error_message"] = letter.error_message
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
    timeline = with_operations(settings_of(config), lambda ops: ops.timeline(subject, limit))
    entries = [_entry(e, subject) for e in timeline.entries]
    total, spans = timeline.total_seconds, timeline.state_seconds
    if json_:
        print(json.dumps({"subject": subject, "state": timeline.state, "timeline": entries,
                          "total_seconds": total, "state_seconds": spans}, indent=2))
        return
    if not entries:
        err.print(f"no timeline for {subject}")
        raise typer.Exit(1)
    out.print(f"{subject}: {timeline.state}", highlight=False)
    table("timeline", entries, ["at", "since_previous", "elapsed", "event_pk", "type", "state",
                                "detail"])  # fmt: skip
    if len(entries) > 1 and total is not None:
        parts = ", ".join(f"{name} {duration(secs)[1:]}" for name, secs in spans.items())
        out.print(f"{len(entries)} entries over {duration(total)[1:]}; time per state: {parts}",
                  highlight=False)  # fmt: skip


def _entry(entry: Any, subject: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"subject": subject, **jsonable(entry)}
    gap = entry.since_previous_seconds
    doc["since_previous"] = "" if gap is None else duration(gap)
    doc["elapsed"] = duration(entry.elapsed_seconds)
    return doc


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
