"""Every built-in vendor: samples of every event type parse, round-trip and never leak PHI."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from carehook.errors import PayloadValidationError
from carehook.vendors import Vendor, builtin_vendors
from carehook.vendors.standard_webhooks import EXAMPLE_TYPES

NOW = datetime(2024, 11, 23, 14, 0, tzinfo=UTC)
CANARY = "CANARY-PHI-7f3a"
VENDORS = builtin_vendors()
ALL_TYPES = [
    (name, event_type)
    for name, vendor in VENDORS.items()
    for event_type in (vendor.event_types or EXAMPLE_TYPES)
]
KNOWN_TYPES = [(name, t) for name, t in ALL_TYPES if t in VENDORS[name].event_types]
#: what each vendor's sample of seq=5 is about
SUBJECTS = {
    "abridge": {
        "provider.enrolled": "abridge:provider:prov_0005",
        "*": "abridge:session:ses_000005",
    },
    "openevidence": {
        "deepconsult.*": "openevidence:consult:dc_000005",
        "rate_limit.warning": "openevidence:ratelimit",
        "api_key.expiring": "openevidence:apikey:key_005",
        "query.*": "openevidence:query:q_000005",
        "evidence.updated": "openevidence:topic:topic_0005",
        "citation.*": "openevidence:citation:cit_000005",
        "review.flagged": "openevidence:review:rev_000005",
    },
    "nabla": {
        "generate_note_async.*": "nabla:job:generate_note_async_000005",
        "transcribe_async.*": "nabla:job:transcribe_async_000005",
    },
    "healthie": {"*": "healthie:appointment:700005"},
}


def _expected_subject(vendor: str, event_type: str, payload: dict[str, Any]) -> str:
    if vendor == "standard-webhooks":
        return f"standard-webhooks:{payload['data']['id']}"
    table = SUBJECTS[vendor]
    family = event_type.split(".")[0] + ".*"
    return table.get(event_type) or table.get(family) or table["*"]


def _parse(vendor: Vendor, payload: dict[str, Any], **kwargs: Any):
    return vendor.parse(json.dumps(payload).encode(), payload, **kwargs)


def test_builtin_vendors_are_the_five():
    """builtin_vendors() names the five built-in vendors by their configuration names."""
    assert sorted(VENDORS) == ["abridge", "healthie", "nabla", "openevidence", "standard-webhooks"]
    assert all(vendor.name == name for name, vendor in VENDORS.items())


@pytest.mark.parametrize(("vendor", "event_type"), ALL_TYPES)
def test_sample_parses_to_its_type_and_subject(vendor, event_type):
    """The sample of every event type parses to that type, the right subject, handled if known."""
    payload = VENDORS[vendor].sample(event_type, NOW, 5)
    event = _parse(VENDORS[vendor], payload)
    assert event.type == event_type
    assert event.subject == _expected_subject(vendor, event_type, payload)
    assert event.handled is (event_type in VENDORS[vendor].event_types)
    assert event.event_id


@pytest.mark.parametrize(("vendor", "event_type"), ALL_TYPES)
def test_sample_round_trips_through_json(vendor, event_type):
    """A sample is plain JSON, and parsing its serialisation twice gives the same event."""
    payload = VENDORS[vendor].sample(event_type, NOW, 1)
    body = json.dumps(payload).encode()
    decoded = json.loads(body)
    assert decoded == payload
    assert VENDORS[vendor].parse(body, decoded) == VENDORS[vendor].parse(body, payload)


@pytest.mark.parametrize(("vendor", "event_type"), ALL_TYPES)
def test_seq_varies_event_ids(vendor, event_type):
    """Two samples with different seq have different event ids (simulate sends distinct events)."""
    first = _parse(VENDORS[vendor], VENDORS[vendor].sample(event_type, NOW, 1))
    second = _parse(VENDORS[vendor], VENDORS[vendor].sample(event_type, NOW, 2))
    assert first.event_id != second.event_id


@pytest.mark.parametrize("vendor", VENDORS)
def test_event_types_of_one_sample_seq_are_distinct_events(vendor):
    """Samples of different types with the same seq never share an event id."""
    types = VENDORS[vendor].event_types or EXAMPLE_TYPES
    ids = {_parse(VENDORS[vendor], VENDORS[vendor].sample(t, NOW, 3)).event_id for t in types}
    assert len(ids) == len(types)


@pytest.mark.parametrize("vendor", [name for name, v in VENDORS.items() if v.event_types])
def test_sample_of_unknown_type_is_refused(vendor):
    """Asking a vendor for a type outside its catalog is a ValueError naming the catalog."""
    with pytest.raises(ValueError, match="no event type"):
        VENDORS[vendor].sample("no.such_type", NOW)


@pytest.mark.parametrize("vendor", VENDORS)
def test_payload_without_type_is_refused(vendor):
    """A payload with no event type at all is a PayloadValidationError."""
    with pytest.raises(PayloadValidationError):
        _parse(VENDORS[vendor], {"id": "x", "event_id": "x", "data": {}, "resource_id": 1})


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("bad_type", [17, None, "", " spaced type ", "x" * 300, ["a.b"]])
def test_invalid_type_is_refused_without_echo(vendor, bad_type):
    """A type that is not a short identifier is refused, and never quoted back."""
    payload = {
        "type": bad_type,
        "event": bad_type,
        "event_type": bad_type,
        "event_id": "e",
        "id": "e",
    }
    with pytest.raises(PayloadValidationError) as caught:
        _parse(VENDORS[vendor], {**payload, "resource_id": 1, "resource_id_type": "Appointment"})
    if isinstance(bad_type, str) and len(bad_type) > 3:
        assert bad_type.strip() not in str(caught.value)


#: a required field of each vendor's known types, deleted to make the payload invalid
REQUIRED = {
    "abridge": ("event_id",),
    "openevidence": ("data",),
    "nabla": ("data", "id"),
    "healthie": ("resource_id",),
}
TYPE_KEYS = {"type", "event", "event_type"}


def _poison(value: Any, key: str | None = None) -> Any:
    """Replace every string (but the event type) with the canary, numbers with canary strings."""
    if isinstance(value, dict):
        return {k: _poison(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_poison(v) for v in value]
    if isinstance(value, str) and key not in TYPE_KEYS:
        return f"{CANARY} {value}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{CANARY}-{value}"
    return value


@pytest.mark.parametrize(("vendor", "event_type"), KNOWN_TYPES)
def test_validation_error_never_contains_payload_values(vendor, event_type):
    """A known type missing a required field is refused; the error names fields, never values."""
    payload = _poison(copy.deepcopy(VENDORS[vendor].sample(event_type, NOW, 9)))
    *parents, leaf = REQUIRED[vendor]
    target = payload
    for parent in parents:
        target = target[parent]
    del target[leaf]
    with pytest.raises(PayloadValidationError) as caught:
        _parse(VENDORS[vendor], payload)
    message = f"{caught.value} {caught.value.reason}"
    assert CANARY not in message
    assert leaf in message
    assert "@" not in message


@pytest.mark.parametrize(("vendor", "event_type"), KNOWN_TYPES)
def test_poisoned_values_are_never_echoed(vendor, event_type):
    """With every value replaced by the canary, parsing either accepts or names fields only."""
    payload = _poison(VENDORS[vendor].sample(event_type, NOW, 9))
    errors: list[PayloadValidationError] = []
    try:
        event = _parse(VENDORS[vendor], payload)
    except PayloadValidationError as exc:
        errors.append(exc)
    else:  # every field of this type is a free-form string: the canary may travel as an id
        assert event.type == event_type
    for error in errors:
        assert CANARY not in f"{error} {error.reason} {error.args}"
        assert ": " in error.reason


UNKNOWN = {
    "abridge": {
        "event_id": "evt_u",
        "type": "encounter.session.paused",
        "data": {"session_id": "s1"},
    },
    "openevidence": {"type": "deepconsult.paused", "data": {"consultId": "c1"}},
    "nabla": {"id": "evt_u", "type": "summarize_async.succeeded", "data": {"id": "job_u"}},
    "healthie": {"resource_id": 5, "resource_id_type": "User", "event_type": "user.created"},
    "standard-webhooks": {"type": "invoice.paid", "data": {"id": "inv_1"}},
}


@pytest.mark.parametrize("vendor", VENDORS)
def test_unknown_type_is_accepted_unhandled(vendor):
    """A type outside the catalog is kept, marked unhandled, with an id and a subject."""
    event = _parse(VENDORS[vendor], UNKNOWN[vendor])
    assert event.handled is False
    assert event.event_id
    assert event.subject.startswith(vendor + ":")
