"""A gateway with the admin surface on, a scriptable downstream receiver, and seeded events.

The gateway runs for real (uvicorn on 127.0.0.1, SQLite or PostgreSQL, the in-process worker).
Seeding sends genuine signed deliveries: an Abridge session whose forward to the ``portal``
receiver is refused (400, so the event goes dead), a low-quality Abridge alert (a review item),
a Healthie event and a forged delivery both carrying PHI canaries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from carehook.web.admin.auth import token_hash
from loopback import serve_app

from .conftest import Gateway, start_gateway, write_config
from .test_ingress import sample, signed

CANARY_NAME = "CANARY-Admin-Patient-51c9"
CANARY_EMAIL = "canary.admin.51c9@example.org"
CANARIES = (CANARY_NAME, CANARY_EMAIL)
PORTAL_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

#: test tokens by name: (token, scopes)
TOKENS: dict[str, tuple[str, list[str]]] = {
    "root": ("chk_test_root_token_0000000000000000000000", ["read", "payload", "replay", "admin"]),
    "reader": ("chk_test_reader_token_000000000000000000000", ["read"]),
    "viewer": ("chk_test_viewer_token_000000000000000000000", ["read", "payload"]),
    "operator": ("chk_test_operator_token_0000000000000000000", ["read", "replay"]),
    "auditor": ("chk_test_auditor_token_00000000000000000000", ["admin"]),
}


def auth(name: str) -> dict[str, str]:
    """The Authorization header of a test token."""
    return {"authorization": f"Bearer {TOKENS[name][0]}"}


def admin_toml(receiver_url: str) -> str:
    """Fast worker, the ``portal`` destination and route, and every test token."""
    parts = ["[worker]", "poll_seconds = 0.1", "lease_seconds = 5", "",
             "[destinations.portal]", 'type = "webhook"', f'url = "{receiver_url}/hook"',
             f'secret = "{PORTAL_SECRET}"', "allow_private = true", "timeout_seconds = 5", "",
             "[[routes]]", 'source = "abridge"', 'events = "encounter.session.completed"',
             'to = "portal"', ""]  # fmt: skip
    for name, (token, scopes) in TOKENS.items():
        quoted = ", ".join(f'"{s}"' for s in scopes)
        parts += ["[[admin.tokens]]", f'name = "{name}"', f'hash = "{token_hash(token)}"',
                  f"scopes = [{quoted}]", ""]  # fmt: skip
    return "\n".join(parts)


@dataclass
class Receiver:
    """The downstream ``portal``: answers ``status`` to every forward, counts them."""

    status: int = 400
    seen: list[bytes] = field(default_factory=list)

    async def hook(self, request: Request) -> JSONResponse:
        """Record the forward, answer the current status."""
        self.seen.append(await request.body())
        return JSONResponse({"status": self.status}, self.status)


@dataclass
class AdminEnv:
    """A running gateway with the admin surface, and its receiver."""

    gw: Gateway
    receiver: Receiver

    @property
    def api(self) -> str:
        """The admin API's base URL."""
        return f"{self.gw.url}/admin/api"

    def get(self, path: str, token: str | None = "root", **params: Any) -> httpx.Response:
        """GET an admin API path with a test token."""
        headers = auth(token) if token else {}
        return httpx.get(f"{self.api}{path}", headers=headers, params=params, timeout=30)

    def post(self, path: str, token: str | None = "root", json: Any = None) -> httpx.Response:
        """POST to an admin API path with a test token."""
        headers = auth(token) if token else {}
        return httpx.post(f"{self.api}{path}", headers=headers, json=json, timeout=30)


@contextmanager
def admin_env(tmp_path: Path, storage_url: str | None) -> Iterator[AdminEnv]:
    """Start the receiver and a gateway with the admin surface on."""
    receiver = Receiver()
    app = Starlette(routes=[Route("/hook", receiver.hook, methods=["POST"])])
    with serve_app(app) as receiver_url:
        config = write_config(tmp_path / "carehook.toml", storage_url, admin_toml(receiver_url))
        gen = start_gateway(config)
        gw = next(gen)
        try:
            yield AdminEnv(gw, receiver)
        finally:
            gen.close()


def wait_for(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@dataclass
class Seeded:
    """What :func:`seed` created."""

    dead_pk: int
    review_id: int
    canary_pk: int


def seed(env: AdminEnv) -> Seeded:
    """A dead event, an open review item, a canary-carrying event and a forged request."""
    gw = env.gw
    session = sample("abridge", "encounter.session.completed")
    assert gw.post("abridge", *signed(gw, "abridge", session)).status_code == 200
    alert = sample("abridge", "quality.alert", seq=2)
    alert["data"]["quality_score"] = 0.05
    assert gw.post("abridge", *signed(gw, "abridge", alert)).status_code == 200
    joined = sample("healthie", "appointment.participant_joined", seq=3)
    joined.update(user_name=CANARY_NAME, user_email=CANARY_EMAIL)
    body, headers = signed(gw, "healthie", joined)
    assert gw.post("healthie", body, headers).status_code == 200
    forged = body.replace(b"joined", b"JOINED")
    assert gw.post("healthie", forged, headers).status_code == 401
    dead = wait_for(lambda: env.get("/dead-letters").json()["items"])
    review = wait_for(lambda: env.get("/reviews").json()["items"])
    canary = env.get("/events", source="healthie").json()["items"][0]
    return Seeded(dead[0]["event"]["id"], review[0]["id"], canary["id"])
