"""A fake REST webhook collection (Abridge's ``/webhooks``, OpenEvidence's ``/v1/webhooks``).

The shapes :mod:`carehook.connectors.rest_webhooks` documents: ``POST`` ``{url, events,
secret}`` -> 201 with the webhook (``id``, ``url``, ``events``, ``status``, ``created_at``; never
the secret), ``GET`` -> ``{"data": [...]}``, ``DELETE /{id}`` -> 204 (404 if unknown). A body
without an http(s) ``url``, a non-empty list of ``events`` or a ``secret`` of 16+ characters is
a 422. The secrets received are kept (:attr:`FakeWebhookCollection.secrets`), so a test can sign
a delivery as the vendor would. Authentication is the owner's (``check`` returns a refusal).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Check = Callable[[Request], Response | None]


class FakeWebhookCollection:
    """Webhooks by id (``wh_<n>``), served under one collection path."""

    def __init__(self, prefix: str, check: Check) -> None:
        self.prefix = prefix
        self.webhooks: dict[str, dict[str, Any]] = {}
        #: the signing secret of each webhook, by id
        self.secrets: dict[str, str] = {}
        self._check = check
        self._next = 1

    def routes(self, path: str) -> list[Route]:
        """The collection's routes at ``path`` (e.g. ``/v1/webhooks``)."""
        return [Route(path, self._collection, methods=["GET", "POST"]),
                Route(path + "/{webhook_id}", self._one, methods=["DELETE"])]  # fmt: skip

    async def _collection(self, request: Request) -> Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        if request.method == "GET":
            return JSONResponse({"data": list(self.webhooks.values())})
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "invalid JSON"}, 400)
        problem = _problem(body)
        if problem:
            return JSONResponse({"error": "invalid_request", "detail": problem}, 422)
        webhook_id = f"{self.prefix}_{self._next}"
        self._next += 1
        self.webhooks[webhook_id] = {
            "id": webhook_id, "url": body["url"], "events": list(body["events"]),
            "status": "active", "created_at": datetime.now(UTC).isoformat(),
        }  # fmt: skip
        self.secrets[webhook_id] = body["secret"]
        return JSONResponse(self.webhooks[webhook_id], 201)

    async def _one(self, request: Request) -> Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        webhook_id = request.path_params["webhook_id"]
        if self.webhooks.pop(webhook_id, None) is None:
            return JSONResponse({"error": "not_found"}, 404)
        self.secrets.pop(webhook_id, None)
        return Response(status_code=204)


def _problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body must be an object"
    url, events, secret = body.get("url"), body.get("events"), body.get("secret")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        return "url must be an http(s) URL"
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        return "events must be a non-empty list of event types"
    if not isinstance(secret, str) or len(secret) < 16:
        return "secret must be a string of at least 16 characters"
    return None
