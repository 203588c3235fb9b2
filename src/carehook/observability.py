"""Structured logs with allowlisted fields only, and Prometheus metrics.

A log line may carry only the keys in :data:`ALLOWED_FIELDS`; any other key is dropped (and
counted in ``dropped_fields``) before rendering, so a careless ``log.info(..., body=...)`` can never
leak a payload, a name, an email, a secret or a signature. Exception tracebacks are not rendered:
their messages may quote input. Log the exception's class name as ``error_class`` instead.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

ALLOWED_FIELDS = frozenset(
    {
        "event", "level", "timestamp", "component",
        "source", "vendor", "event_id", "event_pk", "type", "subject", "status", "outcome",
        "cause", "reason", "remote_addr", "size", "duration_ms", "secret_index", "attempt",
        "error_class", "count", "host", "port", "path", "storage", "config", "workers",
        "dropped_fields",
        "task", "setting",
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
    _children: dict[tuple[str, str], tuple[Any, Any]] = field(default_factory=dict)

    def observe_request(self, source: str, outcome: str, seconds: float) -> None:
        """Count one answered delivery and its ack time (label lookups cached: hot path)."""
        child = self._children.get((source, outcome))
        if child is None:
            child = (self.requests.labels(source, outcome), self.ack_seconds.labels(outcome))
            self._children[(source, outcome)] = child
        child[0].inc()
        child[1].observe(seconds)

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
        )
