"""The composition root's connector half: settings → the workflows' :class:`Services`.

Called by :mod:`carehook.bootstrap` only (it is bootstrap's, split out to keep both small).
Every outbound HTTP client comes from :func:`carehook.connectors.outbound.outbound_client`:
loopback and private addresses are refused unless the destination (``allow_private``) or the
source (``api_allow_private``) allows them. Each destination and each source's vendor API has
its own client (its own timeout and guard); :meth:`ServiceSet.aclose` closes them all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import httpx

from carehook.connectors.abridge import AbridgeClient
from carehook.connectors.fhir.client import FhirClient, OAuthClientCredentials
from carehook.connectors.fhir.keys import KeyStore
from carehook.connectors.fhir.ledger import SqlWriteLedger
from carehook.connectors.fhir.smart import SmartBackend, jwks_url
from carehook.connectors.fhir.writer import IdempotentEhr
from carehook.connectors.forward import WebhookDestination
from carehook.connectors.healthie import HealthieClient
from carehook.connectors.notify import AppriseNotifier
from carehook.connectors.outbound import outbound_client
from carehook.connectors.webhooks import WebhookRegistrar
from carehook.errors import ConfigError, StepError
from carehook.observability import get_logger
from carehook.settings import DestinationSettings, Settings, SourceSettings, resolve_secret
from carehook.workflows.catalog import ForwardRoute, SourceOptions, WorkflowConfig
from carehook.workflows.ports import (
    AbridgeApi,
    Destination,
    Ehr,
    HealthieApi,
    Services,
)

_log = get_logger("carehook.services")


@dataclass(slots=True)
class ServiceSet:
    """The built services and the HTTP clients they hold."""

    services: Services
    clients: list[httpx.AsyncClient] = field(default_factory=list)
    ledgers: list[SqlWriteLedger] = field(default_factory=list)

    async def prepare(self) -> None:
        """Read the EHR's CapabilityStatement now (at worker start), so the first write does
        not wait for it; unreachable, it is read again at the first write."""
        ehr = self.services.ehr
        if isinstance(ehr, IdempotentEhr):
            try:
                await ehr.capabilities()
            except StepError as exc:
                _log.warning("fhir.metadata_unavailable", error_class=type(exc).__name__)

    async def aclose(self) -> None:
        """Close every HTTP client (and the FHIR write ledger)."""
        for client in self.clients:
            await client.aclose()
        for ledger in self.ledgers:
            ledger.close()


def workflow_config(settings: Settings) -> WorkflowConfig:
    """What the workflows read of the settings."""
    return WorkflowConfig(
        sources={
            name: SourceOptions(cfg.vendor, cfg.quality_threshold, cfg.review_cooldown_hours)
            for name, cfg in settings.sources.items()
        },
        routes=tuple(ForwardRoute(r.source, r.events, r.to) for r in settings.routes),
    )


def build_services(settings: Settings) -> ServiceSet:
    """Every configured connector (a missing one stays None: its steps say "not configured")."""
    out = ServiceSet(Services(dashboard_url=settings.dashboard_url))
    quiet_request_logs()
    ehr: Ehr | None = None
    destinations: dict[str, Destination] = {}
    for name, dest in settings.destinations.items():
        http = _client(out, dest.allow_private, dest.timeout_seconds)
        if dest.type == "fhir":
            if name == "ehr":
                ledger = SqlWriteLedger(settings.storage_url)
                out.ledgers.append(ledger)
                ehr = IdempotentEhr(_fhir(http, name, dest, settings), ledger, name,
                                    conditional_create=dest.conditional_create,
                                    pending_seconds=dest.pending_create_seconds)  # fmt: skip
        else:
            secret = resolve_secret(dest.secret or "", f"destinations.{name}.secret")
            try:
                destinations[name] = WebhookDestination(name, http, dest.url, secret)
            except ConfigError as exc:  # its message names no destination: add which one
                raise ConfigError(f"destinations.{name}.secret: {exc}") from None
    abridge: dict[str, AbridgeApi] = {}
    healthie: dict[str, HealthieApi] = {}
    for name, src in settings.sources.items():
        if src.api_url is None or src.vendor not in ("abridge", "healthie"):
            continue  # OpenEvidence's api_url serves registration only (build_registrar)
        http = _client(out, src.api_allow_private, 30.0)
        if src.vendor == "abridge":
            abridge[name] = AbridgeClient(http, src.api_url, _secret(src, name, "api_token"),
                                          src.org_id)  # fmt: skip
        elif src.vendor == "healthie":
            healthie[name] = HealthieClient(http, src.api_url, _secret(src, name, "api_key"))
    notifier = None
    if settings.channels:
        allow = settings.notifications.allow_private
        notifier = AppriseNotifier(settings.channels, allow_private=allow)
    out.services = Services(ehr=ehr, abridge=abridge, healthie=healthie, notifier=notifier,
                            destinations=destinations, dashboard_url=settings.dashboard_url)
    return out


def quiet_request_logs() -> None:
    """httpx logs every request's full URL at INFO; some URLs are credentials (Healthie's
    ``expiring_url`` transcript links), so its logger keeps warnings and errors only."""
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _client(out: ServiceSet, allow_private: bool, timeout: float) -> httpx.AsyncClient:
    client = outbound_client(allow_private=allow_private, timeout=timeout)
    out.clients.append(client)
    return client


def _secret(src: SourceSettings, name: str, key: str) -> str:
    value = getattr(src, key)
    if not value:
        raise ConfigError(f"sources.{name}: api_url is set but {key} is missing")
    return resolve_secret(str(value), f"sources.{name}.{key}")


def _fhir(
    http: httpx.AsyncClient, name: str, dest: DestinationSettings, settings: Settings
) -> FhirClient:
    if dest.auth == "smart-backend":
        return FhirClient(http, dest.url, oauth=_smart(name, dest, settings),
                          timeout=dest.timeout_seconds)  # fmt: skip
    token = None if dest.token is None else resolve_secret(dest.token, f"destinations.{name}.token")
    if dest.auth == "client-secret":
        token = None
    oauth = None
    if dest.client_id and dest.client_secret and dest.auth != "bearer":
        oauth = OAuthClientCredentials(
            token_url=dest.token_url, client_id=dest.client_id,
            client_secret=resolve_secret(dest.client_secret,
                                         f"destinations.{name}.client_secret"),
            scope=dest.scope,
        )  # fmt: skip
    return FhirClient(http, dest.url, token=token, oauth=oauth, timeout=dest.timeout_seconds)


def fhir_client(settings: Settings, name: str) -> tuple[FhirClient, httpx.AsyncClient]:
    """The FHIR client of destination ``name`` and its HTTP client (``carehook ehr check``)."""
    dest = settings.destinations.get(name)
    if dest is None or dest.type != "fhir":
        raise ConfigError(f"no fhir destination named {name!r}")
    http = outbound_client(allow_private=dest.allow_private, timeout=dest.timeout_seconds)
    return _fhir(http, name, dest, settings), http


def key_store(settings: Settings) -> KeyStore:
    """The SMART Backend Services signing keys (``<data_dir>/keys``)."""
    return KeyStore(settings.data_dir / "keys")


def _smart(name: str, dest: DestinationSettings, settings: Settings) -> SmartBackend:
    keys, alg = key_store(settings), dest.signing_alg
    return SmartBackend(
        client_id=dest.client_id or "", key=lambda: keys.signing_key(name, alg),
        jku=jwks_url(settings.dashboard_url), scope=dest.scope, token_url=dest.token_url,
    )  # fmt: skip


def build_registrar(settings: Settings, name: str) -> tuple[WebhookRegistrar | None, ServiceSet]:
    """The webhook registrar of source ``name`` (None for Nabla: console only) and the
    :class:`ServiceSet` holding its HTTP client (close it with ``aclose``)."""
    from carehook.connectors.abridge import abridge_webhooks
    from carehook.connectors.healthie import HealthieWebhooks
    from carehook.connectors.openevidence import openevidence_webhooks

    src = settings.sources.get(name)
    if src is None:
        raise ConfigError(f"no source {name!r} in the config")
    out = ServiceSet(Services())
    quiet_request_logs()
    if src.vendor in ("nabla", "standard-webhooks"):
        return None, out
    if src.api_url is None and src.vendor != "openevidence":
        raise ConfigError(f"sources.{name}: api_url is needed to register with {src.vendor}")
    http = _client(out, src.api_allow_private, 30.0)
    if src.vendor == "abridge":
        token = _secret(src, name, "api_token")
        return abridge_webhooks(http, str(src.api_url), token, src.org_id), out
    if src.vendor == "openevidence":
        return openevidence_webhooks(http, src.api_url, _api_token(src, name)), out
    client = HealthieClient(http, str(src.api_url), _secret(src, name, "api_key"))
    return HealthieWebhooks(client), out


def _api_token(src: SourceSettings, name: str) -> str:
    if not src.api_token:
        raise ConfigError(f"sources.{name}: api_token is needed to register with {src.vendor}")
    return resolve_secret(src.api_token, f"sources.{name}.api_token")
