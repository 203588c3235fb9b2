"""OpenEvidence's webhook registration API, as the brief describes it (no public API exists).

Seed 003 (and seed 001's "register on start-up") give exactly one call; carehook keeps the
collection's list and delete shapes in the same assumed REST form
(:mod:`carehook.connectors.rest_webhooks`)::

    POST   {api_url}/v1/webhooks         {"url", "events": [...], "secret"}
    GET    {api_url}/v1/webhooks         (assumed)
    DELETE {api_url}/v1/webhooks/{id}    (assumed)

    Authorization: Bearer <api_token>    (the brief's OPENEVIDENCE_API_KEY)

``api_url`` defaults to ``https://api.openevidence.com``. Check these against the contract
OpenEvidence gives you before going live.
"""

from __future__ import annotations

import httpx

from carehook.connectors.rest_webhooks import RestWebhooks

DEFAULT_API_URL = "https://api.openevidence.com"
WEBHOOKS_PATH = "/v1/webhooks"


def openevidence_webhooks(http: httpx.AsyncClient, api_url: str | None, token: str
                          ) -> RestWebhooks:  # fmt: skip
    """The registrar for one OpenEvidence account."""
    base = (api_url or DEFAULT_API_URL).rstrip("/")
    return RestWebhooks(http, base + WEBHOOKS_PATH, {"Authorization": f"Bearer {token}"},
                        "openevidence")  # fmt: skip
