"""WebhookDestination against a real receiver on 127.0.0.1 that verifies with ``standardwebhooks``.

The receiver is a small Starlette app: it verifies every request with the reference package's
``Webhook(secret).verify(body, headers)`` (a request that fails is answered 401 and recorded as
unverified), records it, and answers from a script of responses (200 when the script is empty).
The client is the real :func:`outbound_client`, with ``allow_private=True`` because the receiver
is on loopback; the SSRF tests use ``allow_private=False``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import anyio
import httpx
import pytest
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from carehook.connectors.forward import WebhookDestination, signing_secret
from carehook.connectors.outbound import OutboundRefused, outbound_client
from carehook.errors import ConfigError, PermanentError, RetryableError
from carehook.workflows.ports import Delivery
from loopback import free_port, serve_app

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PASSPHRASE = "correct horse battery staple"
CANARY = "PHI-CANARY-Jane-Doe-1970-01-01"
BODY = {"type": "encounter.session.completed", "event_id": "evt_1", "subject": "abridge:session:s1"}


@dataclass
class Seen:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool


@dataclass
class Receiver:
    """A Standard Webhooks receiver: verifies, records, answers from ``script``."""

    key: str | bytes
    script: list[Response] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    async def hook(self, request: Request) -> Response:
        """Verify and record the request, then answer the next scripted response."""
        body = await request.body()
        headers = dict(request.headers)
        try:
            Webhook(self.key).verify(body, headers)
            verified = True
        except Exception:
            verified = False
        self.seen.append(Seen(request.url.path, headers, body, verified))
        if not verified:
            return Response(status_code=401)
        return self.script.pop(0) if self.script else JSONResponse({"ok": True})

    async def slow(self, request: Request) -> Response:
        """Answer only once the test releases it (a receiver that hangs)."""
        self.seen.append(Seen(request.url.path, dict(request.headers), b"", False))
        await anyio.to_thread.run_sync(self.release.wait, abandon_on_cancel=True)
        return Response(status_code=200)

    def app(self) -> Starlette:
        """The ASGI app: /hook verifies; /slow hangs; /elsewhere is a redirect target."""
        return Starlette(
            routes=[
                Route("/hook", self.hook, methods=["POST"]),
                Route("/slow", self.slow, methods=["POST"]),
                Route("/elsewhere", self.hook, methods=["POST", "GET"]),
            ]
        )


@pytest.fixture
def receiver() -> Receiver:
    """A receiver keyed with the whsec_ secret."""
    return Receiver(SECRET)


@pytest.fixture
def base_url(receiver: Receiver) -> Iterator[str]:
    """The receiver served on loopback; hung requests are released before it stops."""
    with serve_app(receiver.app()) as url:
        try:
            yield url
        finally:
            receiver.release.set()


Make = Callable[..., WebhookDestination]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    """Build destinations named team-api on real outbound clients that may reach loopback."""
    clients: list[httpx.AsyncClient] = []

    def build(
        url: str, secret: str = SECRET, *, timeout: float = 5.0, **kw: Any
    ) -> WebhookDestination:
        clients.append(outbound_client(allow_private=True, timeout=timeout))
        return WebhookDestination("team-api", clients[-1], url, secret, **kw)

    yield build
    for client in clients:
        await client.aclose()


async def test_delivers_signed_compact_json(receiver: Receiver, base_url: str, make: Make) -> None:
    """A 200 is a Delivery; the receiver verified the signature and got the body as compact JSON."""
    dest = make(f"{base_url}/hook")
    delivery = await dest.deliver("msg_evt_1", BODY)
    assert delivery == Delivery(status=200, message_id="msg_evt_1")
    [seen] = receiver.seen
    assert seen.verified
    assert seen.headers["webhook-id"] == "msg_evt_1"
    assert seen.headers["content-type"] == "application/json"
    assert seen.body == json.dumps(BODY, separators=(",", ":")).encode()


async def test_passphrase_secret_is_its_utf8_bytes(
    receiver: Receiver, base_url: str, make: Make
) -> None:
    """A non-whsec secret signs with its UTF-8 bytes: Webhook(bytes) and its whsec_ form verify."""
    receiver.key = PASSPHRASE.encode()
    await make(f"{base_url}/hook", PASSPHRASE).deliver("msg_2", BODY)
    [seen] = receiver.seen
    assert seen.verified
    Webhook(signing_secret(PASSPHRASE)).verify(seen.body, seen.headers)


async def test_given_timestamp_is_signed(receiver: Receiver, base_url: str, make: Make) -> None:
    """The caller's timestamp is the webhook-timestamp."""
    moment = float(int(time.time()) - 10)
    await make(f"{base_url}/hook").deliver("msg_3", BODY, timestamp=moment)
    assert receiver.seen[0].headers["webhook-timestamp"] == str(int(moment))
    assert receiver.seen[0].verified


async def test_retry_keeps_the_message_id(receiver: Receiver, base_url: str, make: Make) -> None:
    """A 500 then a 200: both attempts carry the same webhook-id, each freshly signed."""
    receiver.script.append(Response(status_code=500))
    dest = make(f"{base_url}/hook")
    with pytest.raises(RetryableError):
        await dest.deliver("msg_retry", BODY)
    assert await dest.deliver("msg_retry", BODY) == Delivery(200, "msg_retry")
    assert [s.headers["webhook-id"] for s in receiver.seen] == ["msg_retry", "msg_retry"]
    assert all(s.verified for s in receiver.seen)


async def test_503_retry_after_seconds(receiver: Receiver, base_url: str, make: Make) -> None:
    """503 with Retry-After: 7 is a RetryableError with retry_after 7 naming name, id, status."""
    receiver.script.append(Response(status_code=503, headers={"retry-after": "7"}))
    with pytest.raises(RetryableError) as caught:
        await make(f"{base_url}/hook").deliver("msg_4", BODY)
    assert caught.value.retry_after == 7.0
    assert str(caught.value) == "forward team-api: message msg_4: status 503"


async def test_429_retry_after_http_date(receiver: Receiver, base_url: str, make: Make) -> None:
    """429 with an HTTP-date Retry-After gives the seconds until that date."""
    now = float(int(time.time()))
    when = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    receiver.script.append(Response(status_code=429, headers={"retry-after": when}))
    with pytest.raises(RetryableError) as caught:
        await make(f"{base_url}/hook", clock=lambda: now).deliver("msg_5", BODY)
    assert caught.value.retry_after == 30.0


async def test_400_is_permanent_and_never_echoes_the_response(
    receiver: Receiver, base_url: str, make: Make
) -> None:
    """A 400 whose body echoes the payload is a PermanentError that quotes none of it."""
    echo = JSONResponse({"error": "bad patient", "echo": CANARY}, status_code=400)
    receiver.script.append(echo)
    with pytest.raises(PermanentError) as caught:
        await make(f"{base_url}/hook").deliver("msg_6", {**BODY, "name": CANARY})
    assert not isinstance(caught.value, RetryableError)
    assert str(caught.value) == "forward team-api: message msg_6: status 400"
    assert CANARY not in repr(caught.value.args)


async def test_410_gone_is_permanent(receiver: Receiver, base_url: str, make: Make) -> None:
    """410 Gone is permanent: retrying a removed endpoint cannot help."""
    receiver.script.append(Response(status_code=410))
    with pytest.raises(PermanentError, match="status 410"):
        await make(f"{base_url}/hook").deliver("msg_7", BODY)


async def test_redirect_is_not_followed(receiver: Receiver, base_url: str, make: Make) -> None:
    """A 302 is a PermanentError and its target is never requested."""
    receiver.script.append(Response(status_code=302, headers={"location": "/elsewhere"}))
    with pytest.raises(PermanentError, match="status 302"):
        await make(f"{base_url}/hook").deliver("msg_8", BODY)
    assert [s.path for s in receiver.seen] == ["/hook"]


async def test_timeout_is_retryable(receiver: Receiver, base_url: str, make: Make) -> None:
    """A receiver that does not answer within the timeout gives a RetryableError."""
    with pytest.raises(RetryableError, match="ReadTimeout"):
        await make(f"{base_url}/slow", timeout=0.2).deliver("msg_9", BODY)
    assert [s.path for s in receiver.seen] == ["/slow"]


async def test_connection_refused_is_retryable(make: Make) -> None:
    """Nothing listening is a RetryableError naming the error class only."""
    dest = make(f"http://127.0.0.1:{free_port()}/hook")
    with pytest.raises(RetryableError, match="ConnectError"):
        await dest.deliver("msg_10", BODY)


async def test_private_address_refused_before_any_request(
    receiver: Receiver, base_url: str
) -> None:
    """allow_private=False refuses 127.0.0.1 with OutboundRefused; the receiver sees nothing."""
    http = outbound_client(allow_private=False)
    dest = WebhookDestination("team-api", http, f"{base_url}/hook", SECRET)
    with pytest.raises(OutboundRefused, match=r"'127\.0\.0\.1'"):
        await dest.deliver("msg_11", BODY)
    assert receiver.seen == []
    allowed = WebhookDestination(
        "team-api", outbound_client(allow_private=True), f"{base_url}/hook", SECRET
    )
    assert await allowed.deliver("msg_11", BODY) == Delivery(200, "msg_11")


async def test_unserialisable_body_is_permanent(
    receiver: Receiver, base_url: str, make: Make
) -> None:
    """A body that is not JSON is refused before sending."""
    with pytest.raises(PermanentError, match="not JSON"):
        await make(f"{base_url}/hook").deliver("msg_12", {"at": {1, 2}})
    assert receiver.seen == []


async def test_bad_message_id_is_permanent(receiver: Receiver, base_url: str, make: Make) -> None:
    """A message id with spaces or control characters cannot be a header: refused."""
    with pytest.raises(PermanentError, match="message id"):
        await make(f"{base_url}/hook").deliver("msg 13\n", BODY)
    assert receiver.seen == []


def test_malformed_whsec_secret_is_a_config_error(make: Make) -> None:
    """A whsec_ secret that is not base64: ConfigError naming the destination, not the secret."""
    with pytest.raises(ConfigError) as caught:
        make("http://127.0.0.1:9/hook", "whsec_not*base64!")
    assert "team-api" in str(caught.value)
    assert "not*base64" not in str(caught.value)
