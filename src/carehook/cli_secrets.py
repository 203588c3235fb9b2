"""``carehook secrets``: add, list and retire a source's signing secrets in the config file.

A source may hold several secrets at once (rotation): a delivery passes if any matches, and the
store records the id of the one that did. ``add`` appends a secret with the next id never given
(``secret_ids`` in the config, beside ``secrets``); ``retire ID`` removes one and lists its id in
``retired_secret_ids``, so an id keeps its meaning for good and the events it verified are still
counted under it. The usual rotation: ``add`` (id N), give the new secret to the vendor, wait
until deliveries match N (``carehook sources ls``), then ``retire`` the old id.

A generated secret is printed once, on stdout, when it is created; a secret read from stdin is
never echoed; ``ls`` shows a fingerprint (first 12 hex digits of its SHA-256), never the secret.
The config file is rewritten atomically with mode 0600.
"""

from __future__ import annotations

import getpass
import hashlib
import sys
from typing import Annotated

import typer

from carehook.cli_common import ConfigOpt, err, out, table
from carehook.cli_register import say
from carehook.errors import ConfigError
from carehook.settings import config_path, load_settings, resolve_secret

secrets_app = typer.Typer(help="A source's signing secrets (add, ls, retire).",
                          no_args_is_help=True)  # fmt: skip
SourceArg = Annotated[str, typer.Argument(help="Configured source name.")]


def _vendor(config: ConfigOpt, source: str) -> str:
    settings = load_settings(config_path(config))
    if source not in settings.sources:
        raise ConfigError(f"no source {source!r} in the config")
    return settings.sources[source].vendor


def _read_secret() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("secret (not echoed): ")
    return sys.stdin.readline().strip()


@secrets_app.command("add")
def add(
    source: SourceArg,
    stdin: Annotated[bool, typer.Option("--stdin", help="Read the secret from stdin (a vendor's, "
                                        "e.g. Nabla's) instead of generating one.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Append a secret to SOURCE (generated and printed once, or read from stdin, not echoed)."""
    from carehook.configfile import add_secret, new_secret

    vendor = _vendor(config, source)
    secret = _read_secret() if stdin else new_secret(vendor)
    secret_id = add_secret(config_path(config), source, secret)
    if not stdin:
        print(secret, flush=True)  # the only time it is shown: give it to the vendor
    say(err, f"sources.{source} secret {secret_id} added (fingerprint {_fingerprint(secret)}); "
        "restart the gateway to use it")


@secrets_app.command("ls")
def ls(source: SourceArg, config: ConfigOpt = None) -> None:
    """List SOURCE's secrets: id, how it is written (literal or env:NAME), fingerprint; then the
    retired ids."""
    from carehook.configfile import source_secret_ids

    _vendor(config, source)
    have = source_secret_ids(config_path(config), source)
    rows = []
    for index, (secret_id, written) in enumerate(zip(have.ids, have.secrets, strict=True)):
        form = written if written.startswith("env:") else "literal"
        try:
            value = resolve_secret(written, f"sources.{source}.secrets[{index}]")
            fingerprint = _fingerprint(value)
        except ConfigError:
            fingerprint = "(variable not set)"
        rows.append({"id": secret_id, "form": form, "fingerprint": fingerprint})
    table(f"{source} secrets", rows, ["id", "form", "fingerprint"])
    if have.retired:
        out.print(f"retired: {', '.join(map(str, have.retired))}", highlight=False)


@secrets_app.command("retire")
def retire(
    source: SourceArg,
    secret_id: Annotated[int, typer.Argument(metavar="ID", min=0,
                                             help="The id to remove (see `secrets ls`).")],
    config: ConfigOpt = None,
) -> None:
    """Remove SOURCE's secret ID (the other ids keep their meaning; ID is never given again)."""
    from carehook.configfile import retire_secret

    _vendor(config, source)
    retire_secret(config_path(config), source, secret_id)
    say(out, f"sources.{source} secret {secret_id} retired; restart the gateway to stop "
        "accepting it")


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:12]
