"""Public test helpers for code that uses carehook: a store, a clock, signed requests.

- :func:`temp_store`: the real inbox on SQLite in a temporary directory (there is no in-memory
  fake: the one SQL implementation is fast enough, and a fake would be a second copy of the
  rules); it runs under the same contract suites as every store.
- :class:`FakeClock`: a settable UTC clock for the store and the worker: tests move time
  instead of sleeping.
- :func:`signed_request`: the headers and body a vendor would send, signed with its real
  scheme, for every built-in vendor; :func:`signed_for` the same for a configured source (its
  scheme options, public path and first secret).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from carehook.crypto import KeyRing
from carehook.envelope import SignedRequest
from carehook.inbox import open_store
from carehook.inbox.store import SqlStore
from carehook.signatures import SchemeOptions
from carehook.sources import Source
from carehook.vendors import builtin_vendors

__all__ = ["FakeClock", "SignedDelivery", "signed_for", "signed_request", "temp_store"]

#: the clock's default start: a fixed instant, so tests are repeatable
EPOCH = datetime(2026, 5, 10, 9, 30, tzinfo=UTC)


class FakeClock:
    """A settable UTC clock: call it for the time, ``advance`` it to move time on."""

    def __init__(self, now: datetime = EPOCH) -> None:
        self.now = now
        self.real = False

    def __call__(self) -> datetime:
        return datetime.now(UTC) if self.real else self.now

    def follow_real_time(self) -> None:
        """From now on, tell the real time (for tests about real waits, e.g. lease expiry)."""
        self.real = True

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward; returns the new time."""
        self.now += timedelta(seconds=seconds)
        return self.now

    def timestamp(self) -> float:
        """The clock's time as a Unix timestamp (what signature schemes take)."""
        return self.now.timestamp()


@asynccontextmanager
async def temp_store(
    keyring: KeyRing, *, clock: FakeClock | None = None, directory: Path | None = None
) -> AsyncIterator[SqlStore]:
    """An opened inbox on a fresh SQLite file (in ``directory`` or a temporary one), closed
    (and the temporary directory removed) after the block."""
    with tempfile.TemporaryDirectory(prefix="carehook-test-", dir=directory) as tmp:
        kw: dict[str, Any] = {} if clock is None else {"clock": clock}
        store = open_store(f"sqlite:///{Path(tmp) / 'carehook.db'}", keyring, **kw)
        async with store:
            yield store


@dataclass(frozen=True, slots=True)
class SignedDelivery:
    """A request as the vendor would send it: POST ``body`` with ``headers`` to the path."""

    headers: dict[str, str]
    body: bytes


def signed_request(
    vendor: str, secret: str, payload: Mapping[str, Any] | bytes, *, path: str = "/",
    now: float | None = None, options: SchemeOptions | None = None,
    headers: Mapping[str, str] | None = None,
) -> SignedDelivery:  # fmt: skip
    """Sign ``payload`` (a JSON object, or the raw body) the way ``vendor`` does.

    ``vendor`` is a built-in vendor's name (abridge, openevidence, nabla, healthie,
    standard-webhooks); ``path`` is the source's public path (some schemes sign it); ``now``
    is the signing time (default: now) — pass ``FakeClock.timestamp()`` to pin it.
    """
    known = builtin_vendors()
    if vendor not in known:
        raise ValueError(f"no built-in vendor {vendor!r}; known: {', '.join(sorted(known))}")
    scheme = known[vendor].scheme(options or SchemeOptions())
    return _signed(scheme, secret, payload, path, now, headers)


def signed_for(
    source: Source, payload: Mapping[str, Any] | bytes, *, now: float | None = None
) -> SignedDelivery:
    """Sign ``payload`` as the sender of a configured ``source`` would (its scheme options,
    public path and first secret)."""
    return _signed(source.scheme, source.secrets[0], payload, source.public_path, now, None)


def _signed(
    scheme: Any, secret: str, payload: Mapping[str, Any] | bytes, path: str,
    now: float | None, headers: Mapping[str, str] | None,
) -> SignedDelivery:  # fmt: skip
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    sent = {"content-type": "application/json", **(headers or {})}
    request = SignedRequest("POST", path, "", {k.lower(): v for k, v in sent.items()}, body)
    sent.update(scheme.sign(request, secret, time.time() if now is None else now))
    return SignedDelivery(sent, body)
