"""The admin surface on a listener of its own (``[admin] host/port``), beside the gateway.

Run as one of the gateway's background tasks: it starts with the gateway (the store is open by
then), stops when the gateway stops, and leaves signal handling to the gateway's server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from carehook.web.admin import standalone


class _Server(uvicorn.Server):
    """A uvicorn server that installs no signal handlers (the gateway's server owns them)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave the process's signal handlers alone."""
        yield


def admin_listener(
    admin: ASGIApp, host: str, port: int
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """A background task serving ``admin`` under ``/admin`` on ``host:port`` until ``stop``."""

    async def run(stop: asyncio.Event) -> None:
        config = uvicorn.Config(standalone(admin), host=host, port=port, log_level="warning",
                                access_log=False, server_header=False, proxy_headers=False,
                                lifespan="off")  # fmt: skip
        server = _Server(config)
        serving = asyncio.create_task(server.serve())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        stopping.cancel()
        await serving

    return run
