"""The operator service layer: one set of reads and actions under the CLI and the admin API."""

from __future__ import annotations

from carehook.operations.models import (
    DeadLetter,
    EventDetail,
    Overview,
    Page,
    SourceConfig,
    SourceStatus,
    Timeline,
)
from carehook.operations.service import (
    REPLAYABLE_STATUSES,
    OperationRefused,
    Operations,
    OperatorStore,
)
from carehook.settings import Settings

__all__ = [
    "REPLAYABLE_STATUSES", "DeadLetter", "EventDetail", "OperationRefused", "Operations",
    "OperatorStore", "Overview", "Page", "SourceConfig", "SourceStatus", "Timeline",
    "source_configs",
]  # fmt: skip


def source_configs(settings: Settings) -> list[SourceConfig]:
    """The configured sources as the service sees them (secret counts, never secrets)."""
    return [SourceConfig(name, cfg.vendor, f"/webhooks/{name}", tuple(cfg.ids()))
            for name, cfg in settings.sources.items()]  # fmt: skip
