"""The ingress's fast JSON path decides exactly as json.loads does (values and refusal causes)."""

from __future__ import annotations

import json

import pytest

from carehook.errors import PayloadError
from carehook.web.ingress import _json_object

BODIES = [
    b'{"a":1}', b'{"a":1}\n', b' {"a":"\\ud800"}', b'{"a":1e400}', b'{"a":-0,"b":1.0}',
    b'{"a":12345678901234567890123}', b'{"a":1,"a":2}', b'{"a":"\\u00e9","b":[1,{"c":null}]}',
    b'{"a":NaN}', b"\xef\xbb\xbf{}", '{"a":"é"}'.encode("utf-16"),
    b'{"a":"\x01"}', b'{"a":1} x', b'{"a":true,}', b'{"a":01}', b"\xff{}", b"", b"[1]", b'"s"',
    b"[" * 3000 + b"]" * 3000, b'{"a":' * 300 + b"1" + b"}" * 300,
]


def _reference(body: bytes) -> object:
    try:
        value = json.loads(body)
    except UnicodeDecodeError:
        return "payload:not_utf8"
    except ValueError:
        return "payload:invalid_json"
    except RecursionError:
        return "payload:json_too_deep"
    return value if isinstance(value, dict) else "payload:not_an_object"


@pytest.mark.parametrize("body", BODIES)
def test_fast_path_agrees_with_json_loads(body):
    """Same object, or the same refusal cause, as the json.loads reference."""
    try:
        got: object = _json_object(body)
    except PayloadError as exc:
        got = f"payload:{exc.reason}"
    want = _reference(body)
    if isinstance(want, dict) and want.get("a") != want.get("a"):  # NaN is not equal to itself
        assert repr(got) == repr(want)
    else:
        assert got == want
