"""``carehook admin token new`` and ``carehook sources ls``: admin tokens and source status.

A new token is printed once; only its SHA-256 goes into the config, appended as an
``[[admin.tokens]]`` table (the file is rewritten atomically, mode 0600). ``sources ls`` shows
each source's secrets by id with when each last verified a stored event, so an operator
knows when an old secret can be retired: the same service call as ``GET /admin/api/sources``.
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer

from carehook.cli_common import ConfigOpt, JsonOpt, err, jsonable, out, settings_of, with_operations
from carehook.errors import ConfigError
from carehook.settings import ADMIN_SCOPES, config_path, load_settings

admin_app = typer.Typer(help="The admin API and dashboard: tokens.", no_args_is_help=True)
token_app = typer.Typer(help="Admin API tokens.", no_args_is_help=True)
sources_app = typer.Typer(help="Configured sources and their secrets' status.",
                          no_args_is_help=True)  # fmt: skip
admin_app.add_typer(token_app, name="token")


@token_app.command("new")
def token_new(
    name: Annotated[str, typer.Argument(help="Who holds it (the audit log's actor).")],
    scopes: Annotated[str, typer.Option(
        help=f"Comma-separated: {', '.join(ADMIN_SCOPES)}.")] = "read",
    config: ConfigOpt = None,
) -> None:
    """Create an admin token: print it once, write only its hash into the config."""
    from carehook.web.admin.auth import new_token, token_hash

    wanted = [s.strip() for s in scopes.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in ADMIN_SCOPES]
    if not wanted or unknown:
        err.print(f"--scopes: choose from {', '.join(ADMIN_SCOPES)}")
        raise typer.Exit(2)
    path = config_path(config)
    settings = load_settings(path)
    if any(t.name == name for t in settings.admin.tokens):
        raise ConfigError(f"an admin token named {name!r} exists already")
    token = new_token()
    append_token(path, name, token_hash(token), wanted)
    out.print(f"admin token {name!r} ({', '.join(wanted)}), shown once, keep it safe:",
              highlight=False)  # fmt: skip
    print(token)


def append_token(path: Path, name: str, digest: str, scopes: list[str]) -> None:
    """Append an ``[[admin.tokens]]`` table to the config, checked, atomically, mode 0600."""
    text = path.read_text()
    block = (f'\n[[admin.tokens]]\nname = {json.dumps(name)}\nhash = "{digest}"\n'
             f"scopes = {json.dumps(scopes)}\n")  # fmt: skip
    updated = text + ("" if text.endswith("\n") else "\n") + block
    try:
        tomllib.loads(updated)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot add the token to {path}: {exc}") from None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".carehook-", suffix=".toml")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(updated)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    load_settings(path)  # the new file must still load (a bad name is refused by the model)


@sources_app.command("ls")
def sources_ls(config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """Each source: vendor, endpoint, secrets by id with their last match, recent traffic."""
    rows = with_operations(settings_of(config), lambda ops: ops.source_statuses())
    if json_:
        print(json.dumps(jsonable(rows), indent=2))
        return
    for row in rows:
        out.print(f"[bold]{row.name}[/bold] ({row.vendor or 'not configured'}) "
                  f"{row.endpoint}", highlight=False)  # fmt: skip
        for sec in row.secrets:
            _secret_line(sec, row.last_matched_index)
        if not row.secrets:
            out.print("  no secrets", highlight=False)
        rejections = ", ".join(f"{k} {v}" for k, v in sorted(row.rejections_24h.items()))
        out.print(f"  last accepted: {_when(row.last_accepted_at)}; last rejected (24 h): "
                  f"{_when(row.last_rejected_at)}; rejections (24 h): {rejections or 'none'}",
                  highlight=False, markup=False, soft_wrap=True)  # fmt: skip


def _secret_line(sec: Any, latest: int | None) -> None:
    state = "configured" if sec.configured else "retired"
    mark = "  (latest match)" if sec.index == latest else ""
    out.print(f"  secret {sec.index} [{state}]: last matched {_when(sec.last_matched_at)}, "
              f"{sec.events} events{mark}", highlight=False, markup=False)  # fmt: skip


def _when(value: Any) -> str:
    return "never" if value is None else value.isoformat(timespec="seconds")
