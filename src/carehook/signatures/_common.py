"""Helpers shared by the signature schemes: header reading, HMAC, timestamps, templates.

Everything here raises :class:`carehook.errors.VerificationError` on bad input, with a ``detail``
that names headers and numbers only: never a secret, a signature value or body bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from carehook.envelope import SignedRequest
from carehook.errors import ConfigError, VerificationError
from carehook.signatures import SchemeOptions

#: longer header values are refused before any parsing (no vendor sends anything close)
MAX_HEADER_LENGTH = 8192
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")
_PLACEHOLDER = re.compile(r"\{(timestamp|body|id)\}")
_K = TypeVar("_K")
#: CPython's hashlib lets go of the GIL for one update of 2,048 bytes or more
#: (``HASHLIB_GIL_MINSIZE``); messages up to :data:`HOLD_GIL_UP_TO` are fed in pieces below that
_PIECE = 2047
#: above this, hashing outweighs a GIL hand-off, and other threads may run while it hashes
HOLD_GIL_UP_TO = 64 * 1024


class _Hash(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


def header_name(options: SchemeOptions, default: str) -> str:
    """The header a source uses for the scheme's ``default`` header (renamed by options)."""
    return options.headers.get(default, default).lower()


def require_secrets(secrets: Sequence[str]) -> None:
    """Fail closed: a source without any secret verifies nothing."""
    if not secrets:
        raise VerificationError("no_secrets", "the source has no secret configured")


def get_header(request: SignedRequest, name: str) -> str:
    """The value of header ``name``, or VerificationError if missing, empty, huge or non-ASCII."""
    value = request.headers.get(name)
    if value is None:
        raise VerificationError("missing_header", f"header {name} is missing")
    if len(value) > MAX_HEADER_LENGTH:
        raise VerificationError("malformed_header", f"header {name} is too long ({len(value)})")
    if not value.isascii() or not value.isprintable():
        raise VerificationError(
            "malformed_header", f"header {name} has non-ASCII or control characters"
        )
    value = value.strip()
    if not value:
        raise VerificationError("malformed_header", f"header {name} is empty")
    return value


def _fed(state: _Hash, message: bytes) -> _Hash:
    """``state`` updated with ``message``, keeping the GIL for a message of webhook size.

    Verification runs on the event loop, beside the store's writer thread. Letting go of the
    GIL there (hashlib does for 2 KiB or more in one update; ``hmac.digest`` always does) lets
    the writer take it, and the loop then waits for it back: under load that hand-off cost more
    than hashing a 1.5 KB body (``bench/ingest.py``: a' +23 % with this and the nonce pool of
    :mod:`carehook.crypto`). A large message is hashed in one update, GIL released.
    """
    size = len(message)
    if size <= _PIECE or size > HOLD_GIL_UP_TO:
        state.update(message)
        return state
    view = memoryview(message)
    for start in range(0, size, _PIECE):
        state.update(view[start : start + _PIECE])
    return state


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """The raw HMAC-SHA256 of ``message`` under ``key`` (see :func:`_fed` on the GIL)."""
    return _fed(hmac.new(key, digestmod=hashlib.sha256), message).digest()


def sha256(data: bytes) -> bytes:
    """The SHA-256 digest of ``data`` (see :func:`_fed` on the GIL)."""
    return _fed(hashlib.sha256(), data).digest()


def parse_hex_signature(value: str, name: str) -> bytes:
    """Decode one hex-encoded SHA-256 signature taken from header ``name``."""
    if not _HEX_SHA256.fullmatch(value):
        raise VerificationError("malformed_header", f"header {name} holds a malformed signature")
    return bytes.fromhex(value)


def first_match(
    keys: Sequence[_K],
    expected_for: Callable[[_K], bytes],
    candidates: Iterable[bytes],
    what: str,
) -> int:
    """Index of the first key (secret) whose expected MAC equals one of ``candidates``.

    Every comparison is constant-time; raises ``bad_signature`` when no key matches.
    """
    received = list(candidates)
    for index, key in enumerate(keys):
        expected = expected_for(key)
        if any(hmac.compare_digest(expected, candidate) for candidate in received):
            return index
    raise VerificationError("bad_signature", f"no configured secret matches {what}")


def parse_unix_seconds(value: str, name: str) -> int:
    """Parse a unix-seconds timestamp strictly (ASCII digits only)."""
    if not _UNIX_SECONDS.fullmatch(value):
        raise VerificationError("malformed_header", f"header {name} is not a unix timestamp")
    return int(value)


def parse_iso8601(value: str, name: str) -> float:
    """Parse an ISO 8601 timestamp (naive means UTC) into unix seconds."""
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    except (ValueError, OverflowError):
        raise VerificationError(
            "malformed_header", f"header {name} is neither unix seconds nor ISO 8601"
        ) from None


def check_tolerance(timestamp: float, now: float, tolerance: int, name: str) -> None:
    """Refuse a timestamp more than ``tolerance`` seconds before or after ``now``."""
    skew = now - timestamp
    if abs(skew) <= tolerance:
        return
    direction = "in the past" if skew > 0 else "in the future"
    raise VerificationError(
        "timestamp_skew",
        f"{name} is {abs(skew):.0f} s {direction} (tolerance {tolerance} s)",
        skew_seconds=skew,
    )


def compile_template(template: str, required: Sequence[str]) -> tuple[str, ...]:
    """Split a signed-content template into literal and placeholder parts, checked once.

    ``"{timestamp}.{body}"`` becomes ``("", "timestamp", ".", "body", "")``: odd items name a
    placeholder, even items are literal text.
    """
    parts = tuple(_PLACEHOLDER.split(template))
    names = parts[1::2]
    for literal in parts[0::2]:
        if "{" in literal or "}" in literal:
            raise ConfigError(f"signed template {template!r} has an unknown placeholder")
    for name in required:
        if name not in names:
            raise ConfigError(f"signed template {template!r} lacks {{{name}}}")
    return parts


def render_template(parts: Sequence[str], values: Mapping[str, bytes]) -> bytes:
    """Build the signed bytes from compiled ``parts``; the body is never decoded."""
    chunks = [values[part] if index % 2 else part.encode() for index, part in enumerate(parts)]
    return b"".join(chunks)
