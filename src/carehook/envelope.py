"""Value objects that travel along the path of one event. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What a signature scheme may look at: the raw request as received.

    ``headers`` has lower-case names; ``path`` is the path the vendor signed (the source's
    ``public_path``); ``query`` is the query string without ``?``.
    """

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class ParsedEvent:
    """What a vendor reads out of a verified payload."""

    event_id: str
    type: str
    subject: str
    occurred_at: datetime | None
    handled: bool


@dataclass(frozen=True, slots=True)
class Envelope:
    """A verified, parsed event ready for the inbox."""

    source: str
    vendor: str
    event_id: str
    type: str
    subject: str
    occurred_at: datetime | None
    received_at: datetime
    payload: bytes = field(repr=False)
    secret_index: int
    handled: bool


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One line of the request log: every request, accepted or not. Never a body."""

    source: str
    received_at: datetime
    remote_addr: str
    size: int
    status: int
    outcome: str
    cause: str = ""
    event_id: str | None = None
