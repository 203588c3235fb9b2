"""Abridge and Nabla care-team workflows (pure): alerts, the quality review, skipped channels.

Also home of the small harness the other workflow unit tests use: :class:`Harness` runs a
workflow's steps the way the worker does (the subject's working data threaded from step to
step and from event to event, results collected), over recording fakes of the ports.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from carehook.errors import RetryableError
from carehook.vendors import builtin_vendors
from carehook.workflows import StepContext, StepResult, Workflow, WorkItem
from carehook.workflows.care import workflows
from carehook.workflows.catalog import SourceOptions, WorkflowConfig
from carehook.workflows.ports import Alert, Delivery, Services

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
PHI = "CANARY-Jane-Q-Patient-7f3a"

# -- the harness -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeNotifier:
    """A Notifier recording what it was asked to send; ``failures`` raise in turn."""

    channels: frozenset[str] = frozenset({"clinical", "ops", "requester"})
    sent: list[tuple[str, Alert]] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)

    def configured(self, channel: str) -> bool:
        """Whether the channel has a target."""
        return channel in self.channels

    async def notify(self, channel: str, alert: Alert, *, skip: Collection[str] = ()) -> None:
        """Record (or fail)."""
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append((channel, alert))


@dataclass(frozen=True)
class FakeDestination:
    """A Destination recording each delivery: (message id, body)."""

    name: str
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def deliver(self, message_id: str, body: Mapping[str, Any], *,
                      timestamp: float | None = None) -> Delivery:  # fmt: skip
        """Record and answer 200."""
        self.calls.append((message_id, json.loads(json.dumps(body))))
        return Delivery(status=200, message_id=message_id)


def services(*destinations: str, notifier: FakeNotifier | None = None) -> Services:
    """Services with a recording notifier and the named recording destinations."""
    return Services(notifier=notifier if notifier is not None else FakeNotifier(),
                    destinations={n: FakeDestination(n) for n in destinations},
                    dashboard_url="https://carehook.example")  # fmt: skip


@dataclass
class Run:
    """What one event's workflow did: each step's result, in order."""

    results: list[tuple[str, StepResult]]

    @property
    def outcomes(self) -> dict[str, str]:
        """Step name -> outcome."""
        return {name: r.outcome for name, r in self.results}

    def texts(self) -> str:
        """Everything a step made visible outside the encrypted data (for PHI checks)."""
        parts = []
        for _, r in self.results:
            parts += [r.outcome, r.detail, repr(r.timeline), repr(r.review)]
        return "\n".join(parts)


@dataclass
class Harness:
    """Runs events through a workflow table like the worker: per-subject data threaded."""

    table: Mapping[tuple[str, str], Workflow]
    services: Services = field(default_factory=Services)
    source: str = "src"
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    pk: int = 0

    def item(self, vendor: str, payload: Mapping[str, Any], received_at: datetime = NOW,
             source: str | None = None) -> WorkItem:  # fmt: skip
        """A work item for ``payload``, id/type/subject read by the vendor as ingress does."""
        body = json.dumps(payload).encode()
        parsed = builtin_vendors()[vendor].parse(body, payload)
        self.pk += 1
        return WorkItem(pk=self.pk, source=source or self.source, vendor=vendor,
                        event_id=parsed.event_id, type=parsed.type, subject=parsed.subject,
                        attempts=1, received_at=received_at, payload=payload,
                        occurred_at=parsed.occurred_at)  # fmt: skip

    async def run(self, item: WorkItem, now: datetime | None = None) -> Run:
        """Run ``item``'s workflow to the end (a raising step propagates, nothing recorded)."""
        workflow = self.table[item.vendor, item.type]
        state: Mapping[str, Any] = self.data.get(item.subject, {}) if workflow.stateful else {}
        results = []
        for step in workflow.steps:
            result = await step.run(StepContext(item=item, now=now or item.received_at,
                                                state=state))  # fmt: skip
            results.append((step.name, result))
            if result.state is not None:
                state = result.state
                self.data[item.subject] = dict(result.state)
        return Run(results)

    def sent(self) -> list[tuple[str, Alert]]:
        """(channel, alert) pairs the fake notifier sent."""
        assert isinstance(self.services.notifier, FakeNotifier)
        return self.services.notifier.sent

    def calls(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        """(message id, body) pairs fake destination ``name`` received."""
        destination = self.services.destinations[name]
        assert isinstance(destination, FakeDestination)
        return destination.calls

    async def send(self, vendor: str, payload: Mapping[str, Any], received_at: datetime = NOW,
                   now: datetime | None = None) -> Run:  # fmt: skip
        """Build the item and run it."""
        return await self.run(self.item(vendor, payload, received_at), now)


def sample(vendor: str, event_type: str, seq: int = 0, **data: Any) -> dict[str, Any]:
    """The vendor's sample payload with ``data`` fields replaced."""
    payload = builtin_vendors()[vendor].sample(event_type, NOW, seq)
    if data:
        payload["data"] = {**payload["data"], **data}
    return payload


# -- the tests --------------------------------------------------------------------------------


async def test_a_failed_abridge_session_alerts_the_clinical_team_without_phi() -> None:
    """session.failed: one high alert to clinical with ids, status code and a dashboard link."""
    s = services()
    h = Harness(workflows(WorkflowConfig(), s))
    run = await h.send("abridge", sample("abridge", "encounter.session.failed", 4))
    assert run.outcomes == {"alert.clinical": "ok", "subject.record": "ok"}
    [(channel, alert)] = s.notifier.sent  # type: ignore[union-attr]
    assert (channel, alert.severity, alert.event_type) == ("clinical", "high",
                                                           "encounter.session.failed")
    assert alert.link == "https://carehook.example/dashboard/events/1"
    assert alert.facts == {"session_id": "ses_000004", "status": "audio_unintelligible"}
    assert run.results[1][1].timeline is not None


async def test_free_text_in_a_status_never_reaches_the_alert() -> None:
    """A status that is not a machine code (it could be anything) is left out of the alert."""
    s = services()
    h = Harness(workflows(WorkflowConfig(), s))
    await h.send("abridge", sample("abridge", "encounter.session.failed", status=f"{PHI} said"))
    [(_, alert)] = s.notifier.sent  # type: ignore[union-attr]
    assert PHI not in repr(alert)
    assert "status" not in alert.facts


@pytest.mark.parametrize("notifier", [None, FakeNotifier(channels=frozenset({"ops"}))])
async def test_an_unconfigured_channel_is_skipped_visibly(notifier: FakeNotifier | None) -> None:
    """No notifier, or no clinical targets: the alert step says `skipped: not configured`."""
    s = Services(notifier=notifier)
    h = Harness(workflows(WorkflowConfig(), s))
    run = await h.send("abridge", sample("abridge", "encounter.session.failed"))
    assert run.outcomes["alert.clinical"] == "skipped: not configured"


async def test_a_failing_notifier_makes_the_step_retry() -> None:
    """A notifier that could not send raises; the step is not recorded and runs again."""
    notifier = FakeNotifier(failures=[RetryableError("notify clinical: 1 of 1 targets failed")])
    h = Harness(workflows(WorkflowConfig(), services(notifier=notifier)))
    item = h.item("nabla", sample("nabla", "transcribe_async.failed"))
    with pytest.raises(RetryableError):
        await h.run(item)
    assert (await h.run(item)).outcomes["alert.clinical"] == "ok"


async def test_a_low_quality_score_opens_a_review_and_alerts() -> None:
    """quality.alert below 0.7: a high review item (ids and scores only) and a clinical alert."""
    s = services()
    h = Harness(workflows(WorkflowConfig(), s))
    run = await h.send("abridge", sample("abridge", "quality.alert", 2, quality_score=0.62))
    review = run.results[0][1].review
    assert review is not None
    assert (review.kind, review.severity) == ("abridge.quality", "high")
    assert "0.62 below threshold 0.70" in review.summary
    assert "ses_000002" in review.summary
    [(channel, alert)] = s.notifier.sent  # type: ignore[union-attr]
    assert channel == "clinical"
    assert alert.facts["quality_score"] == "0.62"


async def test_a_score_at_the_threshold_is_recorded_only() -> None:
    """quality.alert at 0.7: a timeline entry, no review item, the alert step skipped."""
    s = services()
    h = Harness(workflows(WorkflowConfig(), s))
    run = await h.send("abridge", sample("abridge", "quality.alert", quality_score=0.7))
    assert run.results[0][1].review is None
    assert run.results[0][1].timeline is not None
    assert run.results[0][1].timeline.state == "quality.ok"
    assert run.outcomes["alert.clinical"] == "skipped: score at or above threshold"
    assert s.notifier.sent == []  # type: ignore[union-attr]


async def test_the_threshold_is_the_sources() -> None:
    """A source configured with threshold 0.5 lets 0.62 pass; another source keeps 0.7."""
    config = WorkflowConfig(sources={"lenient": SourceOptions("abridge", quality_threshold=0.5)})
    h = Harness(workflows(config, services()))
    payload = sample("abridge", "quality.alert", quality_score=0.62)
    lenient = await h.run(h.item("abridge", payload, source="lenient"))
    strict = await h.run(h.item("abridge", payload, source="strict"))
    assert (lenient.results[0][1].review, strict.results[0][1].review is not None) == (None, True)


async def test_a_quality_alert_without_a_score_goes_to_a_human() -> None:
    """No quality_score: nobody can judge it, so it is reviewed and alerted."""
    payload = sample("abridge", "quality.alert")
    del payload["data"]["quality_score"]
    run = await Harness(workflows(WorkflowConfig(), services())).send("abridge", payload)
    assert run.results[0][1].review is not None
    assert run.outcomes["alert.clinical"] == "ok"


@pytest.mark.parametrize("event_type", ["generate_note_async.failed", "transcribe_async.failed"])
async def test_a_failed_nabla_job_alerts_clinical_with_codes_not_messages(event_type: str) -> None:
    """Nabla *.failed: a high clinical alert with job id, external id and error code only."""
    s = services()
    payload = sample("nabla", event_type, 5)
    payload["data"]["payload"]["error"]["message"] = f"Patient {PHI} audio"
    run = await Harness(workflows(WorkflowConfig(), s)).send("nabla", payload)
    assert run.outcomes == {"alert.clinical": "ok", "subject.record": "ok"}
    [(channel, alert)] = s.notifier.sent  # type: ignore[union-attr]
    assert (channel, alert.severity) == ("clinical", "high")
    assert alert.facts["job_id"] == payload["data"]["id"]
    assert alert.facts["error_code"] == payload["data"]["payload"]["error"]["code"]
    assert PHI not in repr(alert) + run.texts()


def test_the_module_claims_exactly_its_event_types() -> None:
    """care.workflows owns Abridge's session.failed and quality.alert and Nabla's failures."""
    assert set(workflows(WorkflowConfig(), Services())) == {
        ("abridge", "encounter.session.failed"), ("abridge", "quality.alert"),
        ("nabla", "generate_note_async.failed"), ("nabla", "transcribe_async.failed")}

