"""Value objects that travel along the path of one event, and the rule for their text. Pure.

:func:`check_text` is the one rule for a text carehook stores as a column (event id, type,
subject): a ``str`` of 1 to ``limit`` characters with no control character (C0, DEL, C1) and no
lone surrogate, so it is valid UTF-8 and both stores accept it. :class:`ParsedEvent` applies it
to every event of every vendor, known type or not, before anything reaches the store.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from carehook.errors import UnstorableValue

#: the longest event id or type; a subject is ``<vendor>:<kind>:<id>``, so a little longer
MAX_ID = 256
MAX_SUBJECT = 320
#: C0 controls (NUL included), DEL, C1 controls and surrogates (a lone one is not UTF-8)
_UNSTORABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def text_problem(value: object, limit: int = MAX_ID) -> str | None:
    """Why ``value`` is not a storable text (``"control_character"`` ...), or None if it is."""
    if not isinstance(value, str):
        return "not_text"
    if not value:
        return "empty"
    if len(value) > limit:
        return "too_long"
    bad = _UNSTORABLE.search(value)
    if bad is None:
        return None
    return "lone_surrogate" if bad.group() >= "\ud800" else "control_character"


def scrub(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters with every unstorable character replaced by ``?``.

    For what carehook writes about a refused request (a source name out of the path, a
    forwarded address, a cause naming fields) so that the request log can always keep it.
    """
    return _UNSTORABLE.sub("?", value[:limit])


def check_text(value: object, name: str, limit: int = MAX_ID) -> str:
    """``value`` if it is a storable text, else :class:`UnstorableValue` naming ``name``."""
    problem = text_problem(value, limit)
    if problem is not None or not isinstance(value, str):
        raise UnstorableValue(f"{name}: {problem}")
    return value


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

    def __post_init__(self) -> None:
        check_text(self.event_id, "event_id")
        check_text(self.type, "type")
        check_text(self.subject, "subject", MAX_SUBJECT)


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
