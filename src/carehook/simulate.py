"""``carehook simulate``: send correctly signed sample events to a running gateway."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from carehook.envelope import SignedRequest
from carehook.errors import ConfigError
from carehook.sources import Source


@dataclass(frozen=True, slots=True)
class Delivery:
    """One signed request ready to send."""

    event_type: str
    headers: dict[str, str]
    body: bytes


def build_deliveries(
    source: Source, event_type: str, count: int, duplicate: bool, now: float | None = None
) -> Iterator[Delivery]:
    """``count`` signed samples of ``event_type`` (each twice when ``duplicate``)."""
    if event_type not in source.vendor.event_types:
        known = ", ".join(source.vendor.event_types) or "(any type)"
        if source.vendor.name != "standard-webhooks":
            raise ConfigError(
                f"{source.vendor.name} has no event type {event_type!r}; known: {known}"
            )
    if not source.secrets:
        raise ConfigError(f"source {source.name!r} has no secret to sign with")
    seed = int(time.time() * 1000)
    for n in range(count):
        at = time.time() if now is None else now
        payload = source.vendor.sample(event_type, datetime.fromtimestamp(at, UTC), seed + n)
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"content-type": "application/json"}
        request = SignedRequest("POST", source.public_path, "", headers, body)
        headers.update(source.scheme.sign(request, source.secrets[0], at))
        delivery = Delivery(event_type, headers, body)
        yield delivery
        if duplicate:
            yield delivery


def send(url: str, delivery: Delivery, client: httpx.Client) -> tuple[int, str]:
    """POST one delivery; returns (status, short response text)."""
    response = client.post(url, content=delivery.body, headers=delivery.headers)
    return response.status_code, response.text[:200]
