"""Helpers shared by the vendors: safe validation errors, event types, times, ids, samples.

The one rule here: a :class:`~carehook.errors.PayloadValidationError` names field locations and
pydantic error types, never an input value (``str(pydantic.ValidationError)`` quotes the input,
which may be PHI, so it is never used).

Ids, validated (:data:`Id`, :data:`IntOrId`) or read leniently (:func:`entity_id`), follow the
storable-text rule of :func:`carehook.envelope.check_text`: at most 256 characters, no control
character, no lone surrogate; an integer id too (a 4,000-digit number is refused).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from carehook.envelope import MAX_ID, check_text, text_problem
from carehook.errors import PayloadValidationError

_M = TypeVar("_M", bound=BaseModel)
_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}")


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


#: an instant given as ISO 8601 or unix seconds (naive means UTC), always returned in UTC
Moment = Annotated[datetime, AfterValidator(_as_utc)]
def _storable(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise PydanticCustomError(f"unstorable_{problem}", "not a storable text")
    return value


def _short_int(value: int) -> int:
    if len(str(value)) > MAX_ID:
        raise PydanticCustomError("unstorable_too_long", "integer id too long")
    return value


#: an identifier: a non-empty storable string of at most 256 characters
Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID), AfterValidator(_storable)]
#: an identifier some vendors send as a number (at most 256 digits)
IntOrId = Annotated[StrictInt, AfterValidator(_short_int)] | Id

_MOMENT: TypeAdapter[datetime] = TypeAdapter(Moment)


class Model(BaseModel):
    """Base of every payload model: extra fields are allowed (vendors add fields)."""

    model_config = ConfigDict(extra="allow")


def describe_errors(exc: ValidationError, prefix: Sequence[str | int] = ()) -> str:
    """``"data.session_id: missing; timestamp: datetime_parsing"``: locations and types only."""
    parts = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        location = ".".join(str(item) for item in (*prefix, *error["loc"])) or "(payload)"
        parts.append(f"{location}: {error['type']}")
    return "; ".join(parts)


def validate(model: type[_M], value: Any, context: str, prefix: Sequence[str | int] = ()) -> _M:
    """Validate ``value`` with ``model``, or raise PayloadValidationError naming fields only."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise PayloadValidationError(f"{context}: {describe_errors(exc, prefix)}") from None


def event_type(payload: Mapping[str, Any], vendor: str, keys: Sequence[str] = ("type",)) -> str:
    """The event type under the first of ``keys`` present; PayloadValidationError otherwise."""
    for key in keys:
        if key in payload:
            value = payload[key]
            if isinstance(value, str) and _TYPE.fullmatch(value):
                return value
            raise PayloadValidationError(f"{vendor}: {key}: invalid event type")
    raise PayloadValidationError(f"{vendor}: {'/'.join(keys)}: missing")


def body_id(body: bytes) -> str:
    """An event id derived from the raw body: ``"sha256:" + hex sha256``."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def lenient_moment(value: Any) -> datetime | None:
    """Read an optional, undocumented time field: None when absent or unreadable."""
    if value is None:
        return None
    try:
        return _MOMENT.validate_python(value)
    except ValidationError:
        return None


def entity_id(value: Any, name: str = "id") -> str | None:
    """An id out of an unvalidated field: None when absent, empty or not a string or integer.

    A string or integer that is present is held to the storable-text rule as strictly as a
    validated :data:`Id`: :class:`~carehook.errors.UnstorableValue` (naming ``name``) otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        return None
    if isinstance(value, int):
        value = str(value) if value.bit_length() <= 1024 else "x" * (MAX_ID + 1)
    return check_text(value, name)


def iso(now: datetime, timespec: str = "seconds") -> str:
    """``now`` in UTC as ISO 8601 with a ``Z`` suffix, as most vendors write it."""
    return _as_utc(now).isoformat(timespec=timespec).replace("+00:00", "Z")


def sample_token(vendor: str, event_type: str, seq: int, length: int = 20) -> str:
    """A deterministic hex token for sample ids: differs per vendor, event type and ``seq``."""
    return hashlib.sha256(f"{vendor}:{event_type}:{seq}".encode()).hexdigest()[:length]


def unknown_type(vendor: str, event_type_: str, catalog: Sequence[str]) -> ValueError:
    """The error ``sample`` raises for a type outside the vendor's catalog."""
    return ValueError(f"{vendor} has no event type {event_type_!r} (known: {', '.join(catalog)})")
