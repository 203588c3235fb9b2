"""OpenEvidence workflows (pure): the consult machine, windowed ops alerts, evidence deliveries,
the flagged-review cooldown."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from carehook.errors import Deferred
from carehook.workflows import StepContext
from carehook.workflows.catalog import SourceOptions, WorkflowConfig
from carehook.workflows.openevidence import days_left, revision_newer, workflows

from .test_workflows_care import NOW, PHI, Harness, services

REPORT = f"Report for {PHI}: start lisinopril 10 mg."


def consult(event_type: str, consult_id: str = "dc_1", **data: Any) -> dict[str, Any]:
    """A DeepConsult-revision payload."""
    return {"event": event_type, "data": {"consultId": consult_id, **data}}


def evidence(event_type: str, event_id: str, **data: Any) -> dict[str, Any]:
    """An evidence-revision payload."""
    return {"id": event_id, "type": event_type, "data": data}


def harness(*destinations: str, config: WorkflowConfig | None = None) -> Harness:
    """A harness over the OpenEvidence workflows with a notifier and these destinations."""
    s = services(*destinations)
    return Harness(workflows(config or WorkflowConfig(), s), s)


async def test_a_consult_moves_forward_and_ignores_a_late_lower_progress() -> None:
    """started → 40 → 80 → 40 (late, ignored) → completed: progress never moves backwards."""
    h = harness()
    outcomes = []
    for payload in (consult("deepconsult.started", estimatedTime=90),
                    consult("deepconsult.progress", progress=40),
                    consult("deepconsult.progress", progress=80),
                    consult("deepconsult.progress", progress=40)):
        outcomes.append((await h.send("openevidence", payload)).outcomes["consult.track"])
    assert outcomes[:3] == ["ok"] * 3
    assert outcomes[3] == "skipped: late progress 40% ignored: at 80%"
    record = h.data["openevidence:consult:dc_1"]["consult"]
    assert (record["status"], record["progress"]) == ("progress", 80)


async def test_completion_stores_the_report_and_notifies_the_requester_once() -> None:
    """completed: report kept in working data only; one requester notice, none for a repeat."""
    h = harness()
    first = await h.send("openevidence", consult("deepconsult.completed", report=REPORT))
    again = await h.send("openevidence", consult("deepconsult.completed", report="v2"))
    assert first.outcomes == {"consult.track": "ok", "notify.requester": "ok"}
    assert again.outcomes["notify.requester"] == "skipped: consult not completed by this event"
    data = h.data["openevidence:consult:dc_1"]
    assert (data["report"], data["consult"]["status"]) == (REPORT, "completed")
    [(channel, alert)] = h.sent()
    assert (channel, alert.facts) == ("requester", {"consult_id": "dc_1"})
    assert PHI not in repr(alert) + first.texts() + again.texts()


async def test_progress_after_completion_is_late_and_ignored() -> None:
    """completed before progress: the progress is ignored, the consult stays completed at 100."""
    h = harness()
    await h.send("openevidence", consult("deepconsult.completed", report=REPORT))
    run = await h.send("openevidence", consult("deepconsult.progress", progress=60))
    late = await h.send("openevidence", consult("deepconsult.started"))
    assert run.outcomes["consult.track"].startswith("skipped: late progress 60%")
    assert late.outcomes["consult.track"] == "skipped: late start ignored: consult completed"
    record = h.data["openevidence:consult:dc_1"]["consult"]
    assert (record["status"], record["progress"]) == ("completed", 100)
    timeline = late.results[0][1].timeline
    assert timeline is not None
    assert timeline.state == "completed"


@pytest.mark.parametrize(("retryable", "severity", "flag"), [(True, "warning", "true"),
                                                             (False, "high", "false"),
                                                             (None, "high", "unknown")])
async def test_a_failed_consult_alerts_ops_with_retryable(
    retryable: bool | None, severity: str, flag: str
) -> None:
    """failed: an ops alert whose severity and `retryable` fact follow the payload."""
    h = harness()
    run = await h.send("openevidence", consult("deepconsult.failed", retryable=retryable,
                                               error={"code": "TIMEOUT", "detail": PHI}))
    assert run.outcomes == {"consult.track": "ok", "alert.ops": "ok"}
    [(channel, alert)] = h.sent()
    assert (channel, alert.severity, alert.facts["retryable"]) == ("ops", severity, flag)
    assert alert.facts["error_code"] == "TIMEOUT"
    assert PHI not in repr(alert)


async def test_completion_after_a_failure_is_taken_but_failure_after_completion_is_not() -> None:
    """failed → completed (a retried consult) completes; a later failure alerts no one."""
    h = harness()
    await h.send("openevidence", consult("deepconsult.failed", retryable=True))
    done = await h.send("openevidence", consult("deepconsult.completed", report="r"))
    late = await h.send("openevidence", consult("deepconsult.failed", retryable=False))
    assert done.outcomes == {"consult.track": "ok", "notify.requester": "ok"}
    assert late.outcomes["alert.ops"] == "skipped: consult not failed by this event"
    assert [c for c, _ in h.sent()] == ["ops", "requester"]
    assert h.data["openevidence:consult:dc_1"]["consult"]["status"] == "completed"


async def test_rate_limit_warnings_alert_once_a_day_unless_remaining_halves() -> None:
    """100 → 80 (held) → 50 (halved: alerted) → 45 (held) → next day 45 (alerted)."""
    h = harness()
    outcomes = []
    for remaining, day in ((100, 0), (80, 0), (50, 0), (45, 0), (45, 1)):
        payload = {"event": "rate_limit.warning",
                   "data": {"remaining": remaining, "limit": 1000}}  # fmt: skip
        run = await h.send("openevidence", payload, NOW + timedelta(days=day, minutes=remaining))
        outcomes.append(run.outcomes["alert.ops"].split(":")[0])
    assert outcomes == ["ok", "skipped", "ok", "skipped", "ok"]
    assert [a.facts["remaining"] for _, a in h.sent()] == ["100", "50", "45"]


async def test_rate_limit_exhausted_is_high_and_not_repeated() -> None:
    """remaining 0 alerts high once; another 0 the same day is held back."""
    h = harness()
    payload = {"event": "rate_limit.warning", "data": {"remaining": 0, "limit": 10}}
    await h.send("openevidence", payload)
    again = await h.send("openevidence", {**payload, "created_at": "x"})
    assert again.outcomes["alert.ops"].startswith("skipped: alerted already on 2026-11-23")
    assert [a.severity for _, a in h.sent()] == ["high"]


async def test_api_key_expiry_alerts_once_per_day_and_key_unless_a_day_closer() -> None:
    """Same key twice in a day: one alert; a new expiry a day earlier or another key: alerted."""
    h = harness()
    soon = NOW + timedelta(days=14)

    async def warn(key: str, expires: Any, at: Any = NOW) -> str:
        payload = {"event": "api_key.expiring",
                   "data": {"keyId": key, "expiresAt": expires.isoformat()}}  # fmt: skip
        return (await h.send("openevidence", payload, at)).outcomes["alert.ops"].split(":")[0]

    assert await warn("key_1", soon) == "ok"
    assert await warn("key_1", soon, NOW + timedelta(hours=11)) == "skipped"
    assert await warn("key_2", soon) == "ok"
    assert await warn("key_1", soon - timedelta(hours=12)) == "skipped"
    assert await warn("key_1", soon - timedelta(days=1)) == "ok"
    assert await warn("key_1", soon, NOW + timedelta(days=1)) == "ok"
    assert [a.facts["days_left"] for _, a in h.sent()] == ["14", "14", "13", "13"]


async def test_a_key_that_expires_within_the_day_is_alerted_again() -> None:
    """Warned with an hour left, then warned again after expiry the same day: alerted (high)."""
    h = harness()
    payload = {"event": "api_key.expiring",
               "data": {"keyId": "k", "expiresAt": (NOW + timedelta(hours=1)).isoformat()}}
    await h.send("openevidence", payload)
    run = await h.send("openevidence", {**payload, "n": 2}, NOW + timedelta(hours=2))
    assert run.outcomes["alert.ops"] == "ok"
    assert [a.severity for _, a in h.sent()] == ["high", "high"]


def test_days_left_rounds_down_and_goes_negative() -> None:
    """Whole days until expiry, rounded down; an expired key has negative days left."""
    assert days_left(NOW + timedelta(days=2, hours=23), NOW) == 2
    assert days_left(NOW - timedelta(hours=1), NOW) == -1


async def test_a_completed_query_is_delivered_to_the_requester() -> None:
    """query.completed: the normalised event, action deliver_results, a stable message id."""
    h = harness("requester")
    run = await h.send("openevidence", evidence("query.completed", "oe_1", query_id="q_1",
                                                evidence_count=12, confidence=0.87))
    assert run.outcomes == {"deliver.requester": "ok"}
    [(message_id, body)] = h.calls("requester")
    assert message_id == "src:oe_1:requester"
    assert (body["action"], body["type"], body["data"]["data"]["query_id"]) == (
        "deliver_results", "query.completed", "q_1")


async def test_a_missing_destination_is_skipped_visibly() -> None:
    """query.completed without a requester destination: `skipped: not configured`."""
    run = await harness().send("openevidence", evidence("query.completed", "oe_1", query_id="q"))
    assert run.outcomes == {"deliver.requester": "skipped: not configured"}


async def test_a_failed_query_alerts_ops_then_redelivers_after_retry_after() -> None:
    """query.failed: ops alerted at once; the retry step waits out retry_after, then delivers."""
    h = harness("requester")
    item = h.item("openevidence", evidence("query.failed", "oe_2", query_id="q_2",
                                           error_code="UPSTREAM_TIMEOUT", retry_after=30))
    workflow = h.table["openevidence", "query.failed"]
    alert = await workflow.steps[0].run(StepContext(item=item, now=NOW))
    assert alert.outcome == "ok"
    assert h.sent()[0][1].facts["retry_after"] == "30.0"
    with pytest.raises(Deferred) as early:
        await workflow.steps[1].run(StepContext(item=item, now=NOW + timedelta(seconds=10)))
    assert early.value.until == item.received_at + timedelta(seconds=30)
    later = await workflow.steps[1].run(StepContext(item=item, now=NOW + timedelta(seconds=31)))
    assert later.outcome == "ok"
    [(message_id, body)] = h.calls("requester")
    assert (message_id, body["action"], body["retry_after"]) == ("src:oe_2:requester", "retry", 30)


async def test_a_failed_query_without_a_requester_does_not_wait() -> None:
    """No requester destination: the retry step is skipped at once instead of waiting."""
    run = await harness().send("openevidence", evidence("query.failed", "oe_3", query_id="q",
                                                        retry_after=3600))
    assert run.outcomes["retry.requester"] == "skipped: not configured"


async def test_older_evidence_revisions_are_ignored() -> None:
    """evidence.updated 5, 3 (older), 5 (same), 6: the cache is refreshed for 5 and 6 only."""
    h = harness("cache")
    outcomes = []
    for n, revision in enumerate((5, 3, 5, 6)):
        run = await h.send("openevidence", evidence("evidence.updated", f"e{n}",
                                                    topic_id="t_1", revision=revision))
        outcomes.append(run.outcomes["cache.refresh"])
    assert outcomes[0] == outcomes[3] == "ok"
    assert outcomes[1] == "skipped: revision 3 ignored: newest is 5"
    assert [b["data"]["data"]["revision"] for _, b in h.calls("cache")] == [5, 6]


@pytest.mark.parametrize(("new", "old", "newer"), [
    (10, 9, True), ("10", "9", True), (2, None, True), ("r10", "r2", True),
    ("r2", "r10", False), ("2026-02", "2026-01", True), (3, 3, False), ("b", "a", True)])
def test_revisions_compare_in_natural_order(new: Any, old: Any, newer: bool) -> None:
    """Digits compare as numbers (10 > 9, r10 > r2); text as text."""
    assert revision_newer(new, old) is newer


async def test_citations_are_indexed_and_withdrawn_and_never_reindexed() -> None:
    """added → index; retracted → withdraw; a late added after the retraction is ignored."""
    h = harness("knowledge-base")
    payload = {"citation_id": "c_1", "pubmed_id": "30000001", "journal": "J"}
    added = await h.send("openevidence", evidence("citation.added", "c1", **payload))
    retracted = await h.send("openevidence", evidence("citation.retracted", "c2", **payload))
    late = await h.send("openevidence", evidence("citation.added", "c3", **payload))
    assert added.outcomes == {"knowledge_base.index": "ok"}
    assert retracted.outcomes == {"knowledge_base.withdraw": "ok"}
    assert late.outcomes == {"knowledge_base.index": "skipped: index ignored: citation withdrawn"}
    assert [b["action"] for _, b in h.calls("knowledge-base")] == ["index", "withdraw"]


async def test_flagged_reviews_are_deduplicated_within_the_cooldown() -> None:
    """review.flagged twice within 24 h: one review, one alert; after 24 h a new review opens."""
    h = harness()
    flag = evidence("review.flagged", "r1", review_id="rev_1", flag_reason="outdated_guideline",
                    severity="high")
    first = await h.send("openevidence", flag)
    second = await h.send("openevidence", {**flag, "id": "r2"}, NOW + timedelta(hours=23))
    third = await h.send("openevidence", {**flag, "id": "r3"}, NOW + timedelta(hours=24))
    assert [r.outcomes["review.open"] for r in (first, second, third)] == [
        "ok", "skipped: cooldown", "ok"]
    assert second.outcomes["alert.clinical"] == "skipped: no review opened (cooldown)"
    review = first.results[0][1].review
    assert review is not None
    assert (review.kind, review.severity) == ("openevidence.review", "high")
    assert review.dedup_key == "src:review:rev_1"
    assert "outdated_guideline" in review.summary
    assert [(c, a.severity) for c, a in h.sent()] == [("clinical", "high")] * 2


async def test_the_cooldown_is_the_sources() -> None:
    """A source with a 1-hour cooldown opens a second review two hours later."""
    config = WorkflowConfig(sources={"src": SourceOptions("openevidence",
                                                          review_cooldown_hours=1)})
    h = harness(config=config)
    flag = evidence("review.flagged", "r1", review_id="rev_1", severity="low")
    await h.send("openevidence", flag)
    again = await h.send("openevidence", {**flag, "id": "r2"}, NOW + timedelta(hours=2))
    assert again.outcomes["review.open"] == "ok"


@pytest.mark.parametrize(("severity", "review_severity", "alerted"), [
    ("critical", "critical", True), ("high", "high", True), ("medium", "normal", False),
    (None, "normal", False)])
async def test_review_severity_drives_alerting(
    severity: str | None, review_severity: str, alerted: bool
) -> None:
    """critical/high flags alert clinical at that severity; others only open a normal review."""
    h = harness()
    run = await h.send("openevidence", evidence("review.flagged", "r", review_id="rev",
                                                severity=severity, flag_reason=f"{PHI} notes"))
    review = run.results[0][1].review
    assert review is not None
    assert review.severity == review_severity
    assert bool(h.sent()) is alerted
    assert PHI not in run.texts() + repr(h.sent())
