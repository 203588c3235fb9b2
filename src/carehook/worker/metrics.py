"""The worker's Prometheus metrics, registered on the process's one registry.

Kept apart from :class:`carehook.observability.Metrics` (the ingress's) so that each half of the
process owns its metrics; both share the registry that ``/metrics`` renders.

    carehook_worker_events_total{source, outcome}    done, retrying, dead, lease_lost, released
    carehook_worker_receive_to_done_seconds{source}  from receipt to ``done``
    carehook_worker_step_seconds{outcome}            one step's run: ok, skipped, refused, error
    carehook_worker_in_flight                        events being worked on now
    carehook_worker_gave_way_total                   claims held back for a busy ingress
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from carehook.observability import StepMetrics

#: receive-to-done spans milliseconds (a quiet gateway) to hours (a destination down)
_LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
    3600.0, 21600.0,
)  # fmt: skip
_STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0)


@dataclass(frozen=True, slots=True)
class WorkerMetrics:
    """Counters and histograms of the worker."""

    events: Counter
    receive_to_done: Histogram
    step_seconds: Histogram
    in_flight: Gauge
    gave_way: Counter
    #: step run time and failures by step and destination
    steps: StepMetrics | None = None

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> WorkerMetrics:
        """The worker's metrics on ``registry`` (a private one when None: tests, benchmarks)."""
        reg = CollectorRegistry() if registry is None else registry
        return cls(
            events=Counter(
                "carehook_worker_events",
                "Event attempts finished by the worker, by source and outcome",
                ["source", "outcome"],
                registry=reg,
            ),
            receive_to_done=Histogram(
                "carehook_worker_receive_to_done_seconds",
                "Time from an event's receipt to its workflow being done",
                ["source"],
                buckets=_LATENCY_BUCKETS,
                registry=reg,
            ),
            step_seconds=Histogram(
                "carehook_worker_step_seconds",
                "Run time of one workflow step, by outcome",
                ["outcome"],
                buckets=_STEP_BUCKETS,
                registry=reg,
            ),
            in_flight=Gauge(
                "carehook_worker_in_flight", "Events the worker is working on now", registry=reg
            ),
            gave_way=Counter(
                "carehook_worker_gave_way",
                "Claims the in-process worker held back while the ingress was busy",
                registry=reg,
            ),
            steps=StepMetrics.create(reg),
        )

    def finished(self, source: str, outcome: str, receive_to_done: float | None = None) -> None:
        """Count one finished attempt; ``receive_to_done`` is given when the event is done."""
        self.events.labels(source, outcome).inc()
        if receive_to_done is not None:
            self.receive_to_done.labels(source).observe(max(receive_to_done, 0.0))
