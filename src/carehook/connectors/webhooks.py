"""Registering carehook's endpoint with a vendor: the port every vendor's registrar implements.

Implemented by :class:`carehook.connectors.abridge.AbridgeWebhooks` (REST, assumed shapes),
:class:`carehook.connectors.openevidence.OpenEvidenceWebhooks` (REST, the brief's shapes) and
:class:`carehook.connectors.healthie.HealthieWebhooks` (GraphQL). Nabla has no registration API
(its admin console only): :data:`NABLA_CONSOLE_STEPS`.

Two ways a signing secret comes about, per vendor (:attr:`WebhookRegistrar.vendor_secret`):
Abridge and OpenEvidence take the receiver's secret in the create request; Healthie generates
one and returns it (``signature_secret``), and ``expireWebhookSignature`` replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RegisteredWebhook:
    """A webhook as the vendor holds it. ``secret``: only in a create or rotate answer."""

    webhook_id: str
    url: str
    events: tuple[str, ...] = ()
    enabled: bool | None = None
    secret: str | None = field(default=None, repr=False)


class WebhookRegistrar(Protocol):
    """A vendor's webhook registration API."""

    #: True when the vendor generates the signing secret (Healthie), False when carehook sends it
    vendor_secret: bool
    #: True when the vendor can rotate a webhook's secret itself
    can_rotate: bool

    async def create(self, url: str, events: tuple[str, ...], secret: str | None
                     ) -> RegisteredWebhook:  # fmt: skip
        """Register ``url`` for ``events`` (signed with ``secret`` where the receiver sets it)."""
        ...

    async def list(self) -> list[RegisteredWebhook]:
        """Every webhook registered with the vendor."""
        ...

    async def delete(self, webhook_id: str) -> None:
        """Remove one webhook."""
        ...

    async def rotate(self, webhook_id: str) -> RegisteredWebhook:
        """Have the vendor sign with a new secret (the answer carries it)."""
        ...


NABLA_CONSOLE_STEPS = """\
Nabla has no webhook registration API: register the endpoint in Nabla's admin console.
  1. Sign in to the Nabla Core API admin console as an organisation administrator.
  2. Open the "Webhooks" page of your organisation and choose "Add webhook".
  3. URL: {url}
  4. Events: {events}
  5. Save. The console shows the webhook's signing secret once: add it to carehook with
       carehook secrets add {source} --stdin
     (paste it; it is not echoed). Nabla may show several active secrets during a rotation:
     add each, then `carehook secrets retire {source} ID` the old one once it stops matching.
  6. Send a test event from the console and check `carehook requests ls --source {source}`.
"""
