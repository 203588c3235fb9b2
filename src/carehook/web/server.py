"""The HTTP server's guard: a header-block cap (431), header and body timeouts, a connection cap.

uvicorn's httptools protocol buffers a header block of any size, waits for headers and bodies
forever (its keep-alive timeout only runs between requests), and its ``limit_concurrency``
answers 503 to everyone once slow connections fill it. :class:`GuardedProtocol` is that protocol
with the four bounds of ``[server]`` added, cheaply: a request that arrives in one read (every
well-behaved delivery) arms no timer beyond the connection's first.

- **Header block** over ``max_header_bytes`` (request line plus headers): ``431`` and close,
  counted before the block is complete, so an unfinished block is never held past the cap.
- **Header timeout**: a connection whose next request's headers are not complete within
  ``header_timeout_seconds`` (counted from the connection's start, then from the request's first
  byte) is answered ``408`` and closed (an idle new connection is just closed).
- **Body timeout**: a body not complete within ``body_timeout_seconds`` of its headers: the
  ingress sees the request's scope marked :data:`~carehook.web.ingress.BODY_TIMED_OUT` and
  writes a 408 row to the request log; the client gets ``408`` and the connection is closed.
- **Connection cap**: above ``max_connections`` the oldest connection still waiting for headers
  (a slow-loris, or an idle keep-alive one) is closed to make room; if none is waiting, the
  new one is closed. Deliveries that send their headers at once keep being served.

Refusals here happen before routing, so they have no source and no request-log row: each is
counted in ``carehook_connections_refused_total{reason}`` and logged with its reason.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from carehook.observability import Metrics, get_logger
from carehook.settings import ServerSettings
from carehook.web.ingress import BODY_TIMED_OUT

_log = get_logger("carehook.server")


@dataclass(frozen=True, slots=True)
class Limits:
    """The guard's bounds (from ``[server]``)."""

    max_header_bytes: int = 65536
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1000

    @classmethod
    def of(cls, server: ServerSettings) -> Limits:
        """The bounds a ``[server]`` block sets."""
        return cls(server.max_header_bytes, server.header_timeout_seconds,
                   server.body_timeout_seconds, server.max_connections)  # fmt: skip


def _raw_answer(status: int, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return b"".join([
        STATUS_LINE[status], b"content-type: application/json\r\n",
        b"content-length: ", str(len(body)).encode(), b"\r\nconnection: close\r\n\r\n", body,
    ])  # fmt: skip


_TOO_LARGE = _raw_answer(431, "request header fields too large")
_TIMEOUT = _raw_answer(408, "request timeout")


class _HeadersTooLarge(Exception):
    """Raised inside the parser's callback to stop it at an over-long header block."""


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of :class:`Limits` (see the module doc)."""

    limits: ClassVar[Limits] = Limits()
    metrics: ClassVar[Metrics | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_headers = True  # no complete request headers since the last response
        self._refusing = False
        self._header_bytes = 0
        self._generation = 0
        self._opened = 0.0
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the header clock; make room if this connection is over the cap."""
        super().connection_made(transport)
        self._opened = self.loop.time()
        self._arm_header_timer()
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clocks."""
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed the parser, counting header bytes; arm a clock only if a request is unfinished."""
        if self._refusing:
            return
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._refusing:
            return
        if self._in_headers:
            if self._header_bytes > self.limits.max_header_bytes:
                self._close("headers_too_large", _TOO_LARGE)
            elif self._header_bytes:
                self._arm_header_timer()
        elif self._body_timer is None and self.cycle.more_body:
            self._body_timer = self.loop.call_later(
                self.limits.body_timeout, self._body_timed_out, self.cycle
            )

    def on_headers_complete(self) -> None:
        """Refuse an over-long block (counted exactly); else hand the request to the app."""
        self._in_headers = False
        self._generation += 1
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self._header_bytes > self.limits.max_header_bytes and self._block_size() > (
            self.limits.max_header_bytes
        ):
            self._refusing = True
            # stops the parser; uvicorn answers a parser error with send_400_response (below)
            raise _HeadersTooLarge
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error, or our 431 when the error is the refusal."""
        if self._refusing:
            self._close("headers_too_large", _TOO_LARGE)
        else:
            super().send_400_response(msg)

    def on_response_complete(self) -> None:
        """Back to waiting for headers: reset the count, stop the body clock."""
        self._in_headers = True
        self._header_bytes = 0
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_response_complete()

    def _block_size(self) -> int:
        return len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(
                self.limits.header_timeout, self._header_timed_out, self._generation
            )

    def _header_timed_out(self, generation: int) -> None:
        self._header_timer = None
        if generation == self._generation and self._in_headers and not (
            self._refusing or self.transport.is_closing()
        ):
            self._close("header_timeout", _TIMEOUT if self._header_bytes else b"")

    def _body_timed_out(self, cycle: Any) -> None:
        self._body_timer = None
        if cycle is self.cycle and cycle.more_body and not cycle.response_complete:
            cast(dict[str, Any], cycle.scope)[BODY_TIMED_OUT] = True
            self._close("body_timeout", _TIMEOUT)


    def _make_room(self) -> None:
        waiting = [c for c in self.connections
                   if isinstance(c, GuardedProtocol) and c._in_headers and c is not self]
        victim = min(waiting, key=lambda c: c._opened) if waiting else self
        victim._close("connection_cap", b"")

    def _close(self, reason: str, answer: bytes) -> None:
        self._refusing = True
        self._cancel_timers()
        if answer and not self.transport.is_closing():
            self.transport.write(answer)
        self.transport.close()
        if self.metrics is not None:
            self.metrics.connections_refused.labels(reason).inc()
        peer = self.client[0] if self.client else ""
        _log.warning("server.refused", reason=reason, remote_addr=peer)

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None


def guarded_protocol(limits: Limits, metrics: Metrics | None = None) -> type[GuardedProtocol]:
    """A :class:`GuardedProtocol` class bound to ``limits``, counting refusals in ``metrics``."""
    return type("BoundGuardedProtocol", (GuardedProtocol,), {"limits": limits, "metrics": metrics})
