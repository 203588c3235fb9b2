"""A REST webhook registrar: ``POST``/``GET``/``DELETE`` on one collection URL (Abridge,
OpenEvidence), with the shapes both briefs give::

    POST   {collection}        {"url", "events": [...], "secret"}  -> {"id", "url", "events", ...}
    GET    {collection}        -> [webhook, ...] or {"data" | "webhooks" | "items": [webhook, ...]}
    DELETE {collection}/{id}   -> 2xx (any body)

A webhook object is read loosely: ``id`` (or ``webhook_id``), ``url``, ``events``, ``status``
or ``enabled``. Errors as every connector maps them (messages: operation and status only; the
secret sent is never part of one)::

    timeout, connection error, 408/429/5xx -> RetryableError
    other status, a body that is not JSON or has no id -> PermanentError
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from carehook.connectors.abridge import parse_json, request_failure, status_failure
from carehook.connectors.webhooks import RegisteredWebhook
from carehook.errors import PermanentError


def _webhook(body: Any, what: str) -> RegisteredWebhook:
    if not isinstance(body, dict):
        raise PermanentError(f"{what}: the answer is not a webhook object")
    webhook_id = body.get("id", body.get("webhook_id"))
    if webhook_id in (None, ""):
        raise PermanentError(f"{what}: the answer has no webhook id")
    events = body.get("events")
    status = body.get("status")
    enabled = body.get("enabled")
    if enabled is None and isinstance(status, str):
        enabled = status.lower() in ("active", "enabled")
    return RegisteredWebhook(
        str(webhook_id), str(body.get("url") or ""),
        tuple(str(e) for e in events) if isinstance(events, list) else (),
        enabled=enabled if isinstance(enabled, bool) else None,
    )  # fmt: skip


def _items(body: Any, what: str) -> list[Any]:
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        for key in ("data", "webhooks", "items"):
            if isinstance(body.get(key), list):
                return list(body[key])
    raise PermanentError(f"{what}: the answer is not a list of webhooks")


class RestWebhooks:
    """:class:`~carehook.connectors.webhooks.WebhookRegistrar` over one REST collection URL;
    the receiver (carehook) chooses each webhook's secret, and the vendor cannot rotate it."""

    vendor_secret = False
    can_rotate = False

    def __init__(self, http: httpx.AsyncClient, collection_url: str, headers: dict[str, str],
                 vendor: str) -> None:  # fmt: skip
        self._http = http
        self._url = collection_url.rstrip("/")
        self._headers = {**headers, "Accept": "application/json"}
        self.vendor = vendor

    def __repr__(self) -> str:
        return f"RestWebhooks({self._url!r})"

    async def create(self, url: str, events: tuple[str, ...], secret: str | None
                     ) -> RegisteredWebhook:  # fmt: skip
        """POST the registration; the answer's webhook (the vendor's id)."""
        what = f"{self.vendor} create webhook"
        if not secret:
            raise PermanentError(f"{what}: the source has no secret to give {self.vendor}")
        body = {"url": url, "events": list(events), "secret": secret}
        response = await self._send("POST", self._url, what, json=body)
        return _webhook(parse_json(what, response), what)

    async def list(self) -> list[RegisteredWebhook]:
        """GET the collection."""
        what = f"{self.vendor} list webhooks"
        body = parse_json(what, await self._send("GET", self._url, what))
        return [_webhook(item, what) for item in _items(body, what)]

    async def delete(self, webhook_id: str) -> None:
        """DELETE one webhook."""
        what = f"{self.vendor} delete webhook {webhook_id}"
        await self._send("DELETE", f"{self._url}/{quote(webhook_id, safe='')}", what)

    async def rotate(self, webhook_id: str) -> RegisteredWebhook:
        """Not offered by these vendors: add a secret, re-register, retire the old one."""
        raise PermanentError(f"{self.vendor} cannot rotate webhook {webhook_id}'s secret itself")

    async def _send(self, method: str, url: str, what: str, **kw: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, url, headers=self._headers, **kw)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise request_failure(what, exc) from None
        if not response.is_success:
            raise status_failure(what, response)
        return response
