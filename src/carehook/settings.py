"""Settings: a pydantic model of ``carehook.toml`` plus ``CAREHOOK_*`` environment variables.

There is no module-level instance: :func:`load_settings` reads one file and the environment, and
the composition root (:mod:`carehook.bootstrap`) passes the result on. Secrets may be literals or
``env:VARNAME``; they are resolved by :func:`resolve_secret` when the source is built, so a
missing variable is reported by name (never by value).

Relative ``data_dir`` and ``sqlite:///`` paths are taken relative to the config file's folder.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from carehook.errors import ConfigError

VendorName = Literal["abridge", "openevidence", "nabla", "healthie", "standard-webhooks"]
DEFAULT_CONFIG_PATH = Path(".carehook/carehook.toml")
_SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SourceSettings(BaseModel):
    """One endpoint ``/webhooks/<name>`` bound to a vendor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vendor: VendorName
    secrets: list[str] = Field(default_factory=list, repr=False)
    #: each secret's id, the number stored with the events it verified: ``secrets add`` gives
    #: the next unused one and ``secrets retire`` removes one with its secret, so an id keeps its
    #: meaning for good (None: the positions 0, 1, ... as in a config never rotated)
    secret_ids: list[int] | None = None
    #: ids of secrets retired (``secrets retire``): never given to a new secret
    retired_secret_ids: list[int] = Field(default_factory=list)
    allow_ips: list[IPNetwork] = Field(default_factory=list)
    trusted_proxies: list[IPNetwork] = Field(default_factory=list)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0, le=64 * 1024 * 1024)
    tolerance_seconds: int = Field(default=300, ge=1, le=86400)
    public_path: str | None = None
    retention_days: int = Field(default=30, ge=1)
    #: request-log rows of this source are kept this long (None: ``worker.request_retention_days``)
    request_retention_days: int | None = Field(default=None, ge=1)
    #: OpenEvidence: accept the bare-hex signature form that carries no timestamp
    allow_bare_signature: bool = True
    #: rename a scheme's headers (default lower-case name -> name this sender uses)
    signature_headers: dict[str, str] = Field(default_factory=dict)
    #: Abridge: the signed template, with {timestamp} and {body}
    signature_template: str | None = None
    #: worker retries: exponential back-off with full jitter, from base up to cap, then dead
    retry_base_seconds: float = Field(default=5.0, ge=0)
    retry_cap_seconds: float = Field(default=3600.0, ge=0)
    max_attempts: int = Field(default=12, ge=1, le=1000)
    #: the vendor's API (Abridge REST, Healthie GraphQL): base URL and credentials (``env:``)
    api_url: str | None = None
    api_token: str | None = Field(default=None, repr=False)  # Abridge / OpenEvidence bearer
    api_key: str | None = Field(default=None, repr=False)  # Healthie API key
    org_id: str | None = None  # Abridge organisation
    #: let ``api_url`` be a loopback or private address (a sandbox, an internal proxy)
    api_allow_private: bool = False
    #: Abridge ``quality.alert``: a score below this opens a review item and alerts
    quality_threshold: float = Field(default=0.7, ge=0, le=1)
    #: OpenEvidence ``review.flagged``: a review id flagged again within this is not re-queued
    review_cooldown_hours: float = Field(default=24.0, ge=0)

    @model_validator(mode="after")
    def _retry_bounds(self) -> SourceSettings:
        if self.retry_cap_seconds < self.retry_base_seconds:
            raise ValueError("retry_cap_seconds must be at least retry_base_seconds")
        return self

    @model_validator(mode="after")
    def _one_id_per_secret(self) -> SourceSettings:
        ids = self.ids()
        if len(ids) != len(self.secrets):
            raise ValueError(f"secret_ids has {len(ids)} ids for {len(self.secrets)} secrets: "
                             "one id per secret, in order")
        given = [*ids, *self.retired_secret_ids]
        if len(set(given)) != len(given) or any(i < 0 for i in given):
            raise ValueError("secret_ids and retired_secret_ids must be distinct, not negative")
        return self

    def ids(self) -> list[int]:
        """Each secret's id (its position when ``secret_ids`` is not set)."""
        return list(range(len(self.secrets))) if self.secret_ids is None else self.secret_ids

    @field_validator("allow_ips", "trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [ipaddress.ip_network(str(v), strict=False) for v in value]
        return value


class StorageSettings(BaseModel):
    """Where the inbox lives."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None
    #: apply migrations on start (always true for the embedded SQLite store)
    auto_migrate: bool = False


class ServerSettings(BaseModel):
    """Where ``carehook serve`` listens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    #: the largest request line plus header block, in bytes: 431 above it
    max_header_bytes: int = Field(default=65536, ge=4096)
    #: seconds for a request's headers to arrive (an idle new connection is closed after it)
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    #: seconds for a request's body to arrive once its headers have (408 after it)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    #: open connections at most; at the cap the oldest one still sending headers is closed
    max_connections: int = Field(default=1000, ge=2)
    #: request-log rows of rejected requests per source per minute; more are only counted
    rejected_log_per_minute: int = Field(default=600, ge=0)


class WorkerSettings(BaseModel):
    """How events are processed: ``[worker]`` (``carehook serve`` and ``carehook worker``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: whether ``carehook serve`` runs a worker in-process (``carehook worker`` always does)
    enabled: bool = True
    #: events processed at once per process (different subjects; one subject is never parallel).
    #: Most of an event's time is waiting (for the store's commits, for the EHR): at 8, ``serve``
    #: fell behind from about 1,100 events/s with CPU to spare; at 32 it kept up at 1,900/s
    #: (``bench/ingest.py``'s paced run, as ``bench/worker.py`` has always run its workers)
    concurrency: int = Field(default=32, ge=1, le=1024)
    #: ``serve``'s in-process worker holds back new claims while this many webhook requests
    #: are being answered in the same process (acknowledgements first; 0: never holds back)
    ingress_priority_at: int = Field(default=16, ge=0)
    #: the longest one claim is held back for the busy ingress; under a sustained flood the
    #: in-process worker then takes at most ``concurrency / 2`` events per this many seconds.
    #: 0.5 (not 0.1): PostgreSQL ``serve`` flat out acknowledged about 12 % more (README)
    ingress_priority_seconds: float = Field(default=0.5, gt=0, le=10)
    #: a claimed event is held this long, renewed every third of it while it runs
    lease_seconds: float = Field(default=30.0, gt=0)
    #: the longest an idle worker waits before looking for due work again
    poll_seconds: float = Field(default=1.0, gt=0)
    #: on SIGTERM, in-flight events get this long to finish before they are released
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    #: dedup keys (event ids) of finished events are kept this long
    dedup_days: int = Field(default=30, ge=1)
    #: request-log rows are kept this long (per source: ``request_retention_days`` there)
    request_retention_days: int = Field(default=30, ge=1)
    #: how often ``serve`` and ``worker`` purge expired payloads and dedup keys
    purge_interval_seconds: float = Field(default=3600.0, gt=0)
    #: a crashed background task (the worker, the purge timer) is restarted after a back-off
    #: doubling from this ...
    restart_base_seconds: float = Field(default=0.5, gt=0)
    #: ... up to this
    restart_cap_seconds: float = Field(default=30.0, gt=0)


class DestinationSettings(BaseModel):
    """Where a workflow sends things: ``[destinations.<name>]``.

    ``type = "fhir"``: a FHIR R4 server (``ehr``), with a bearer ``token`` or OAuth2 client
    credentials (``token_url`` + ``client_id`` + ``client_secret``, SMART backend services style).
    ``type = "webhook"``: an HTTPS endpoint receiving Standard Webhooks signed POSTs (``secret``,
    ``whsec_...`` or any string).

    A FHIR destination's ``auth`` says how it authenticates: ``bearer`` (``token``),
    ``client-secret`` (OAuth2: ``client_id`` + ``client_secret``), or ``smart-backend`` (SMART
    Backend Services: ``client_id``, a key from ``carehook keys new``, ``signing_alg``; what Epic
    and Oracle Health require). Unset, it follows the fields given (as before ``auth`` existed).
    ``token_url`` defaults to the ``token_endpoint`` of ``{url}/.well-known/smart-configuration``.
    ``conditional_create``: ``auto`` reads the server's CapabilityStatement per resource type,
    ``yes`` always sends ``If-None-Exist``, ``no`` always searches by identifier first.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["fhir", "webhook"]
    url: str
    token: str | None = Field(default=None, repr=False)
    token_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = Field(default=None, repr=False)
    scope: str | None = None
    secret: str | None = Field(default=None, repr=False)
    #: allow loopback and private addresses (refused by default: SSRF)
    allow_private: bool = False
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    auth: Literal["bearer", "client-secret", "smart-backend"] | None = None
    signing_alg: Literal["RS384", "ES384"] = "RS384"
    conditional_create: Literal["auto", "yes", "no"] = "auto"
    #: a create whose earlier attempt left no server id and finds nothing is held this long
    #: (searched again) before it is sent again: the earlier POST may still be in flight
    pending_create_seconds: float = Field(default=60.0, ge=0)

    @field_validator("url", "token_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> DestinationSettings:
        if self.type == "webhook" and not self.secret:
            raise ValueError("a webhook destination needs a secret")
        if self.auth is not None:
            return self._auth_fields(self.auth)
        oauth = (self.token_url, self.client_id, self.client_secret)
        if any(oauth) and not all(oauth):
            raise ValueError("OAuth2 needs token_url, client_id and client_secret together")
        return self

    def _auth_fields(self, auth: str) -> DestinationSettings:
        if self.type != "fhir":
            raise ValueError("auth applies to fhir destinations only")
        needs = {"bearer": ("token",), "client-secret": ("client_id", "client_secret"),
                 "smart-backend": ("client_id",)}[auth]  # fmt: skip
        missing = [name for name in needs if not getattr(self, name)]
        if missing:
            raise ValueError(f"auth = {auth!r} needs {', '.join(missing)}")
        return self


class RouteSettings(BaseModel):
    """A forward route: ``[[routes]]`` sends matching events to a webhook destination."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    #: a glob over event types: ``deepconsult.*``, ``*``
    events: str = "*"
    to: str


class NotificationSettings(BaseModel):
    """How channels are reached: ``[notifications]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: let channel targets (an SMTP relay, a webhook) be loopback or private addresses
    allow_private: bool = False


#: the admin token scopes: metadata, decrypted payloads (audited), replay and resolve, admin
AdminScope = Literal["read", "payload", "replay", "admin"]
ADMIN_SCOPES: tuple[str, ...] = ("read", "payload", "replay", "admin")


class AdminToken(BaseModel):
    """One admin API token: ``[[admin.tokens]] name, hash = "sha256:<hex>", scopes``.

    Only the token's SHA-256 is kept (``carehook admin token new`` prints the token once)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$", repr=False)
    scopes: list[AdminScope] = Field(min_length=1)


class AdminSettings(BaseModel):
    """The admin API and dashboard: ``[admin]``. Off (404) until a token is configured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: a separate listener for /admin (default: the gateway's listener serves it)
    host: str | None = None
    port: int | None = Field(default=None, ge=0, le=65535)
    tokens: list[AdminToken] = Field(default_factory=list)
    #: how long a dashboard login lasts at most, in use or not
    session_minutes: int = Field(default=480, ge=1, le=10080)
    #: a dashboard login unused this long ends (automatic logoff; each page view renews it)
    session_idle_minutes: int = Field(default=30, ge=1, le=10080)

    @field_validator("tokens")
    @classmethod
    def _unique_names(cls, value: list[AdminToken]) -> list[AdminToken]:
        names = [t.name for t in value]
        if len(names) != len(set(names)):
            raise ValueError("admin token names must be unique")
        return value


class Settings(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix="CAREHOOK_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    data_dir: Path = Path(".carehook")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    storage: StorageSettings = StorageSettings()
    server: ServerSettings = ServerSettings()
    worker: WorkerSettings = WorkerSettings()
    sources: dict[str, SourceSettings] = Field(default_factory=dict)
    #: named destinations: ``ehr`` (FHIR), ``portal``, ``requester``, ``cache``, ...
    destinations: dict[str, DestinationSettings] = Field(default_factory=dict)
    #: notification channels: each a list of Apprise URLs (``clinical``, ``ops``, ``requester``)
    channels: dict[str, list[str]] = Field(default_factory=dict, repr=False)
    notifications: NotificationSettings = NotificationSettings()
    routes: list[RouteSettings] = Field(default_factory=list)
    admin: AdminSettings = AdminSettings()
    #: the gateway's public base URL, for links in alerts (defaults to the server address)
    public_url: str | None = None

    @model_validator(mode="after")
    def _routes_resolve(self) -> Settings:
        for i, route in enumerate(self.routes):
            dest = self.destinations.get(route.to)
            if dest is None:
                raise ValueError(f"routes[{i}].to: no destination named {route.to!r}")
            if dest.type != "webhook":
                raise ValueError(f"routes[{i}].to: destination {route.to!r} is not a webhook")
            if route.source not in self.sources:
                raise ValueError(f"routes[{i}].source: no source named {route.source!r}")
        return self

    @property
    def dashboard_url(self) -> str:
        """Where alerts link to."""
        return (self.public_url or f"http://{self.server.host}:{self.server.port}").rstrip("/")

    @field_validator("sources")
    @classmethod
    def _source_names(cls, value: dict[str, SourceSettings]) -> dict[str, SourceSettings]:
        for name in value:
            if not _SOURCE_NAME.match(name):
                raise ValueError(f"source name {name!r} must match {_SOURCE_NAME.pattern}")
        return value

    @property
    def storage_url(self) -> str:
        """The storage URL, defaulting to the embedded SQLite file in the data dir."""
        return self.storage.url or f"sqlite:///{self.data_dir / 'carehook.db'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],  # noqa: ARG003 (passed by name)
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 (passed by name)
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003 (passed by name)
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment variables win over the file (passed as init values)."""
        return (env_settings, init_settings)


def resolve_secret(value: str, what: str) -> str:
    """``env:NAME`` → the variable's value; anything else is the literal secret."""
    if value.startswith("env:"):
        name = value[4:]
        found = os.environ.get(name)
        if not found:
            raise ConfigError(f"{what}: environment variable {name} is not set")
        return found
    return value


def config_path(explicit: Path | None) -> Path:
    """The config path: ``--config``, else ``CAREHOOK_CONFIG``, else ``.carehook/carehook.toml``."""
    if explicit is not None:
        return explicit
    env = os.environ.get("CAREHOOK_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG_PATH


def load_settings(path: Path) -> Settings:
    """Read ``path`` (TOML) and the environment into Settings; errors name fields, not values."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    base = path.parent.resolve()
    data_dir = Path(raw.get("data_dir", "."))
    raw["data_dir"] = data_dir if data_dir.is_absolute() else (base / data_dir)
    storage = raw.get("storage") or {}
    url = storage.get("url")
    if isinstance(url, str) and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        storage["url"] = f"sqlite:///{base / url.removeprefix('sqlite:///')}"
    try:
        return Settings(**raw)
    except ValidationError as exc:
        raise ConfigError(f"config file {path}: {describe_error(exc)}") from None


def describe_error(exc: ValidationError) -> str:
    """Field locations and messages only: a config error must not echo a secret back (also
    :mod:`carehook.configfile`'s)."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
