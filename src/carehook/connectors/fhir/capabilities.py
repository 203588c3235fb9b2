"""What a FHIR server says it can do, and what carehook will therefore do (pure, no I/O).

From the CapabilityStatement (``GET {base}/metadata``): per resource type, whether it declares
``conditionalCreate``. Epic's R4 statement lists DocumentReference with
``conditionalCreate: false``; Oracle Health's does not declare it; HAPI FHIR and Medplum do. The
``conditional_create`` setting overrides the discovery (``yes`` / ``no``); ``auto`` follows it,
and a type the statement does not list is searched first (the safe choice).

From SMART scopes (v2 ``system/DocumentReference.cru``, ``system/*.rs``; v1
``system/DocumentReference.write``, ``.read``, ``.*``): whether an interaction is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

CreateMode = Literal["conditional", "search-first"]
#: what the note, transcript and roster workflows need, per resource type (SMART v2 letters)
NEEDED: dict[str, str] = {
    "DocumentReference": "crus",
    "Composition": "crs",
    "Practitioner": "crus",
    "Patient": "rs",
    "Encounter": "rs",
}
_SCOPE = re.compile(r"(?:system|user|patient)/(?P<type>\*|[A-Z][A-Za-z]+)\.(?P<ops>[a-z*]+)")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}


@dataclass(frozen=True, slots=True)
class Capabilities:
    """Per resource type: whether the server declares conditional create."""

    conditional: Mapping[str, bool]
    software: str = "unknown"
    fhir_version: str = "unknown"
    #: per listed type: whether it declares the ``identifier`` search parameter
    identifier_search: Mapping[str, bool] = field(default_factory=dict)

    def create_mode(self, resource_type: str, override: str = "auto") -> CreateMode:
        """How a create of ``resource_type`` is made idempotent on this server."""
        if override == "yes":
            return "conditional"
        if override == "no":
            return "search-first"
        return "conditional" if self.conditional.get(resource_type, False) else "search-first"


def parse_capabilities(statement: Mapping[str, Any]) -> Capabilities:
    """The :class:`Capabilities` of a CapabilityStatement (unknown shapes: nothing declared)."""
    conditional: dict[str, bool] = {}
    searchable: dict[str, bool] = {}
    rests = statement.get("rest")
    for rest in rests if isinstance(rests, list) else []:
        if not isinstance(rest, Mapping) or rest.get("mode", "server") != "server":
            continue
        resources = rest.get("resource")
        for item in resources if isinstance(resources, list) else []:
            if isinstance(item, Mapping) and isinstance(item.get("type"), str):
                conditional[item["type"]] = item.get("conditionalCreate") is True
                searchable[item["type"]] = _declares_identifier(item.get("searchParam"))
    software = statement.get("software")
    name = software.get("name") if isinstance(software, Mapping) else None
    version = statement.get("fhirVersion")
    return Capabilities(conditional, str(name or "unknown"), str(version or "unknown"),
                        searchable)  # fmt: skip


def _declares_identifier(params: Any) -> bool:
    listed = params if isinstance(params, list) else []
    return any(isinstance(p, Mapping) and p.get("name") == "identifier" for p in listed)


def allowed(scopes: str | None, resource_type: str, letters: str) -> str:
    """The letters of ``letters`` (c r u d s) that ``scopes`` allow on ``resource_type``."""
    granted: set[str] = set()
    for scope in (scopes or "").split():
        match = _SCOPE.fullmatch(scope.split("?", 1)[0])
        if match is None or match["type"] not in ("*", resource_type):
            continue
        ops = match["ops"]
        granted.update(_V1.get(ops, ops))
    return "".join(letter for letter in letters if letter in granted)
