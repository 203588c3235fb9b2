"""The storable-text rule (envelope.check_text) and how vendors apply it to ids."""

from __future__ import annotations

import pytest

from carehook.envelope import ParsedEvent, check_text, scrub, text_problem
from carehook.errors import PayloadValidationError, UnstorableValue
from carehook.vendors._common import IntOrId, Model, entity_id, validate


@pytest.mark.parametrize(("value", "problem"), [
    ("evt_1", None), ("é" * 256, None), ("\U0001d11e", None), ("a b", None),
    ("", "empty"), ("x" * 257, "too_long"), (7, "not_text"), (None, "not_text"),
    ("a\x00", "control_character"), ("\x1b", "control_character"), ("\x7f", "control_character"),
    ("\x85", "control_character"), ("\ud800", "lone_surrogate"), ("x\udfff", "lone_surrogate"),
])  # fmt: skip
def test_text_problem(value: object, problem: str | None) -> None:
    """Control characters, lone surrogates, empty and over-long texts are named; others pass."""
    assert text_problem(value) == problem


def test_check_text_names_the_field_never_the_value() -> None:
    """The refusal names the field and the problem only."""
    with pytest.raises(UnstorableValue) as caught:
        check_text("Jane\x00Doe", "data.session_id")
    assert caught.value.reason == "data.session_id: control_character"
    assert "Jane" not in str(caught.value)


def test_parsed_event_refuses_unstorable_fields() -> None:
    """Every vendor's ParsedEvent is checked: id, type and subject (a subject may be longer)."""
    ParsedEvent("e" * 256, "t", "vendor:kind:" + "s" * 256, None, handled=False)
    for args in (("e\ud800", "t", "s"), ("e", "t\x00", "s"), ("e", "t", "s" * 321)):
        with pytest.raises(UnstorableValue):
            ParsedEvent(*args, None, handled=False)


def test_entity_id_is_as_strict_as_a_validated_id() -> None:
    """Absent or empty is None; present but unstorable (integers too) is refused."""
    assert entity_id(None) is None
    assert entity_id("") is None
    assert entity_id(True) is None
    assert entity_id(12) == "12"
    assert entity_id(int("9" * 256)) == "9" * 256
    for bad in (int("9" * 257), int("9" * 4000), "x" * 257, "a\x00", "\ud800"):
        with pytest.raises(UnstorableValue):
            entity_id(bad, "id")


class _Thing(Model):
    ident: IntOrId


def test_validated_ids_refuse_long_integers_and_control_characters() -> None:
    """IntOrId refuses a 257-digit integer and a NUL (a 422 naming the field)."""
    assert validate(_Thing, {"ident": int("9" * 256)}, "t").ident == int("9" * 256)
    for bad in (int("9" * 257), "a\x00", "\ud800"):
        with pytest.raises(PayloadValidationError, match="ident"):
            validate(_Thing, {"ident": bad}, "t")


def test_scrub_keeps_logged_texts_storable() -> None:
    """scrub replaces unstorable characters and cuts to the limit."""
    assert scrub("ab\x00c\ud800" + "x" * 100, 8) == "ab?c?xxx"
