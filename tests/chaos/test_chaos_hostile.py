"""Chaos: hostile requests against a real `carehook serve` (SQLite), from a fixed corpus and
generated with hypothesis: forged, replayed, stale, truncated, Content-Length lies, oversized
(declared and chunked), slow-loris, huge headers, wrong content types, deeply nested JSON, invalid
UTF-8, NUL / control characters / lone surrogates / huge integers in every field of every vendor's
payloads, header injection and smuggling, path tricks. 0 forged accepted, 0 5xx, RSS growth under
10 MB, and genuine deliveries sent meanwhile all acknowledged."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carehook.envelope import text_problem
from carehook.settings import load_settings
from carehook.sources import Source, build_sources
from carehook.vendors import builtin_vendors
from loopback import free_port

from .support_front import Proc, figures, scale, sign, start_serve

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

VENDORS = builtin_vendors()
SECRETS = {
    "abridge": "abridge-hostile-secret",
    "openevidence": "whsec_oe_hostile_secret",
    "nabla": "nabla-hostile-secret",
    "healthie": "whsec_hostile-key",
    "standard-webhooks": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}
SERVER = """[worker]
enabled = false
[server]
header_timeout_seconds = 1.0
body_timeout_seconds = 1.0
"""
_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


@dataclass
class Tally:
    """What the hostile sender saw."""

    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    forged_accepted: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    genuine: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def saw(self, what: str, statuses: list[int], forged: bool) -> None:
        """Record one request's answers (several when a lie made the server read two)."""
        with self.lock:
            self.sent += 1
            self.statuses.update(statuses or [0])
            if any(s >= 500 for s in statuses):
                self.server_errors.append(f"{what}: {statuses}")
            if forged and 200 in statuses:
                self.forged_accepted.append(what)


@dataclass
class Target:
    """The gateway under attack."""

    proc: Proc
    port: int
    sources: dict[str, Source]
    db: Path

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Target]:
    """`carehook serve --no-worker` on SQLite with one source per vendor, 1 s timeouts."""
    lines = ['data_dir = "."', 'log_level = "error"']
    for vendor, secret in SECRETS.items():
        lines += [f"[sources.{vendor}]", f'vendor = "{vendor}"', f'secrets = ["{secret}"]']
    config = tmp_path / "carehook.toml"
    config.write_text("\n".join(lines) + "\n" + SERVER)
    port = free_port()
    proc = asyncio.run(start_serve(tmp_path, config, port, "serve"))
    try:
        sources = build_sources(load_settings(config), VENDORS)
        yield Target(proc, port, sources, tmp_path / "carehook.db")
    finally:
        proc.stop()


def raw(target: Target, data: bytes, wait: float = 3.0, drip: float = 0.0) -> list[int]:
    """Send ``data`` on a fresh connection (a byte every ``drip`` s if set); the statuses."""
    with socket.create_connection(("127.0.0.1", target.port), timeout=wait) as sock:
        try:
            if drip:
                for i in range(len(data)):
                    sock.send(data[i:i + 1])
                    time.sleep(drip)
            else:
                sock.sendall(data)
        except OSError:
            pass
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, OSError):
            pass
    return [int(m) for m in _STATUS.findall(b"".join(chunks))]


def _head(path: str, headers: dict[str, str], length: int | None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: 127.0.0.1", "connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if length is not None:
        lines.append(f"content-length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _sample(vendor: str, seq: int) -> dict[str, Any]:
    v = VENDORS[vendor]
    types = v.event_types or ("lab_result.available",)
    return v.sample(types[seq % len(types)], datetime.now(UTC), seq)


def corpus(target: Target) -> list[tuple[str, bytes, bool, float]]:
    """The fixed corpus: (name, raw request, forged, drip seconds per byte)."""
    src = target.sources["abridge"]
    body = json.dumps(_sample("abridge", 1)).encode()
    good = sign(src, body)
    jt = {"content-type": "application/json"}
    deep = b"[" * 200_000 + b"]" * 200_000
    nested = b'{"event_id":"e","type":"encounter.x","data":' + b'{"a":' * 50_000 + b"1" + (
        b"}" * 50_001)
    items: list[tuple[str, bytes, bool, float]] = [
        ("no signature", _head("/webhooks/abridge", jt, len(body)) + body, True, 0),
        ("signature of another body", _head("/webhooks/abridge", good, len(body) + 1)
         + body + b" ", True, 0),
        ("truncated body", _head("/webhooks/abridge", good, len(body) - 5) + body[:-5], True, 0),
        ("stale timestamp", _head("/webhooks/abridge", sign(src, body, time.time() - 3600),
                                  len(body)) + body, True, 0),
        ("content-length longer than body", _head("/webhooks/abridge", good, len(body) + 50)
         + body, True, 0),
        ("content-length shorter than body", _head("/webhooks/abridge", good, 10) + body,
         True, 0),
        ("negative content-length", _head("/webhooks/abridge", good, None)[:-2]
         + b"content-length: -5\r\n\r\n" + body, True, 0),
        ("huge content-length", _head("/webhooks/abridge", good, None)[:-2]
         + b"content-length: " + b"9" * 5000 + b"\r\n\r\n" + body, True, 0),
        ("declared oversized", _head("/webhooks/abridge", good, 50_000_000) + body, True, 0),
        ("chunked oversized", _head("/webhooks/abridge", {**good, "transfer-encoding": "chunked"},
                                    None) + (b"100000\r\n" + b"a" * 0x100000 + b"\r\n") * 3
         + b"0\r\n\r\n", True, 0),
        ("smuggling: chunked and content-length", _head(
            "/webhooks/abridge", {**good, "transfer-encoding": "chunked"}, 5)
         + b"0\r\n\r\nPOST /webhooks/abridge HTTP/1.1\r\n\r\n", True, 0),
        ("huge header", _head("/webhooks/abridge", {**good, "x-big": "a" * 200_000}, len(body))
         + body, True, 0),
        ("unfinished huge header", b"POST /webhooks/abridge HTTP/1.1\r\nx-big: "
         + b"a" * 1_000_000, True, 0),
        ("16 MiB header", _head("/webhooks/abridge", {**good, "x-big": "a" * (16 << 20)},
                                len(body)) + body, True, 0),
        ("many headers", _head("/webhooks/abridge", {**good, **{f"x-{i}": "v" for i in
                                                                 range(5000)}}, len(body))
         + body, False, 0),  # genuinely signed, under the header cap: accepted
        ("header injection (obs-fold)", _head("/webhooks/abridge", good, len(body))[:-2]
         + b"x-a: b\r\n injected: yes\r\n\r\n" + body, True, 0),
        ("NUL in a header", _head("/webhooks/abridge", good, len(body))[:-2]
         + b"x-a: b\x00c\r\n\r\n" + body, True, 0),
        ("bare LF headers", b"POST /webhooks/abridge HTTP/1.1\nhost: x\ncontent-length: 2\n\n{}",
         True, 0),
        ("slow-loris", _head("/webhooks/abridge", good, len(body)), True, 0.05),
        ("slow body", _head("/webhooks/abridge", good, len(body)) + body[:20], True, 0.2),
        ("deeply nested array", _head("/webhooks/abridge", sign(src, deep), len(deep)) + deep,
         False, 0),
        ("deeply nested object", _head("/webhooks/abridge", sign(src, nested), len(nested))
         + nested, False, 0),
        ("HTTP/0.9", b"GET /webhooks/abridge\r\n\r\n", True, 0),
        ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, True, 0),
        ("absolute-form", b"POST http://evil.example/webhooks/abridge HTTP/1.1\r\n"
         + _head("/x", good, len(body)).split(b"\r\n", 1)[1] + body, False, 0),  # RFC 9112
    ]
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                  "application/jsonx", ""):
        headers = {**good, "content-type": ctype}
        items.append((f"content type {ctype!r}", _head("/webhooks/abridge", headers, len(body))
                      + body, True, 0))
    for bad in (b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80", b"\xf4\x90\x80\x80"):
        payload = body[:-2] + b', "x": "' + bad + b'"}'
        items.append((f"invalid UTF-8 {bad!r}", _head("/webhooks/abridge", sign(src, payload),
                                                      len(payload)) + payload, False, 0))
    for path in ("/webhooks/../metrics", "/webhooks/%2e%2e/admin", "/webhooks/abridge%00",
                 "/webhooks/abridge/", "//webhooks/abridge", "/webhooks/ABRIDGE",
                 "/webhooks/abridge;x=1", "/webhooks/%ff%fe", "/webhooks/" + "a" * 10_000,
                 "/webhooks/abridge/../abridge", "/webhooks/%0d%0aSet-Cookie:x",
                 "/webhooks/abridge#frag", "*"):
        items.append((f"path {path[:40]!r}", _head(path, jt, len(body)) + body, True, 0))
    return items


_NASTY = st.sampled_from(["\x00", "\ud800", "\udfff", "\x1b", "\x7f", "\x85", "\u2028", "\ufeff",
                          "é", "\U0001d11e", "\r\n", "%00", "'; DROP TABLE events;--", "../",
                          "${jndi:ldap://x}", "<script>", "\\u0000"])
HOSTILE = st.one_of(
    st.lists(st.one_of(_NASTY, st.text(max_size=4)), min_size=1, max_size=8).map("".join),
    st.text(min_size=257, max_size=400),
    st.integers(min_value=10**255, max_value=10**4000),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([None, True, False, 0, -1, 1.5, [], {}, "", " ", 1e308]),
    st.recursive(st.text(max_size=3), lambda c: st.lists(c, max_size=3)
                 | st.dictionaries(st.text(max_size=3), c, max_size=3), max_leaves=6),
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value (for mutating one)."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _paths(v, (*prefix, i))
    return found


def _put(payload: Any, path: tuple[Any, ...], value: Any, as_key: bool) -> None:
    *parents, last = path
    for step in parents:
        payload = payload[step]
    if as_key and isinstance(payload, dict) and isinstance(value, str):
        payload[value] = payload.pop(last)
    else:
        payload[last] = value


def _encode(payload: Any, raw_utf8: bool) -> bytes:
    if raw_utf8:  # lone surrogates as (invalid) UTF-8 bytes, not as \u escapes
        return json.dumps(payload, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return json.dumps(payload).encode()


def generated(target: Target, tally: Tally, client: httpx.Client, examples: int) -> None:
    """``examples`` signed (or forged) payloads of every vendor with one field made hostile."""

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(vendor=st.sampled_from(sorted(SECRETS)), seq=st.integers(0, 50), data=st.data(),
           value=HOSTILE, as_key=st.booleans(), raw_utf8=st.booleans(),
           forge=st.sampled_from(["none", "body", "headers"]))  # fmt: skip
    def one(vendor: str, seq: int, data: st.DataObject, value: Any, as_key: bool,
            raw_utf8: bool, forge: str) -> None:  # fmt: skip
        payload = _sample(vendor, seq)
        path = data.draw(st.sampled_from(_paths(payload)))
        _put(payload, path, value, as_key)
        body = _encode(payload, raw_utf8)
        headers = sign(target.sources[vendor], body)
        if forge == "body":
            body += b" "
        elif forge == "headers":
            headers = {"content-type": "application/json"}
        resp = client.post(f"{target.url}/webhooks/{vendor}", content=body, headers=headers)
        tally.saw(f"{vendor} {path} <- {type(value).__name__}", [resp.status_code],
                  forged=forge != "none")  # fmt: skip

    one()


def swarm(target: Target, stop: threading.Event, reaped: list[int], size: int = 50) -> None:
    """``size`` slow-loris connections (a header byte every 0.2 s), each reopened when the
    server closes it, until ``stop``; ``reaped`` counts the closes."""
    request = _head("/webhooks/abridge", {"x-pad": "p" * 4000}, 2)
    socks: list[tuple[socket.socket, int]] = []
    while not stop.is_set():
        while len(socks) < size:
            socks.append((socket.create_connection(("127.0.0.1", target.port)), 0))
        alive = []
        for sock, sent in socks:
            try:
                sock.send(request[sent:sent + 1])
                alive.append((sock, sent + 1))
            except OSError:
                reaped[0] += 1
                sock.close()
        socks = alive
        time.sleep(0.2)
    for sock, _ in socks:
        sock.close()


def genuine(target: Target, tally: Tally, count: int) -> None:
    """Valid deliveries sent while the attack runs (each must be acknowledged)."""
    src = target.sources["abridge"]
    with httpx.Client(timeout=15) as client:
        for n in range(count):
            payload = _sample("abridge", 1000 + n)
            payload["event_id"] = f"evt_genuine_{n}"
            body = json.dumps(payload).encode()
            resp = client.post(f"{target.url}/webhooks/abridge", content=body,
                               headers=sign(src, body))  # fmt: skip
            tally.saw("genuine", [resp.status_code], forged=False)
            if resp.status_code == 200:
                with tally.lock:
                    tally.genuine.add(payload["event_id"])
            time.sleep(0.02)


def test_hostile_requests(target: Target) -> None:
    """Thousands of hostile requests: none forged accepted, no 5xx, memory flat, genuine
    deliveries all acknowledged meanwhile."""
    total = scale(1000, 10_000)
    items = corpus(target)
    tally = Tally()
    with httpx.Client(timeout=15) as client:
        generated(target, tally, client, 100)  # warm-up: imports, caches, pools
        baseline = target.proc.rss_kib()
        good = threading.Thread(target=genuine, args=(target, tally, scale(50, 300)))
        stop, reaped = threading.Event(), [0]
        loris = threading.Thread(target=swarm, args=(target, stop, reaped))
        loris.start()
        good.start()
        corpus_share = total * 2 // 5
        for i in range(corpus_share):
            name, data, forged, drip = items[i % len(items)]
            if drip and i >= len(items):
                continue  # the slow ones once each in the short run (they take seconds)
            tally.saw(name, raw(target, data, drip=drip), forged)
        generated(target, tally, client, total - corpus_share - 100)
        good.join()
        stop.set()
        loris.join()
        final = target.proc.rss_kib()
        health = client.get(f"{target.url}/healthz").status_code
    growth_mb = (final - baseline) / 1024
    with sqlite3.connect(f"file:{target.db}?mode=ro", uri=True) as conn:
        stored = conn.execute("SELECT event_id, type, subject FROM events").fetchall()
    unstorable = [row for row in stored if any(text_problem(v, 320) for v in row)]
    figures("hostile", sent=tally.sent, acknowledged=tally.statuses[200], stored=len(stored),
            unstorable_stored=len(unstorable),
            genuine_acknowledged=len(tally.genuine), forged_accepted=len(tally.forged_accepted),
            slow_loris_reaped=reaped[0],
            **{"5xx": len(tally.server_errors)}, rss_growth_mb=f"{growth_mb:.1f}",
            statuses=dict(sorted(tally.statuses.items())))  # fmt: skip
    assert unstorable == []
    assert tally.forged_accepted == []
    assert tally.server_errors == []
    assert health == 200
    assert len(tally.genuine) == scale(50, 300)
    assert growth_mb < 10
    assert reaped[0] >= 50, "the slow-loris swarm was never timed out"
