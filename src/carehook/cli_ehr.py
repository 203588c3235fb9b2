"""``carehook ehr check [DESTINATION]``: what the gateway will do with an EHR, before go-live.

It reads the server's CapabilityStatement and smart-configuration, gets a token, and prints the
authentication in use, for each resource type the workflows write whether creates are
conditional or search-first, which interactions the workflows need, and whether the granted
(else the configured) scopes allow them. Exit code 1 when something needed is missing.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from carehook.cli_common import ConfigOpt, out, run, settings_of, table
from carehook.connectors.fhir.capabilities import NEEDED, allowed, parse_capabilities
from carehook.connectors.fhir.client import FhirClient
from carehook.errors import StepError
from carehook.services import fhir_client
from carehook.settings import DestinationSettings

ehr_app = typer.Typer(help="FHIR EHR destinations: check what the gateway will do.",
                      no_args_is_help=True)  # fmt: skip


def _auth(dest: DestinationSettings) -> str:
    if dest.auth is not None:
        return dest.auth
    if dest.client_secret:
        return "client-secret"
    return "bearer" if dest.token else "none"


async def _probe(client: FhirClient, dest: DestinationSettings) -> dict[str, Any]:
    """Everything ``check`` prints, gathered; each failure named, never raised."""
    report: dict[str, Any] = {"auth": _auth(dest), "problems": []}
    try:
        report["token_url"] = await client.token_url() if report["auth"] in (
            "smart-backend", "client-secret") else None  # fmt: skip
    except StepError as exc:
        report["problems"].append(f"token URL: {exc}")
    try:
        report["granted"] = await client.access_token_scope()
        report["token"] = "obtained" if report["auth"] != "bearer" else "static"
    except StepError as exc:
        report["token"] = "FAILED"  # noqa: S105 (a status word, not a secret)
        report["problems"].append(f"token: {exc}")
    try:
        report["capabilities"] = parse_capabilities(await client.capabilities())
    except StepError as exc:
        report["problems"].append(f"metadata: {exc}")
    return report


def _rows(report: dict[str, Any], dest: DestinationSettings) -> list[dict[str, str]]:
    caps = report.get("capabilities")
    scope = report.get("granted") or dest.scope
    rows = []
    for kind, needs in NEEDED.items():
        mode = caps.create_mode(kind, dest.conditional_create) if caps else "?"
        ok = allowed(scope, kind, needs) if scope else needs
        missing = "".join(letter for letter in needs if letter not in ok)
        if missing and scope:
            report["problems"].append(f"scope does not allow {kind}.{missing}")
        if caps and mode == "search-first" and "c" in needs and not (
                caps.identifier_search.get(kind)):  # fmt: skip
            report.setdefault("warnings", []).append(
                f"{kind}: search-first, but the statement does not declare an identifier search")
        rows.append({"resource": kind, "create": mode if "c" in needs else "-",
                     "needs": needs, "scope allows": ok if scope else "(no scope: not checked)",
                     "missing": missing if scope else ""})  # fmt: skip
    return rows


@ehr_app.command("check")
def ehr_check(
    destination: Annotated[str, typer.Argument(help="The FHIR destination.")] = "ehr",
    config: ConfigOpt = None,
) -> None:
    """Read the EHR's capabilities, get a token, and print what the gateway will do."""
    settings = settings_of(config)
    client, http = fhir_client(settings, destination)
    dest = settings.destinations[destination]

    async def go() -> dict[str, Any]:
        try:
            return await _probe(client, dest)
        finally:
            await http.aclose()

    report = run(go())
    caps = report.get("capabilities")
    out.print(f"destination  {destination}  {dest.url}", highlight=False)
    out.print(f"auth         {report['auth']}"
              + (f" ({dest.signing_alg}, client_id {dest.client_id})"
                 if report["auth"] == "smart-backend" else ""), highlight=False)  # fmt: skip
    out.print(f"token URL    {report.get('token_url') or '-'}", highlight=False)
    out.print(f"token        {report.get('token', '-')}; scope granted: "
              f"{report.get('granted') or '(not said)'}", highlight=False)  # fmt: skip
    if caps is not None:
        out.print(f"server       {caps.software}, FHIR {caps.fhir_version}; conditional_create "
                  f"= {dest.conditional_create}", highlight=False)  # fmt: skip
    table("what the gateway will do", _rows(report, dest),
          ["resource", "create", "needs", "scope allows", "missing"])
    for warning in report.get("warnings", []):
        out.print(f"WARNING: {warning}", highlight=False, markup=False)
    for problem in report["problems"]:
        out.print(f"PROBLEM: {problem}", highlight=False, markup=False)
    if report["problems"]:
        raise typer.Exit(1)
    out.print("ready")
