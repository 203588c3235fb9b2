"""``carehook secrets``: add, list and retire a source's signing secrets in the config file.

A source may hold several secrets at once (rotation): a delivery passes if any matches, and the
store records the index of the one that did. Indexes are positions in the source's ``secrets``
list: ``add`` appends (every existing index keeps its meaning); ``retire INDEX`` removes one, and
the secrets after it move down by one. The usual rotation: ``add`` (index N), give the new secret
to the vendor, wait until deliveries match N (``carehook sources ls``), then ``retire 0``.

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
    index = add_secret(config_path(config), source, secret)
    if not stdin:
        print(secret, flush=True)  # the only time it is shown: give it to the vendor
    say(err, f"sources.{source}.secrets[{index}] added (fingerprint {_fingerprint(secret)}); "
        "restart the gateway to use it")


@secrets_app.command("ls")
def ls(source: SourceArg, config: ConfigOpt = None) -> None:
    """List SOURCE's secrets: index, how it is written (literal or env:NAME), fingerprint."""
    from carehook.configfile import source_secrets

    _vendor(config, source)
    rows = []
    for index, written in enumerate(source_secrets(config_path(config), source)):
        form = written if written.startswith("env:") else "literal"
        try:
            value = resolve_secret(written, f"sources.{source}.secrets[{index}]")
            fingerprint = _fingerprint(value)
        except ConfigError:
            fingerprint = "(variable not set)"
        rows.append({"index": index, "form": form, "fingerprint": fingerprint})
    table(f"{source} secrets", rows, ["index", "form", "fingerprint"])


@secrets_app.command("retire")
def retire(
    source: SourceArg,
    index: Annotated[int, typer.Argument(min=0, help="The index to remove (see `secrets ls`).")],
    config: ConfigOpt = None,
) -> None:
    """Remove SOURCE's secret INDEX (the secrets after it move down by one)."""
    from carehook.configfile import retire_secret

    _vendor(config, source)
    retire_secret(config_path(config), source, index)
    say(out, f"sources.{source}.secrets[{index}] retired; restart the gateway to stop "
        "accepting it")


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:12]
