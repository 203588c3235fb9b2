"""Server-guard benchmark: CPU per request of uvicorn's httptools protocol and of carehook's
GuardedProtocol (header cap, timeouts, connection cap), fed the same keep-alive webhook request
from an in-memory transport to a trivial ASGI app, so only the protocol layer is measured.
Prints the median and minimum CPU microseconds per request of each over several rounds. Not a
test: it asserts nothing.

    .venv/bin/python bench/server_guard.py [--rounds 31] [--requests 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from carehook.web.server import Limits, guarded_protocol

BODY = (b'{"event_id":"evt_1","type":"encounter.session.completed","timestamp":'
        b'"2026-11-23T10:00:00Z","data":{"session_id":"ses_1","status":"completed"}}')
REQUEST = (b"POST /webhooks/abridge HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           b"Content-Type: application/json\r\nx-abridge-signature: " + b"a" * 64
           + b"\r\nx-abridge-timestamp: 1700000000\r\nContent-Length: "
           + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


async def app(scope: Any, receive: Any, send: Any) -> None:  # noqa: ARG001 (ASGI)
    """Read the body, answer 200."""
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


class Transport(asyncio.Transport):
    """A transport that drops what is written."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def write(self, data: Any) -> None:
        """Drop it."""

    def close(self) -> None:
        """Mark closed."""
        self.closing = True

    def is_closing(self) -> bool:
        """True once closed."""
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Loopback addresses."""
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default)

    def pause_reading(self) -> None:
        """No-op."""

    def resume_reading(self) -> None:
        """No-op."""


async def cpu_per_request(cls: type[asyncio.Protocol], n: int) -> float:
    """CPU microseconds per request for ``n`` keep-alive requests through ``cls``."""
    config = uvicorn.Config(app, lifespan="off", log_level="error")
    config.load()
    state = ServerState()
    proto: Any = cls(config=config, server_state=state, app_state={})  # type: ignore[call-arg]
    proto.connection_made(Transport())
    started = time.process_time()
    for _ in range(n):
        proto.data_received(REQUEST)
        while state.tasks:
            await asyncio.gather(*list(state.tasks))
    return (time.process_time() - started) / n * 1e6


async def main() -> None:
    """Alternate the two protocols for ``--rounds`` rounds; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--requests", type=int, default=10_000)
    args = parser.parse_args()
    targets: dict[str, type[asyncio.Protocol]] = {
        "uvicorn httptools": HttpToolsProtocol, "carehook guarded": guarded_protocol(Limits())}
    results: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(args.rounds):
        for name, cls in targets.items():
            results[name].append(await cpu_per_request(cls, args.requests))
    for name, values in results.items():
        print(f"{name:<18} median {statistics.median(values):6.2f} us/request CPU   "
              f"min {min(values):6.2f}")


if __name__ == "__main__":
    asyncio.run(main())
