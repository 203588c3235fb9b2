"""Forward routes (pure): which destinations an event goes to, and what each receives."""

from __future__ import annotations

from carehook.workflows import RECORD_ONLY, Router, StepContext
from carehook.workflows.catalog import ForwardRoute, WorkflowConfig
from carehook.workflows.forward import destinations_for, forward_steps, normalised_event

from .test_workflows_care import NOW, FakeDestination, Harness, sample, services

ROUTES = (
    ForwardRoute("oe", "deepconsult.*", "team"),
    ForwardRoute("oe", "*", "audit"),
    ForwardRoute("oe", "deepconsult.completed", "team"),
    ForwardRoute("other", "*", "elsewhere"),
)


def test_routes_match_by_source_and_type_glob_each_destination_once() -> None:
    """deepconsult.completed of `oe` → team, audit (once each, in order); other sources apart."""
    assert destinations_for(ROUTES, "oe", "deepconsult.completed") == ("team", "audit")
    assert destinations_for(ROUTES, "oe", "query.completed") == ("audit",)
    assert destinations_for(ROUTES, "nabla", "deepconsult.completed") == ()
    assert destinations_for(ROUTES, "oe", "DEEPCONSULT.completed") == ("audit",)


def test_no_routes_means_no_extra_steps() -> None:
    """Without [[routes]] the router gets no forward hook at all."""
    assert forward_steps(WorkflowConfig(), services()) is None


def test_the_router_appends_one_forward_step_per_destination() -> None:
    """A routed event's workflow ends with forward.<destination> steps; unrouted events don't."""
    extra = forward_steps(WorkflowConfig(routes=ROUTES), services())
    router = Router({}, fallback=RECORD_ONLY, extra=extra)
    routed = router.route("openevidence", "deepconsult.started", "oe")
    assert routed is not None
    assert [s.name for s in routed.steps] == ["subject.record", "forward.team", "forward.audit"]
    assert router.route("nabla", "x", "nabla") is RECORD_ONLY


async def test_a_forward_step_posts_the_normalised_event_with_a_stable_message_id() -> None:
    """The destination gets {id, source, vendor, type, subject, occurred_at, received_at, data}."""
    s = services("team")
    [step] = forward_steps(WorkflowConfig(routes=ROUTES[:1]), s)("oe", "deepconsult.started")  # type: ignore[misc]
    item = Harness({}, source="oe").item("openevidence", sample("openevidence",
                                                                "deepconsult.started"))
    result = await step.run(StepContext(item=item, now=NOW))
    await step.run(StepContext(item=item, now=NOW))  # a retry of the same step
    assert (result.outcome, result.detail) == ("ok", "delivered to team: status 200")
    destination = s.destinations["team"]
    assert isinstance(destination, FakeDestination)
    [(first_id, body), (second_id, _)] = destination.calls
    assert first_id == second_id == f"oe:{item.event_id}:team"
    assert body == {"id": item.event_id, "source": "oe", "vendor": "openevidence",
                    "type": "deepconsult.started", "subject": "openevidence:consult:dc_000000",
                    "occurred_at": NOW.isoformat(), "received_at": NOW.isoformat(),
                    "data": dict(item.payload)}  # fmt: skip


async def test_a_route_to_a_destination_not_built_is_skipped_visibly() -> None:
    """A configured route whose destination is missing from services: `skipped: not configured`."""
    [step] = forward_steps(WorkflowConfig(routes=ROUTES[:1]), services())("oe", "deepconsult.x")  # type: ignore[misc]
    item = Harness({}, source="oe").item("openevidence", sample("openevidence",
                                                                "deepconsult.failed"))
    result = await step.run(StepContext(item=item, now=NOW))
    assert (result.outcome, result.detail) == ("skipped: not configured", "destination team")


def test_occurred_at_is_none_when_the_vendor_cannot_tell() -> None:
    """A payload without a time (Healthie's recording events) forwards occurred_at null."""
    payload = {"resource_id": 1, "resource_id_type": "Appointment",
               "event_type": "appointment.recording_started"}  # fmt: skip
    item = Harness({}).item("healthie", payload)
    assert normalised_event(item)["occurred_at"] is None
