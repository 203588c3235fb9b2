"""A fake OpenEvidence API: the webhook registration of seed 003, ``/v1/webhooks``.

``Authorization: Bearer <token>`` is required (else 401). The collection's shapes are
:mod:`carehook.sandbox.rest_webhooks`'. Nothing else of OpenEvidence's API is faked: carehook
only receives its events.
"""

from __future__ import annotations

import hmac

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from carehook.sandbox.rest_webhooks import FakeWebhookCollection


class FakeOpenEvidenceApi:
    """The fake OpenEvidence API (an ASGI app) and its webhook collection."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.webhooks = FakeWebhookCollection("oewh", self._refuse)
        self.app = Starlette(routes=self.webhooks.routes("/v1/webhooks"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection."""
        await self.app(scope, receive, send)

    def _refuse(self, request: Request) -> Response | None:
        auth = request.headers.get("authorization", "")
        if not hmac.compare_digest(auth.encode(), f"Bearer {self.token}".encode()):
            return JSONResponse({"error": "unauthorized"}, 401,
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        return None
