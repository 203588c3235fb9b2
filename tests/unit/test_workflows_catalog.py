"""The router: every event type the issues give a workflow gets its own, not record-only."""

from __future__ import annotations

import pytest

from carehook.vendors import builtin_vendors
from carehook.workflows import RECORD_ONLY
from carehook.workflows.catalog import ForwardRoute, WorkflowConfig, build_router
from carehook.workflows.ports import Services

#: handled types that only record their subject's state
RECORD_ONLY_TYPES = {("standard-webhooks", t) for t in builtin_vendors()["standard-webhooks"]
                     .event_types}  # fmt: skip


CATALOG = [(v.name, t) for v in builtin_vendors().values() for t in v.event_types]


@pytest.mark.parametrize(
    ("vendor", "event_type"), [pair for pair in CATALOG if pair not in RECORD_ONLY_TYPES]
)
def test_every_catalog_type_has_its_own_workflow(vendor: str, event_type: str) -> None:
    """Each vendor event type of the catalog routes to a workflow other than record-only."""
    workflow = build_router(WorkflowConfig(), Services()).route(vendor, event_type)
    assert workflow is not None
    assert workflow is not RECORD_ONLY
    assert workflow.steps


def test_transcript_available_files_the_transcript_and_tracks_the_lifecycle() -> None:
    """Healthie's transcript_available runs the lifecycle step, the transcript path and files
    the AI scribe's note."""
    workflow = build_router(WorkflowConfig(), Services()).route(
        "healthie", "appointment.transcript_available")
    assert workflow is not None
    assert [s.name for s in workflow.steps] == [
        "healthie.lifecycle", "transcript.fetch", "ehr.transcript", "ehr.note"]


def test_a_forward_route_appends_its_step_to_matching_events_only() -> None:
    """A route for deepconsult.* adds forward.<to> after the consult's own steps."""
    config = WorkflowConfig(routes=(ForwardRoute("oe", "deepconsult.*", "cache"),))
    router = build_router(config, Services())
    matched = router.route("openevidence", "deepconsult.progress", "oe")
    other = router.route("openevidence", "query.completed", "oe")
    assert matched is not None
    assert other is not None
    assert matched.steps[-1].name == "forward.cache"
    assert all(not s.name.startswith("forward.") for s in other.steps)
