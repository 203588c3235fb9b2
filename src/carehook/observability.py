"""Structured logs with allowlisted fields only, and Prometheus metrics.

A log line may carry only the keys in :data:`ALLOWED_FIELDS`; any other key is dropped (and
counted in ``dropped_fields``) before rendering, so a careless ``log.info(..., body=...)`` can never
leak a payload, a name, an email, a secret or a signature. Exception tracebacks are not rendered:
their messages may quote input. Log the exception's class name as ``error_class`` instead.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from carehook.inbox.port import EVENT_STATUSES

ALLOWED_FIELDS = frozenset(
    {
        "event", "level", "timestamp", "component",
        "source", "vendor", "event_id", "event_pk", "type", "subject", "status", "outcome",
        "cause", "reason", "remote_addr", "size", "duration_ms", "secret_index", "attempt",
        "error_class", "count", "host", "port", "path", "storage", "config", "workers",
        "dropped_fields",
        "task", "setting",
        # metadata only: counts, a destination's and a resource type's names, a due time, a
        # storage error's result code (never a driver message: inbox._sqlite_writer.translate)
        "requests", "sessions", "destination", "resource_type", "until", "error",
    }
)  # fmt: skip


def _allowlist(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    dropped = [k for k in event_dict if k not in ALLOWED_FIELDS]
    for key in dropped:
        del event_dict[key]
    if dropped:
        event_dict["dropped_fields"] = len(dropped)
    return event_dict


#: the processors every carehook logger runs, in order; the allowlist runs last before rendering
def processors(json: bool) -> list[Any]:
    """The processor chain (exposed so tests can capture exactly what would be rendered)."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    return [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _allowlist,
        renderer,
    ]


def configure_logging(level: str = "info", json: bool | None = None, cache: bool = True) -> None:
    """Configure structlog (JSON when stderr is not a TTY) and quiet library loggers.

    ``cache`` binds each logger once on first use (cheaper on the hot path); tests that
    reconfigure logging afterwards pass False.
    """
    as_json = (not sys.stderr.isatty()) if json is None else json
    structlog.configure(
        processors=processors(as_json),
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=cache,
    )
    # uvicorn's own loggers print client addresses and paths only; keep its errors, not access
    logging.getLogger("uvicorn.access").disabled = True


def get_logger(name: str) -> Any:
    """A structlog logger named ``name``."""
    return structlog.get_logger(component=name)


@dataclass(slots=True)
class Metrics:
    """The Prometheus metrics of one process, on their own registry (no import-time globals)."""

    registry: CollectorRegistry
    requests: Counter
    ack_seconds: Histogram
    #: request-log rows of rejected requests not written (over the per-source cap), by source
    request_log_dropped: Counter
    #: connections closed by the server guard, by reason (header_timeout, headers_too_large ...)
    connections_refused: Counter
    _children: dict[tuple[str, str, str], tuple[Any, ...]] = field(default_factory=dict)
    #: requests by source, outcome and cause; verification failures by source and reason
    causes: Counter | None = None
    verification_failures: Counter | None = None
    #: admin tokens refused (dashboard sign-in, API bearer), by surface and reason
    admin_refused: Counter | None = None

    def count_admin_refusal(self, surface: str, reason: str) -> None:
        """Count one refused admin token (``surface``: api, dashboard; ``reason``: missing,
        unknown); its value is never a label."""
        if self.admin_refused is not None:
            self.admin_refused.labels(surface, reason).inc()

    def observe_request(self, source: str, outcome: str, seconds: float, cause: str = "") -> None:
        """Count one answered delivery, its cause and its ack time (label children cached:
        this is the hot path, one dict lookup per request; a request without a cause, i.e.
        accepted, costs no more than before)."""
        child = self._children.get((source, outcome, cause))
        if child is None:
            child = self._new_children(source, outcome, cause)
        for counter in child[2:]:
            counter.inc()
        child[0].inc()
        child[1].observe(seconds)

    def _new_children(self, source: str, outcome: str, cause: str) -> tuple[Any, ...]:
        label = cause_label(cause) if len(self._children) < _MAX_CHILDREN else "_other"
        extra: list[Any] = []
        if self.causes is not None and cause:  # accepted ones: carehook_requests_total only
            extra.append(self.causes.labels(source, outcome, label))
        if self.verification_failures is not None and label.startswith("signature:"):
            extra.append(self.verification_failures.labels(source, label[10:]))
        child = (self.requests.labels(source, outcome), self.ack_seconds.labels(outcome), *extra)
        self._children[(source, outcome, cause)] = child
        return child

    @classmethod
    def create(cls) -> Metrics:
        """A fresh registry with every carehook metric."""
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter(
                "carehook_requests_total",
                "Webhook requests by source and outcome",
                ["source", "outcome"],
                registry=registry,
            ),
            ack_seconds=Histogram(
                "carehook_ack_seconds",
                "Time from request start to answer, by outcome",
                ["outcome"],
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
                registry=registry,
            ),
            request_log_dropped=Counter(
                "carehook_request_log_dropped_total",
                "Rejected requests not written to the request log (per-source cap), by source",
                ["source"],
                registry=registry,
            ),
            connections_refused=Counter(
                "carehook_connections_refused_total",
                "Connections closed by the server guard, by reason",
                ["reason"],
                registry=registry,
            ),
            causes=Counter(
                "carehook_request_causes_total",
                "Refused webhook requests by source, outcome and cause",
                ["source", "outcome", "cause"],
                registry=registry,
            ),
            verification_failures=Counter(
                "carehook_verification_failures_total",
                "Signature verification failures by source and reason",
                ["source", "reason"],
                registry=registry,
            ),
            admin_refused=Counter(
                "carehook_admin_auth_refused_total",
                "Admin tokens refused (a sign-in or a bearer), by surface and reason",
                ["surface", "reason"],
                registry=registry,
            ),
        )


#: label children per metric are capped (a cause is bounded, but a bug must not explode them)
_MAX_CHILDREN = 2000


def cause_label(cause: str) -> str:
    """A request cause as a metric label: signature reasons whole (short codes), other causes
    by kind only (``payload:<field path>`` becomes ``payload``), so labels stay few."""
    if cause.startswith("signature:"):
        return cause[:64]
    return cause.split(":", 1)[0][:64]


def destination_of(step: str) -> str:
    """The destination a step talks to, from its name: ``forward.portal`` → ``portal``,
    ``ehr.note.document`` → ``ehr``, ``alert.clinical`` → ``clinical``; ``-`` when local."""
    head, _, rest = step.partition(".")
    if head in ("forward", "alert", "notify", "retry"):
        return rest or head
    return head if head in ("ehr", "cache", "transcript") else "-"


@dataclass(slots=True)
class StepMetrics:
    """Step run time and failures by step and destination (label children cached)."""

    seconds: Histogram
    failures: Counter
    _children: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @classmethod
    def create(cls, registry: CollectorRegistry) -> StepMetrics:
        """The step metrics on ``registry``."""
        labels = ["step", "destination"]
        return cls(
            seconds=Histogram("carehook_step_duration_seconds",
                              "Run time of one workflow step, by step and destination", labels,
                              buckets=(0.001, 0.005, 0.025, 0.1, 0.25, 1.0, 5.0, 30.0),
                              registry=registry),
            failures=Counter("carehook_step_failures_total",
                             "Workflow steps that raised, by step and destination", labels,
                             registry=registry),
        )  # fmt: skip

    def observe(self, step: str, seconds: float, failed: bool) -> None:
        """Record one step run."""
        child = self._children.get(step)
        if child is None:
            dest = destination_of(step)
            child = (self.seconds.labels(step, dest), self.failures.labels(step, dest))
            self._children[step] = child
        child[0].observe(seconds)
        if failed:
            child[1].inc()


@dataclass(slots=True)
class StoreGauges:
    """Gauges read from the store on a scrape: events by status, queue depth, the oldest
    waiting event's age, dead letters. Refreshed at most every ``interval`` seconds, so a
    scrape storm costs the store one pair of aggregate queries per interval."""

    events: Gauge
    queue_depth: Gauge
    oldest_waiting: Gauge
    dead_letters: Gauge
    interval: float = 5.0
    _at: float = float("-inf")

    @classmethod
    def create(cls, registry: CollectorRegistry, interval: float = 5.0) -> StoreGauges:
        """The store gauges on ``registry``."""
        return cls(
            events=Gauge("carehook_events", "Stored events by status", ["status"],
                         registry=registry),
            queue_depth=Gauge("carehook_queue_depth", "Events pending or retrying",
                              registry=registry),
            oldest_waiting=Gauge("carehook_oldest_waiting_seconds",
                                 "Age of the oldest pending or retrying event (0: none)",
                                 registry=registry),
            dead_letters=Gauge("carehook_dead_letters", "Dead events", registry=registry),
            interval=interval,
        )  # fmt: skip

    async def refresh(self, reads: StatusReads) -> None:
        """Read the store again unless the last read is younger than ``interval``."""
        now = time.monotonic()
        if now - self._at < self.interval:
            return
        self._at = now
        counts = await reads.status_counts()
        oldest = await reads.oldest_waiting()
        for status in EVENT_STATUSES:
            self.events.labels(status).set(counts.get(status, 0))
        self.queue_depth.set(counts.get("pending", 0) + counts.get("retrying", 0))
        self.dead_letters.set(counts.get("dead", 0))
        age = 0.0 if oldest is None else (datetime.now(UTC) - oldest).total_seconds()
        self.oldest_waiting.set(max(age, 0.0))


class StatusReads(Protocol):
    """What :class:`StoreGauges` reads (a part of :class:`carehook.inbox.reads.AdminReads`)."""

    async def status_counts(self) -> dict[str, int]:
        """Events per status."""
        ...

    async def oldest_waiting(self) -> datetime | None:
        """The oldest pending or retrying event's receipt time."""
        ...
