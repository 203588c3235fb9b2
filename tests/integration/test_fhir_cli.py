"""``carehook keys`` and ``carehook ehr check`` against a real gateway (publishing the JWKS) and
the sandbox's Epic-like FHIR server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from typer.testing import CliRunner

from carehook.bootstrap import build_app, build_components, server_config
from carehook.cli import app
from carehook.connectors.fhir import keys as keys_module
from carehook.sandbox.fhir import FhirServer
from carehook.settings import load_settings
from loopback import free_port, serve_app, serve_config

CLIENT_ID = "carehook-cli-client"
FULL_SCOPE = ("system/DocumentReference.crus system/Composition.crs system/Practitioner.crus "
              "system/Patient.rs system/Encounter.rs")  # fmt: skip


@dataclass
class Site:
    """A config, the gateway serving its JWKS, and the FHIR server trusting it."""

    config: Path
    gateway: str
    fhir: FhirServer

    def cli(self, *args: str) -> tuple[int, str]:
        """Run ``carehook ARGS --config CONFIG``; (exit code, output)."""
        result = CliRunner().invoke(app, [*args, "--config", str(self.config)])
        return result.exit_code, result.output


def _site(tmp_path: Path, scope: str) -> Iterator[Site]:
    fhir = FhirServer(conditional_create=False)
    with serve_app(Starlette(routes=[Mount("/fhir", app=fhir.app)])) as fhir_url:
        port = free_port()
        gateway = f"http://127.0.0.1:{port}"
        config = tmp_path / "carehook.toml"
        config.write_text("\n".join([
            'data_dir = "."', f'public_url = "{gateway}"', "[worker]", "enabled = false",
            "[destinations.ehr]", 'type = "fhir"', f'url = "{fhir_url}/fhir"',
            'auth = "smart-backend"', f'client_id = "{CLIENT_ID}"', f'scope = "{scope}"',
            'signing_alg = "ES384"', "allow_private = true"]) + "\n")  # fmt: skip
        fhir.register_client(CLIENT_ID, f"{gateway}/.well-known/jwks.json")
        gw = build_app(build_components(load_settings(config)))
        with serve_config(server_config(gw, "127.0.0.1", port)):
            yield Site(config, gateway, fhir)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """An Epic-like site whose scope covers every write the workflows make."""
    yield from _site(tmp_path, FULL_SCOPE)


def test_keys_new_is_published_listed_and_retired(site: Site) -> None:
    """keys new prints a kid the JWKS serves; keys retire takes it out."""
    code, kid = site.cli("keys", "new", "ehr")
    kid = kid.strip()
    assert code == 0
    assert kid
    jwks = httpx.get(f"{site.gateway}/.well-known/jwks.json").json()
    assert [(k["kid"], k["alg"], k["kty"]) for k in jwks["keys"]] == [(kid, "ES384", "EC")]
    code, listing = site.cli("keys", "ls", "--json")
    assert code == 0
    assert kid in listing
    assert '"active": true' in listing
    assert site.cli("keys", "retire", kid)[0] == 0
    assert httpx.get(f"{site.gateway}/.well-known/jwks.json").json() == {"keys": []}


def test_a_kid_never_begins_with_a_dash_so_keys_retire_takes_it(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One thumbprint in 64 begins with ``-``; such a key is never kept (typer would read
    ``keys retire -abc`` as an option)."""
    real = keys_module._generate
    dashed = next(k for k in iter(lambda: real("ES384"), None) if k.thumbprint().startswith("-"))
    made = iter([dashed])
    monkeypatch.setattr(keys_module, "_generate", lambda alg: next(made, None) or real(alg))
    code, kid = site.cli("keys", "new", "ehr")
    assert code == 0
    assert kid.strip()
    assert not kid.startswith("-")
    assert next(made, None) is None, "the dashed key was offered"
    assert site.cli("keys", "retire", kid.strip())[0] == 0


def test_ehr_check_reports_search_first_and_a_working_token(site: Site) -> None:
    """With a key published: a token is obtained; DocumentReference creates are search-first."""
    site.cli("keys", "new", "ehr")
    code, output = site.cli("ehr", "check")
    assert code == 0, output
    assert "smart-backend (ES384" in output
    assert "token        obtained" in output
    rows = {line.split("│")[1].strip(): line for line in output.splitlines()
            if line.count("│") > 3}  # fmt: skip
    assert "search-first" in rows["DocumentReference"]
    assert "ready" in output
    assert ("POST", "/auth/token") in site.fhir.requests


def test_ehr_check_without_a_key_or_with_a_narrow_scope_fails(tmp_path: Path) -> None:
    """No key: the token fails; a scope without DocumentReference.u: named as missing."""
    for site in _site(tmp_path, "system/DocumentReference.crs"):
        code, output = site.cli("ehr", "check")
        assert code == 1
        assert "no active ES384 signing key" in " ".join(output.split())  # rich wraps lines
        site.cli("keys", "new", "ehr")
        code, output = site.cli("ehr", "check")
        assert code == 1
        assert "PROBLEM: scope does not allow DocumentReference.u" in " ".join(output.split())
