"""The sandbox FHIR server, served on 127.0.0.1 under /fhir and spoken to over plain HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from starlette.applications import Starlette
from starlette.routing import Mount

from carehook.connectors.fhir.mapping import identifier_token, if_none_exist
from carehook.sandbox.fhir import FhirServer, split_token
from loopback import serve_app

TOKEN = "sandbox-token-1"
CANARY = "CANARY-PHI-7731"
SYSTEM = "urn:carehook:abridge:note"
NOW = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def _doc(value: str = "note-1", **extra: Any) -> dict[str, Any]:
    """A minimal valid DocumentReference with one identifier."""
    return {
        "resourceType": "DocumentReference",
        "identifier": [{"system": SYSTEM, "value": value}],
        "status": "current",
        "content": [{"attachment": {"contentType": "text/plain", "data": "aGk="}}],
        **extra,
    }


@pytest.fixture
def server() -> FhirServer:
    """A fresh server that wants a bearer token and has a fixed clock."""
    return FhirServer(token=TOKEN, clock=lambda: NOW)


@pytest.fixture
def http(server: FhirServer) -> Iterator[httpx.Client]:
    """An HTTP client for the server mounted under /fhir on loopback, token included."""
    app = Starlette(routes=[Mount("/fhir", app=server.app)])
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serve_app(app) as url, httpx.Client(base_url=f"{url}/fhir", headers=auth) as client:
        yield client


def _post(http: httpx.Client, body: Any, condition: str | None = None) -> httpx.Response:
    headers = {**FHIR_JSON, **({"If-None-Exist": condition} if condition else {})}
    return http.post("/DocumentReference", json=body, headers=headers)


def test_create_assigns_id_version_and_location(http: httpx.Client, server: FhirServer) -> None:
    """POST stores the resource with an id, versionId 1 and lastUpdated, and says where."""
    response = _post(http, _doc())
    assert response.status_code == 201
    stored = response.json()
    assert stored["meta"] == {"versionId": "1", "lastUpdated": "2026-05-06T07:08:09.000+00:00"}
    location = response.headers["Location"]
    assert location.endswith(f"/fhir/DocumentReference/{stored['id']}/_history/1")
    assert server.resources("DocumentReference") == [stored]


def test_invalid_resource_gets_400_outcome_naming_fields_only(http: httpx.Client) -> None:
    """A resource failing the R4 model is refused with locations, never the values sent."""
    response = _post(http, _doc(date=CANARY, subject={"reference": 7}))
    assert response.status_code == 400
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert {i["code"] for i in body["issue"]} == {"invalid"}
    assert sorted(e for i in body["issue"] for e in i["expression"]) == [
        "DocumentReference.date", "DocumentReference.subject.reference"
    ]  # fmt: skip
    assert CANARY not in response.text


@pytest.mark.parametrize(
    "body", ["not json", ["a", "list"], {"resourceType": "Patient"}, {"status": "current"}]
)
def test_malformed_or_mistyped_bodies_are_refused(http: httpx.Client, body: Any) -> None:
    """Non-JSON, non-object and wrong-type bodies get 400."""
    content = body if isinstance(body, str) else None
    response = (http.post("/DocumentReference", content=content, headers=FHIR_JSON) if content
                else _post(http, body))  # fmt: skip
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_if_none_exist_creates_once_then_returns_the_match(
    http: httpx.Client, server: FhirServer
) -> None:
    """0 matches: 201; 1 match: 200 with the existing resource, nothing new stored."""
    condition = if_none_exist(SYSTEM, "note-1")
    first = _post(http, _doc(), condition)
    second = _post(http, _doc(description="changed"), condition)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"]
    assert "description" not in second.json()
    assert len(server.resources("DocumentReference")) == 1


def test_if_none_exist_with_several_matches_is_412(http: httpx.Client) -> None:
    """Two resources share the identifier: a conditional create is a precondition failure."""
    _post(http, _doc())
    _post(http, _doc())
    assert _post(http, _doc(), if_none_exist(SYSTEM, "note-1")).status_code == 412


def test_if_none_exist_with_other_criteria_is_refused(http: httpx.Client) -> None:
    """Only the identifier criterion is supported."""
    assert _post(http, _doc(), "status=current").status_code == 400


def test_put_updates_versions_and_creates_on_update(http: httpx.Client) -> None:
    """PUT to a new id creates it (201, version 1); PUT again is 200 with version 2."""
    doc = {**_doc(), "id": "doc-a"}
    created = http.put("/DocumentReference/doc-a", json=doc, headers=FHIR_JSON)
    updated = http.put("/DocumentReference/doc-a", json={**doc, "docStatus": "final"},
                       headers=FHIR_JSON)  # fmt: skip
    assert (created.status_code, updated.status_code) == (201, 200)
    assert (created.json()["meta"]["versionId"], updated.json()["meta"]["versionId"]) == ("1", "2")
    read = http.get("/DocumentReference/doc-a").json()
    assert (read["docStatus"], read["meta"]["versionId"]) == ("final", "2")


def test_put_with_a_different_id_is_refused(http: httpx.Client) -> None:
    """The body's id must be the URL's id."""
    response = http.put("/DocumentReference/doc-a", json={**_doc(), "id": "doc-b"},
                        headers=FHIR_JSON)  # fmt: skip
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["DocumentReference.id"]


def test_read_unknown_id_or_type_is_404(http: httpx.Client) -> None:
    """Unknown ids and resource types are not found."""
    assert http.get("/DocumentReference/nope").status_code == 404
    assert http.get("/NoSuchType/1").status_code == 404


def test_search_by_identifier_returns_a_searchset(http: httpx.Client) -> None:
    """GET ?identifier=system|value returns a valid searchset Bundle of the matches only."""
    _post(http, _doc("note-1"))
    _post(http, _doc("note-2"))
    response = http.get("/DocumentReference", params={"identifier": f"{SYSTEM}|note-2"})
    bundle = response.json()
    Bundle.model_validate(bundle)
    assert (bundle["type"], bundle["total"]) == ("searchset", 1)
    assert bundle["entry"][0]["resource"]["identifier"][0]["value"] == "note-2"
    assert bundle["entry"][0]["search"] == {"mode": "match"}
    everything = http.get("/DocumentReference").json()
    assert everything["total"] == 2
    assert http.get("/DocumentReference", params={"status": "current"}).status_code == 400


def test_search_matches_a_single_identifier_composition(http: httpx.Client) -> None:
    """Composition.identifier is one Identifier, not a list; search finds it too."""
    composition = {
        "resourceType": "Composition", "status": "final", "type": {"text": "Progress note"},
        "identifier": {"system": SYSTEM, "value": "note-9"}, "date": "2026-05-06",
        "author": [{"display": "nabla AI scribe"}], "title": "Visit",
    }  # fmt: skip
    assert http.post("/Composition", json=composition, headers=FHIR_JSON).status_code == 201
    found = http.get("/Composition", params={"identifier": f"{SYSTEM}|note-9"}).json()
    assert found["total"] == 1


def test_prefer_return_minimal_answers_with_location_only(http: httpx.Client) -> None:
    """``Prefer: return=minimal`` gives an empty body and the Location."""
    headers = {**FHIR_JSON, "Prefer": "return=minimal"}
    response = http.post("/DocumentReference", json=_doc(), headers=headers)
    assert (response.status_code, response.content) == (201, b"")
    assert "/DocumentReference/" in response.headers["Location"]


def test_token_is_required_but_metadata_is_open(http: httpx.Client, server: FhirServer) -> None:
    """Without or with a wrong token: 401; /metadata answers a valid CapabilityStatement."""
    wrong = {"Authorization": "Bearer wrong"}
    assert http.get("/DocumentReference", headers=wrong).status_code == 401
    del http.headers["Authorization"]
    refused = http.get("/DocumentReference")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    metadata = http.get("/metadata")
    CapabilityStatement.model_validate(metadata.json())
    assert metadata.json()["fhirVersion"] == "4.0.1"
    server.token = None
    assert http.get("/DocumentReference").status_code == 200


def test_fail_next_answers_the_injected_status(http: httpx.Client, server: FhirServer) -> None:
    """The next N requests get the status and Retry-After, then service resumes; all recorded."""
    server.fail_next(2, status=503, retry_after=3)
    statuses = [_post(http, _doc()) for _ in range(3)]
    assert [r.status_code for r in statuses] == [503, 503, 201]
    assert statuses[0].headers["Retry-After"] == "3"
    assert statuses[0].json()["issue"][0]["code"] == "transient"
    assert server.requests == [("POST", "/DocumentReference")] * 3
    assert len(server.resources("DocumentReference")) == 1


def test_split_token_undoes_identifier_token() -> None:
    """Escaped separators survive the round trip; a bare value has no system."""
    for system, value in [("urn:a", "x"), ("urn:a|b", "c,d$e\\"), ("s\\", "|v|")]:
        assert split_token(identifier_token(system, value)) == (system, value)
    assert split_token("bare") == (None, "bare")
    assert split_token("|v") == ("", "v")
