"""Registering a source's endpoint with its vendor, and keeping the source's secrets in step.

The service under ``carehook register`` (and any other front end): the vendor's registrar comes
from the composition root (:func:`carehook.services.build_registrar`), secrets are written with
:mod:`carehook.configfile` (appended with a new id, so the ids the store recorded keep their
meaning).

Per vendor:

- Abridge, OpenEvidence: carehook gives the vendor the source's newest secret (the last entry;
  a fresh one is generated and added when the source has none).
- Healthie: Healthie generates the secret; the one ``createWebhook`` returns is appended to the
  source's secrets. ``rotate`` (``expireWebhookSignature``) appends the new one and keeps the old
  until the operator retires it (``carehook secrets retire``).
- Nabla: console only; :func:`console_steps` says what to do there.

No secret is ever part of a result or a message.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from carehook.configfile import add_secret, source_secret_ids
from carehook.connectors.webhooks import NABLA_CONSOLE_STEPS, RegisteredWebhook, WebhookRegistrar
from carehook.errors import ConfigError
from carehook.settings import Settings, resolve_secret
from carehook.vendors import builtin_vendors


@dataclass(frozen=True, slots=True)
class Registration:
    """What a registration did: the vendor's webhook and the id of the secret it signs with
    (``added``: whether that secret was appended to the config just now)."""

    webhook: RegisteredWebhook
    secret_index: int | None
    added: bool


def endpoint_url(settings: Settings, source: str, url: str | None) -> str:
    """The URL to register: ``url`` as given when it has a path, else ``url`` (or the
    ``public_url`` setting) followed by the source's path."""
    import httpx

    cfg = settings.sources[source]
    path = cfg.public_path or f"/webhooks/{source}"
    base = url or settings.public_url
    if not base:
        raise ConfigError("give --url (the gateway's public URL) or set public_url in the config")
    parsed = httpx.URL(base)
    if parsed.scheme not in ("https", "http") or not parsed.host:
        raise ConfigError(f"--url must be an http(s) URL with a host, not {base!r}")
    if parsed.path not in ("", "/"):
        return base
    return base.rstrip("/") + path


def default_events(settings: Settings, source: str) -> tuple[str, ...]:
    """The event types carehook handles for the source's vendor."""
    return builtin_vendors()[settings.sources[source].vendor].event_types


def console_steps(source: str, url: str, events: tuple[str, ...]) -> str:
    """Nabla's console steps for this source."""
    return NABLA_CONSOLE_STEPS.format(source=source, url=url, events=", ".join(events))


def signing_secret(config: Path, source: str) -> tuple[str, int, bool]:
    """The secret to give a vendor that takes the receiver's: the newest (last) one, or a new
    one appended when the source has none; returns it, its id and whether it was added."""
    have = source_secret_ids(config, source)
    if have.secrets:
        index = len(have.secrets) - 1
        value = resolve_secret(have.secrets[index], f"sources.{source}.secrets[{index}]")
        return value, have.ids[index], False
    fresh = secrets.token_urlsafe(32)
    return fresh, add_secret(config, source, fresh), True


async def register(registrar: WebhookRegistrar, config: Path, source: str, url: str,
                   events: tuple[str, ...]) -> Registration:  # fmt: skip
    """Create the webhook with the vendor; keep the vendor's secret when it makes one."""
    if registrar.vendor_secret:
        webhook = await registrar.create(url, events, None)
        if not webhook.secret:
            raise ConfigError(f"{source}: the vendor returned no signing secret")
        return _keep_secret(config, source, webhook, webhook.secret)
    secret, index, added = signing_secret(config, source)
    return Registration(await registrar.create(url, events, secret), index, added)


async def rotate(registrar: WebhookRegistrar, config: Path, source: str, webhook_id: str
                 ) -> Registration:  # fmt: skip
    """Have the vendor sign with a new secret; append it (the old one stays until retired)."""
    if not registrar.can_rotate:
        raise ConfigError(f"{source}: the vendor cannot rotate a secret itself; run `carehook "
                          "secrets add`, register again, then retire the old secret")  # fmt: skip
    webhook = await registrar.rotate(webhook_id)
    if not webhook.secret:
        raise ConfigError(f"{source}: the vendor returned no new signing secret")
    return _keep_secret(config, source, webhook, webhook.secret)


def _keep_secret(
    config: Path, source: str, webhook: RegisteredWebhook, secret: str
) -> Registration:
    """The vendor's signing ``secret`` added to the source (kept once), as a registration."""
    added = secret not in source_secret_ids(config, source).secrets
    return Registration(webhook, add_secret(config, source, secret), added)
