"""``carehook keys``: the SMART Backend Services signing keys of FHIR destinations.

``keys new DESTINATION [--alg RS384|ES384]`` writes a private key under ``<data_dir>/keys/``
(mode 0600) and prints its ``kid``; it is published at ``/.well-known/jwks.json`` at once but
signs only once the destination's older keys are retired (``keys retire KID``), so the EHR can
fetch the new JWKS first. ``keys ls`` lists every key, retired ones too; never a private part.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from carehook.cli_common import ConfigOpt, JsonOpt, err, jsonable, out, settings_of, table
from carehook.connectors.fhir.keys import Alg
from carehook.services import key_store

keys_app = typer.Typer(help="SMART Backend Services signing keys (JWKS at "
                       "/.well-known/jwks.json).", no_args_is_help=True)  # fmt: skip


@keys_app.command("new")
def keys_new(
    destination: Annotated[str, typer.Argument(help="The FHIR destination (e.g. ehr).")],
    config: ConfigOpt = None,
    alg: Annotated[
        str | None, typer.Option(help="RS384 or ES384 (default: the destination's signing_alg).")
    ] = None,
) -> None:
    """Create a signing key for DESTINATION and print its kid."""
    settings = settings_of(config)
    dest = settings.destinations.get(destination)
    if dest is None or dest.type != "fhir":
        err.print(f"no fhir destination named {destination!r} in the config")
        raise typer.Exit(1)
    chosen = alg or dest.signing_alg
    if chosen not in ("RS384", "ES384"):
        err.print("--alg must be RS384 or ES384")
        raise typer.Exit(1)
    algorithm: Alg = "RS384" if chosen == "RS384" else "ES384"
    info = key_store(settings).new(destination, algorithm)
    out.print(info.kid, highlight=False)


@keys_app.command("ls")
def keys_ls(config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """List every key: kid, destination, algorithm, created, retired."""
    infos = key_store(settings_of(config)).list()
    rows = [{**jsonable(i), "active": i.active} for i in infos]
    if json_:
        out.print_json(json.dumps(rows))
        return
    table("signing keys", rows, ["kid", "destination", "alg", "created_at", "retired_at",
                                 "active"])  # fmt: skip


@keys_app.command("retire")
def keys_retire(
    kid: Annotated[str, typer.Argument(help="The key to unpublish.")], config: ConfigOpt = None
) -> None:
    """Retire a key: it leaves the JWKS and never signs again."""
    info = key_store(settings_of(config)).retire(kid)
    out.print(f"retired {info.kid} ({info.destination}, {info.alg})", highlight=False)
