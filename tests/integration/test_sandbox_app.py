"""The sandbox app on 127.0.0.1: the three fakes at their mount points, and its config snippet."""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from carehook.configfile import render_default_config
from carehook.connectors.abridge import AbridgeClient
from carehook.connectors.healthie import HealthieClient
from carehook.sandbox.abridge import FakeAbridgeApi, npi_for
from carehook.sandbox.app import Sandbox, SandboxCredentials, build_sandbox, config_snippet
from carehook.sandbox.healthie import FakeHealthieApi
from carehook.settings import Settings
from loopback import serve_app


@pytest.fixture
def sandbox() -> Sandbox:
    """A fresh sandbox with the fixed credentials."""
    return build_sandbox()


@pytest.fixture
def base_url(sandbox: Sandbox) -> Iterator[str]:
    """The sandbox served on loopback."""
    with serve_app(sandbox.app) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A real HTTP client that never follows redirects."""
    async with httpx.AsyncClient(timeout=10, follow_redirects=False) as client:
        yield client


async def test_index_lists_the_three_apis(http: httpx.AsyncClient, base_url: str) -> None:
    """GET / says where each fake lives."""
    index = (await http.get(base_url + "/")).json()
    assert index["abridge"] == f"{base_url}/abridge"
    assert index["healthie"] == f"{base_url}/healthie/graphql"
    assert index["fhir"] == f"{base_url}/fhir"


async def test_fhir_is_mounted_and_guarded(
    http: httpx.AsyncClient, base_url: str, sandbox: Sandbox
) -> None:
    """/fhir serves the FHIR server: metadata openly, resources with the sandbox token only."""
    metadata = await http.get(f"{base_url}/fhir/metadata")
    assert metadata.status_code == 200
    assert metadata.json()["resourceType"] == "CapabilityStatement"
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "1"}]}
    refused = await http.post(f"{base_url}/fhir/Patient", json=patient)
    assert refused.status_code == 401
    token = {"Authorization": f"Bearer {sandbox.credentials.fhir_token}"}
    created = await http.post(f"{base_url}/fhir/Patient", json=patient, headers=token)
    assert created.status_code == 201
    assert len(sandbox.fhir.resources("Patient")) == 1


async def test_abridge_is_mounted(http: httpx.AsyncClient, base_url: str, sandbox: Sandbox) -> None:
    """The Abridge client works against /abridge with the sandbox's credentials."""
    creds = sandbox.credentials
    client = AbridgeClient(http, f"{base_url}/abridge", creds.abridge_token, creds.abridge_org_id)
    note = await client.note("ses_000001", None)
    assert note.note_id == "note_000001"
    assert sandbox.abridge.requests == [("GET", "/v1/sessions/ses_000001/note")]


async def test_healthie_endpoint_is_exact(
    http: httpx.AsyncClient, base_url: str, sandbox: Sandbox
) -> None:
    """/healthie/graphql itself answers the POST (no redirect to a trailing slash), and the
    transcript links point at /healthie/files on the same sandbox."""
    client = HealthieClient(http, f"{base_url}/healthie/graphql",
                            sandbox.credentials.healthie_api_key)  # fmt: skip
    appointment = await client.appointment("700001")
    assert appointment.appointment_id == "700001"
    link = appointment.transcripts[0]
    assert link.url
    assert link.url.startswith(f"{base_url}/healthie/files/transcripts/")
    assert (await client.transcript_file(link)).startswith("WEBVTT")
    assert (await http.get(f"{base_url}/healthie/graphql")).status_code == 405


async def test_openevidence_registration_is_served(http: httpx.AsyncClient, base_url: str,
                                                   sandbox: Sandbox) -> None:  # fmt: skip
    """/openevidence/v1/webhooks takes the brief's registration body with the bearer token."""
    body = {"url": "https://gw.example/webhooks/openevidence", "events": ["query.completed"],
            "secret": "s" * 32}
    token = {"Authorization": f"Bearer {sandbox.credentials.openevidence_token}"}
    created = await http.post(f"{base_url}/openevidence/v1/webhooks", json=body, headers=token)
    assert created.status_code == 201
    assert "secret" not in created.json()
    assert (await http.post(f"{base_url}/openevidence/v1/webhooks", json=body)).status_code == 401
    listed = await http.get(f"{base_url}/openevidence/v1/webhooks", headers=token)
    assert [w["id"] for w in listed.json()["data"]] == [created.json()["id"]]


def test_snippet_is_toml_with_the_sandbox_urls_and_credentials() -> None:
    """The snippet parses as TOML and points every API at the sandbox with its credentials."""
    creds = SandboxCredentials()
    doc = tomllib.loads(config_snippet("http://127.0.0.1:9000/", creds))
    assert doc["destinations"]["ehr"] == {
        "type": "fhir", "url": "http://127.0.0.1:9000/fhir", "token": creds.fhir_token,
        "allow_private": True}  # fmt: skip
    assert doc["sources"]["abridge"] == {
        "api_url": "http://127.0.0.1:9000/abridge", "api_token": creds.abridge_token,
        "org_id": creds.abridge_org_id, "api_allow_private": True}  # fmt: skip
    assert doc["sources"]["healthie"] == {
        "api_url": "http://127.0.0.1:9000/healthie/graphql",
        "api_key": creds.healthie_api_key, "api_allow_private": True}  # fmt: skip


def test_snippet_merged_as_told_into_a_fresh_config_is_valid() -> None:
    """Following the snippet's comments on a `carehook init` config gives valid settings."""
    fresh = tomllib.loads(render_default_config())
    snippet = tomllib.loads(config_snippet("http://127.0.0.1:9000"))
    merged = _merge(fresh, snippet)
    settings = Settings(**merged)
    abridge = settings.sources["abridge"]
    assert abridge.vendor == "abridge"
    assert abridge.secrets == fresh["sources"]["abridge"]["secrets"]
    assert abridge.api_url == "http://127.0.0.1:9000/abridge"
    assert abridge.api_allow_private
    assert settings.sources["healthie"].api_key == SandboxCredentials().healthie_api_key
    assert settings.destinations["ehr"].allow_private


def test_fakes_are_deterministic_for_any_id() -> None:
    """Any id gets content, the same every time and from every instance."""
    for session in ("ses_000001", "3f9c2a", "ünï code", "123"):
        first, second = FakeAbridgeApi("a").note_body(session), FakeAbridgeApi("b").note_body(
            session)
        assert first == second
        assert all(s["text"] for s in first["sections"])
    assert FakeHealthieApi("k").vtt("x1") == FakeHealthieApi("j").vtt("x1")
    first = FakeHealthieApi("k").appointment_body("x1")
    second = FakeHealthieApi("j").appointment_body("x1")
    for body in (first, second):
        for t in body["transcripts"]:
            t.pop("expiring_url")  # a fresh secret link per answer
    assert first == second
    notes = {FakeAbridgeApi("a").note_body(f"ses_{n}")["title"] for n in range(40)}
    assert len(notes) > 1


def test_provider_npis_pass_the_npi_check_digit() -> None:
    """Provider NPIs are 10 digits with a valid Luhn check digit (prefix 80840)."""
    assert _npi_valid("1234567893")  # CMS's published example
    assert not _npi_valid("1234567890")
    fake = FakeAbridgeApi("t")
    npis = {fake.provider_body(f"prov_{n:04d}")["npi"] for n in range(50)}
    assert len(npis) > 40
    assert all(_npi_valid(n) for n in npis)
    assert npi_for(bytes(32)).startswith("1")


def _npi_valid(npi: str) -> bool:
    digits = [int(c) for c in "80840" + npi]
    total = 0
    for i, d in enumerate(reversed(digits)):
        d = d * 2 if i % 2 else d
        total += d - 9 if d > 9 else d
    return len(npi) == 10 and total % 10 == 0


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
