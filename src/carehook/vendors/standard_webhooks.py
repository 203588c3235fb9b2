"""Any Standard Webhooks (Svix-style) sender: a generic ``{type, timestamp?, data}`` JSON object.

The event id is the ``webhook-id`` header (which the signature covers), read from the
``headers`` that :meth:`StandardWebhooksVendor.parse` receives; without it (a caller that has no
headers) the payload's ``id``, else ``"sha256:" + hex sha256(raw body)``. The subject is
``standard-webhooks:<data.id>``, or ``standard-webhooks:<type>`` when the data has no id.

A Standard Webhooks sender's event types are not known in advance, so the catalog is empty and
every event is stored as unhandled unless a configured route handles its type.
:data:`EXAMPLE_TYPES` are what ``sample`` and the fixtures use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from carehook.envelope import ParsedEvent
from carehook.errors import PayloadValidationError
from carehook.signatures import Scheme, SchemeOptions
from carehook.signatures.standard_webhooks import ID_HEADER, StandardWebhooksScheme
from carehook.vendors import EMPTY_HEADERS
from carehook.vendors._common import (
    body_id,
    entity_id,
    event_type,
    iso,
    lenient_moment,
    sample_token,
)

#: example types of a generic sender (clinical-flavoured, synthetic), for samples and fixtures
EXAMPLE_TYPES = ("lab_result.available", "referral.status_changed", "message.created")


def _event_id(body: bytes, payload: Mapping[str, Any], headers: Mapping[str, str]) -> str:
    header = headers.get(ID_HEADER, "").strip()
    if header:
        return header
    return entity_id(payload.get("id")) or body_id(body)


@dataclass(frozen=True, slots=True)
class StandardWebhooksVendor:
    """A generic Standard Webhooks sender."""

    name: str = field(default="standard-webhooks", init=False)
    event_types: tuple[str, ...] = field(default=(), init=False)

    def scheme(self, options: SchemeOptions) -> Scheme:
        """Standard Webhooks v1 signatures."""
        return StandardWebhooksScheme.from_options(options)

    def parse(
        self,
        body: bytes,
        payload: Mapping[str, Any],
        *,
        headers: Mapping[str, str] = EMPTY_HEADERS,
    ) -> ParsedEvent:
        """Read the id (``webhook-id``), type, subject and time of a generic event."""
        type_ = event_type(payload, self.name)
        data = payload.get("data", {})
        if not isinstance(data, Mapping):
            raise PayloadValidationError(f"{self.name}: data: dict_type")
        subject = f"{self.name}:{entity_id(data.get('id'), 'data.id') or type_}"
        occurred_at = lenient_moment(payload.get("timestamp"))
        return ParsedEvent(
            _event_id(body, payload, headers),
            type_,
            subject,
            occurred_at,
            handled=type_ in self.event_types,
        )

    def sample(self, event_type: str, now: datetime, seq: int = 0) -> dict[str, Any]:
        """A generic event of any ``event_type`` (see :data:`EXAMPLE_TYPES`)."""
        token = sample_token(self.name, event_type, seq, 12)
        return {
            "type": event_type,
            "timestamp": iso(now),
            "data": {"id": f"obj_{token}", "status": "available", "sequence": seq},
        }


VENDOR = StandardWebhooksVendor()
