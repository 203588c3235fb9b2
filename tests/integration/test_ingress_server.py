"""Issue 13 item 4 through real sockets: header cap (431), header and body timeouts, connection
cap, and valid deliveries still served during a slow-loris or huge-header attack."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import NO_WORKER, Gateway, start_gateway, write_config
from .test_ingress import _requests, sample, signed

LIMITS = """[server]
max_header_bytes = 8192
header_timeout_seconds = 1.0
body_timeout_seconds = 1.0
max_connections = 20
"""


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[Gateway]:
    """A gateway (SQLite) with small server bounds."""
    yield from start_gateway(write_config(tmp_path / "carehook.toml", None, NO_WORKER + LIMITS))


def _connect(gw: Gateway) -> socket.socket:
    host, port = gw.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def _read_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes (or ``timeout``)."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def _deliver(gw: Gateway, seq: int) -> int:
    body, headers = signed(gw, "abridge", sample("abridge", "encounter.session.failed", seq))
    return gw.post("abridge", body, headers).status_code


def _head(extra: bytes = b"", length: int = 2) -> bytes:
    return (b"POST /webhooks/abridge HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(length).encode() + b"\r\n" + extra)  # fmt: skip


def test_header_block_over_the_cap_is_431(guarded: Gateway) -> None:
    """A complete block over the cap, and an unfinished one, are answered 431 and closed."""
    for request in (_head(b"x-big: " + b"a" * 20000 + b"\r\n\r\n{}"),
                    _head(b"x-big: " + b"a" * 20000)):  # never finished
        with _connect(guarded) as sock:
            sock.sendall(request)
            answer = _read_all(sock)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    with _connect(guarded) as sock:  # just under the cap: served (and refused for its signature)
        sock.sendall(_head(b"x-big: " + b"a" * 7000 + b"\r\nconnection: close\r\n\r\n{}"))
        assert _read_all(sock).startswith(b"HTTP/1.1 401 ")
    metrics = httpx.get(f"{guarded.url}/metrics").text
    assert 'carehook_connections_refused_total{reason="headers_too_large"} 2.0' in metrics


def test_slow_and_idle_connections_time_out_while_deliveries_are_served(guarded: Gateway) -> None:
    """A slow-loris (1 byte per 0.1 s) gets 408 after the header timeout, an idle connection is
    closed; meanwhile signed deliveries are answered 200."""
    idle = _connect(guarded)
    slow = _connect(guarded)
    started = time.monotonic()
    request = _head(b"x-pad: " + b"p" * 100)
    statuses = []
    sent = 0
    for i, byte in enumerate(request):
        try:
            slow.send(bytes([byte]))
        except OSError:
            break
        sent += 1
        if i % 5 == 0:
            statuses.append(_deliver(guarded, i))
        time.sleep(0.1)
        if time.monotonic() - started > 8:
            break
    assert _read_all(slow).startswith(b"HTTP/1.1 408 ")
    assert sent < len(request) - 1, "the slow request was never cut off"
    assert _read_all(idle) == b""  # closed without an answer
    idle.close()
    slow.close()
    assert statuses
    assert set(statuses) == {200}


def test_body_that_does_not_arrive_is_408_with_a_row(guarded: Gateway) -> None:
    """Headers then half a body: 408 after the body timeout, and a 408 row with its cause."""
    with _connect(guarded) as sock:
        sock.sendall(_head(b"\r\n", length=100) + b'{"half":')
        started = time.monotonic()
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
    assert 0.8 < time.monotonic() - started < 10  # waited for the timeout, then not forever
    time.sleep(0.2)
    rows = asyncio.run(_requests(guarded))
    assert [(r.status, r.cause) for r in rows] == [(408, "body_timeout")]


def test_connection_cap_sheds_waiting_connections_not_deliveries(guarded: Gateway) -> None:
    """Beyond max_connections the oldest connections still sending headers are closed; deliveries
    keep being served."""
    holders = []
    for _ in range(40):
        sock = _connect(guarded)
        sock.sendall(b"POST /webhooks/abridge HTTP/1.1\r\n")
        holders.append(sock)
    time.sleep(0.2)
    assert [_deliver(guarded, i) for i in range(5)] == [200] * 5
    closed = sum(_read_all(s, 0.2) == b"" for s in holders[:20])
    for sock in holders:
        sock.close()
    assert closed >= 15
    metrics = httpx.get(f"{guarded.url}/metrics").text
    line = next(x for x in metrics.splitlines()
                if x.startswith('carehook_connections_refused_total{reason="connection_cap"}'))
    assert float(line.rsplit(" ", 1)[1]) >= 20


def test_keep_alive_deliveries_pass_the_guard(guarded: Gateway) -> None:
    """Many deliveries on one keep-alive connection, over several header timeouts, all land."""
    with httpx.Client(timeout=10) as client:
        for i in range(30):
            body, headers = signed(guarded, "abridge", sample("abridge",
                                                             "encounter.session.failed", i))
            resp = client.post(f"{guarded.url}/webhooks/abridge", content=body, headers=headers)
            assert resp.status_code == 200
            if i % 10 == 9:
                time.sleep(0.6)
