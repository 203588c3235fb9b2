"""Which workflow each (vendor, event type) runs, built from the configuration and services.

The composition root calls :func:`build_router` once; each vendor's module contributes the
workflows it owns as a mapping ``(vendor, event type) -> Workflow``. Handled types that no
module claims record their subject's state (``RECORD_ONLY``). Configured forward routes add
a ``forward.<destination>`` step to the end of every matching event's workflow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from carehook.workflows import RECORD_ONLY, ExtraSteps, Router, Workflow
from carehook.workflows.ports import Services


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """What workflows read of a source's settings."""

    vendor: str
    quality_threshold: float = 0.7
    review_cooldown_hours: float = 24.0


@dataclass(frozen=True, slots=True)
class ForwardRoute:
    """``[[routes]]``: events of ``source`` whose type matches the glob ``events`` go ``to``."""

    source: str
    events: str
    to: str


@dataclass(frozen=True, slots=True)
class WorkflowConfig:
    """The configuration workflows see (pure values, built from Settings by bootstrap)."""

    sources: Mapping[str, SourceOptions] = field(default_factory=dict)
    routes: tuple[ForwardRoute, ...] = ()

    def options(self, source: str) -> SourceOptions:
        """A source's options (defaults for a source no longer configured)."""
        return self.sources.get(source) or SourceOptions(vendor="")


WorkflowTable = Mapping[tuple[str, str], Workflow]
#: what each vendor module exposes as ``workflows(config, services)``
Contributor = Callable[[WorkflowConfig, Services], WorkflowTable]


def build_router(config: WorkflowConfig, services: Services) -> Router:
    """The router over every vendor's workflows, plus the configured forward routes."""
    table: dict[tuple[str, str], Workflow] = {}
    for contribute in contributors():
        table.update(contribute(config, services))
    return Router(table, fallback=RECORD_ONLY, extra=forward_steps(config, services))


def contributors() -> tuple[Contributor, ...]:
    """Every module's ``workflows`` function (imported here, not at module level, so the
    modules may import this one for the config types)."""
    from carehook.workflows import care, healthie_lifecycle, notes, openevidence, transcripts

    # later entries win: the transcript workflow owns transcript_available
    return (care.workflows, openevidence.workflows, healthie_lifecycle.workflows,
            notes.workflows, transcripts.workflows)  # fmt: skip


def forward_steps(config: WorkflowConfig, services: Services) -> ExtraSteps | None:
    """The forward routes' steps by (source, type); None while no route is configured."""
    from carehook.workflows import forward

    return forward.forward_steps(config, services)
