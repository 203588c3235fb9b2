"""``carehook reviews``: the human review queue (low-quality notes, flagged evidence).

``reviews ls`` lists open items (``--all``: resolved ones too), newest first; ``reviews resolve
ID --note TEXT`` closes one, recorded in the audit log with ``--actor``. Review summaries hold
ids, scores and codes only (the workflows never put PHI in them), so listing needs no audit.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from carehook.cli_common import (
    ConfigOpt,
    JsonOpt,
    err,
    jsonable,
    out,
    settings_of,
    table,
    with_operations,
)
from carehook.errors import ReviewError

reviews_app = typer.Typer(help="The human review queue: list and resolve items.",
                          no_args_is_help=True)  # fmt: skip

_COLUMNS = ["id", "created_at", "severity", "kind", "source", "subject", "summary", "status",
            "resolved_by"]  # fmt: skip


@reviews_app.command("ls")
def reviews_ls(
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    all_: Annotated[bool, typer.Option("--all", help="Resolved items too.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
) -> None:
    """List open review items, newest first (--all: resolved ones too)."""
    status = None if all_ else "open"
    rows = with_operations(settings_of(config), lambda ops: ops.reviews(status, None, limit)).items
    if json_:
        print(json.dumps(jsonable(rows), indent=2))
        return
    if not rows:
        out.print("no open review items" if status else "no review items")
        return
    table("reviews", rows, _COLUMNS)


@reviews_app.command("resolve")
def reviews_resolve(
    review: Annotated[int, typer.Argument(help="The item's id (first column of `reviews ls`).")],
    note: Annotated[str, typer.Option("--note", help="What was decided (kept with the item).")],
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    actor: Annotated[str, typer.Option(help="Who resolves, for the audit log.")] = "cli",
) -> None:
    """Resolve an open review item with a note (recorded in the audit log)."""
    if not note.strip():
        err.print("--note must say what was decided")
        raise typer.Exit(2)

    async def work(ops: Any) -> Any:
        try:
            return await ops.resolve_review(review, actor, note)
        except ReviewError as exc:
            return exc

    row = with_operations(settings_of(config), work)
    if isinstance(row, ReviewError):
        err.print(f"carehook: {row}", highlight=False, markup=False)
        raise typer.Exit(1)
    if json_:
        print(json.dumps(jsonable(row), indent=2))
        return
    out.print(f"resolved review {row.id} ({row.kind}) as {row.resolved_by}", highlight=False)
