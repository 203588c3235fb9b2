"""The fake Healthie's webhook table: ``createWebhook``, ``webhooks``, ``deleteWebhook``,
``expireWebhookSignature`` (Healthie's payload shapes, see
:mod:`carehook.connectors.healthie_graphql`).

A refused input answers the mutation with ``webhook: null`` and ``messages: [{field, message}]``,
as Healthie's mutations do. ``webhooks(first, after)`` pages by the webhook id (the cursor).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from carehook.sandbox._healthie_graphql import Operation

_EVENT = re.compile(r"^[a-z_]+\.[a-z_]+$")


@dataclass(slots=True)
class Webhook:
    """One registered webhook; ``secrets`` is every signature secret it had, newest last."""

    id: str
    url: str
    is_enabled: bool
    should_retry: bool
    events: list[str]
    secrets: list[str] = field(default_factory=list, repr=False)

    def node(self, with_secret: bool = False) -> dict[str, Any]:
        """As Healthie's ``Webhook`` object."""
        out: dict[str, Any] = {
            "id": self.id, "url": self.url, "is_enabled": self.is_enabled,
            "should_retry": self.should_retry,
            "webhook_events": [{"event_type": e} for e in self.events],
        }  # fmt: skip
        if with_secret:
            out["signature_secret"] = self.secrets[-1]
        return out


def _messages(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"webhook": None, "messages": [{"field": f, "message": m} for f, m in pairs]}


class WebhookTable:
    """The account's webhooks, by id (ids count up from 9001)."""

    def __init__(self) -> None:
        self.by_id: dict[str, Webhook] = {}
        #: the most nodes one ``webhooks`` page holds, whatever ``first`` asks
        self.page_limit = 100
        self._next = 9001

    def secret(self, webhook_id: str) -> str:
        """The current signature secret of a webhook (to sign a test delivery with)."""
        return self.by_id[webhook_id].secrets[-1]

    def answer(self, op: Operation) -> Any:
        """``data.<root>`` for a webhook operation."""
        if op.root == "webhooks":
            return self._list(op.args)
        given = op.args.get("input")
        given = given if isinstance(given, dict) else {}
        if op.root == "createWebhook":
            return self._create(given)
        hook = self.by_id.get(str(given.get("id")))
        if hook is None:
            return _messages(("id", "Webhook not found"))
        if op.root == "deleteWebhook":
            del self.by_id[hook.id]
            return {"webhook": {"id": hook.id}, "messages": []}
        hook.secrets.append("whsec_" + secrets.token_urlsafe(24))  # expireWebhookSignature
        return {"webhook": hook.node(with_secret=True), "messages": []}

    def _create(self, given: dict[str, Any]) -> dict[str, Any]:
        url = given.get("url")
        events = [e.get("event_type") for e in given.get("webhook_events") or ()
                  if isinstance(e, dict)]  # fmt: skip
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            return _messages(("url", "is not a valid URL"))
        if not events or not all(isinstance(e, str) and _EVENT.match(e) for e in events):
            return _messages(("webhook_events", "must name known event types"))
        hook = Webhook(str(self._next), url, bool(given.get("is_enabled", True)),
                       bool(given.get("should_retry", True)), [str(e) for e in events],
                       ["whsec_" + secrets.token_urlsafe(24)])  # fmt: skip
        self._next += 1
        self.by_id[hook.id] = hook
        return {"webhook": hook.node(with_secret=True), "messages": []}

    def _list(self, args: dict[str, Any]) -> dict[str, Any]:
        asked = args.get("first")
        first = asked if isinstance(asked, int) and asked > 0 else 10
        after = args.get("after")
        ids = sorted(self.by_id, key=int)
        if after is not None:
            ids = [i for i in ids if int(i) > int(str(after))]
        page = ids[: min(first, self.page_limit)]
        return {"nodes": [self.by_id[i].node() for i in page],
                "page_info": {"has_next_page": len(ids) > len(page),
                              "end_cursor": page[-1] if page else None}}  # fmt: skip
