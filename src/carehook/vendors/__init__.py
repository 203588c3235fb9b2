"""Vendors: pure knowledge of each sender (scheme, event catalog, payload models, samples).

A vendor reads event id, type, subject and time out of a verified payload and builds realistic
sample payloads for ``carehook simulate``. ``VENDORS`` maps each built-in vendor's name to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, Protocol

from carehook.envelope import ParsedEvent
from carehook.signatures import Scheme, SchemeOptions

#: the default of ``Vendor.parse(..., headers=...)``: no request headers
EMPTY_HEADERS: Mapping[str, str] = MappingProxyType({})


class Vendor(Protocol):
    """One webhook sender's protocol."""

    @property
    def name(self) -> str:
        """The vendor's name, as used in configuration (``vendor = "abridge"``)."""
        ...

    @property
    def event_types(self) -> tuple[str, ...]:
        """Every event type carehook has a payload model / workflow for, in catalog order."""
        ...

    def scheme(self, options: SchemeOptions) -> Scheme:
        """The signature scheme, bound to a source's options."""
        ...

    def parse(
        self,
        body: bytes,
        payload: Mapping[str, Any],
        *,
        headers: Mapping[str, str] = EMPTY_HEADERS,
    ) -> ParsedEvent:
        """Read id, type, subject and time; validate known types (PayloadValidationError).

        ``headers`` are the verified request's headers (lower-case names); a vendor whose event id
        travels in a header (Standard Webhooks' ``webhook-id``) reads it there.
        """
        ...

    def sample(self, event_type: str, now: datetime, seq: int = 0) -> dict[str, Any]:
        """A realistic payload of ``event_type`` (``seq`` varies its ids)."""
        ...


def builtin_vendors() -> dict[str, Vendor]:
    """Every built-in vendor by name (imported lazily so nothing is built at import time)."""
    from carehook.vendors import abridge, healthie, nabla, openevidence, standard_webhooks

    vendors: list[Vendor] = [
        abridge.VENDOR,
        openevidence.VENDOR,
        nabla.VENDOR,
        healthie.VENDOR,
        standard_webhooks.VENDOR,
    ]
    return {v.name: v for v in vendors}
