"""What carehook decides from a CapabilityStatement and from SMART scopes."""

from __future__ import annotations

import pytest

from carehook.connectors.fhir.capabilities import allowed, parse_capabilities

#: the shape of Epic's R4 statement for the parts read here (conditionalCreate false)
EPIC_LIKE = {
    "resourceType": "CapabilityStatement", "fhirVersion": "4.0.1",
    "software": {"name": "Epic"},
    "rest": [{"mode": "server", "resource": [
        {"type": "DocumentReference", "conditionalCreate": False,
         "interaction": [{"code": c} for c in ("create", "read", "search-type", "update")]},
        {"type": "Practitioner"},
    ]}],
}  # fmt: skip
HAPI_LIKE = {
    "resourceType": "CapabilityStatement",
    "rest": [{"mode": "server", "resource": [{"type": "DocumentReference",
                                               "conditionalCreate": True}]}],
}  # fmt: skip


def test_conditional_create_only_where_declared() -> None:
    """false or absent → search-first; true → conditional; unlisted types → search-first."""
    epic, hapi = parse_capabilities(EPIC_LIKE), parse_capabilities(HAPI_LIKE)
    assert epic.create_mode("DocumentReference") == "search-first"
    assert epic.create_mode("Practitioner") == "search-first"
    assert hapi.create_mode("DocumentReference") == "conditional"
    assert hapi.create_mode("Composition") == "search-first"
    assert (epic.software, epic.fhir_version) == ("Epic", "4.0.1")


def test_the_override_wins_over_discovery() -> None:
    """conditional_create = yes / no decide regardless of the statement."""
    epic, hapi = parse_capabilities(EPIC_LIKE), parse_capabilities(HAPI_LIKE)
    assert epic.create_mode("DocumentReference", "yes") == "conditional"
    assert hapi.create_mode("DocumentReference", "no") == "search-first"


def test_a_malformed_statement_declares_nothing() -> None:
    """Garbage shapes never raise; nothing is conditional."""
    caps = parse_capabilities({"rest": "x"})
    assert caps.create_mode("DocumentReference") == "search-first"
    caps = parse_capabilities({"rest": [{"resource": [1, {"type": 3}]}]})
    assert caps.conditional == {}


@pytest.mark.parametrize(
    ("scopes", "kind", "expected"),
    [
        ("system/DocumentReference.cru", "DocumentReference", "cru"),
        ("system/DocumentReference.c system/DocumentReference.rs", "DocumentReference", "crs"),
        ("system/*.rs", "Patient", "rs"),
        ("system/DocumentReference.write", "DocumentReference", "cu"),
        ("system/DocumentReference.read", "DocumentReference", "rs"),
        ("system/Practitioner.*", "Practitioner", "crus"),
        ("system/Practitioner.cruds", "DocumentReference", ""),
        ("system/DocumentReference.rs?category=clinical-note", "DocumentReference", "rs"),
        (None, "DocumentReference", ""),
    ],
)
def test_scopes_allow_what_they_name(scopes: str | None, kind: str, expected: str) -> None:
    """SMART v1 and v2 scopes, wildcards and query suffixes."""
    assert allowed(scopes, kind, "crus") == expected
