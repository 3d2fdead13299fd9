"""Prometheus metrics of the trainer service, in one object built against its own registry.

Names follow ``docs/architecture.md`` (binding); ``coldstream trainer`` serves the registry
on ``metrics_port`` (:func:`trainer.service.loop.run`). The serving worker's metrics are
:mod:`stream_app.metrics`.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

CYCLE_OUTCOMES = ("promoted", "canary", "rejected", "failed")

CYCLE_SECONDS_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600)


class TrainerMetrics:
    """Trainer metrics (names in docs/architecture.md), own registry."""

    def __init__(self, registry: Any = None) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self.cycles = Counter(
            "coldstream_trainer_cycles",
            "Re-distillation cycles by outcome",
            ["outcome"],
            registry=r,
        )
        self.cycle_seconds = Histogram(
            "coldstream_trainer_cycle_seconds",
            "Duration of one cycle",
            buckets=CYCLE_SECONDS_BUCKETS,
            registry=r,
        )
        self.distill_loss = Gauge(
            "coldstream_trainer_distill_loss", "KD loss of the last cycle", registry=r
        )
        self.topk_agreement = Gauge(
            "coldstream_trainer_topk_agreement",
            "Teacher-student top-10 agreement on recent sessions",
            registry=r,
        )
        self.model_age = Gauge(
            "coldstream_trainer_model_age_seconds", "Age of the current model", registry=r
        )
        self.buffer_events = Gauge(
            "coldstream_trainer_buffer_events", "Events in the buffer", registry=r
        )
        self.new_items = Counter(
            "coldstream_trainer_new_items", "New items embedded and published", registry=r
        )
        self.gate_ndcg = Gauge(
            "coldstream_trainer_gate_ndcg",
            "Holdout NDCG@10 at the last gate",
            ["model"],
            registry=r,
        )
        self.records_skipped = Counter(
            "coldstream_trainer_records_skipped",
            "Input records the trainer skipped (malformed, oversize, bounds), by topic and reason",
            ["topic", "reason"],
            registry=r,
        )
        # labelled series exist at 0 before the first cycle (alerts and dashboards see them)
        for outcome in CYCLE_OUTCOMES:
            self.cycles.labels(outcome)

    def record_cycle(self, result: Any) -> None:
        """Gauges and histogram of a finished cycle (a :class:`trainer.service.redistill.CycleResult`);
        the outcome counter is the caller's (promotion needs the publish to succeed)."""
        self.cycle_seconds.observe(result.seconds)
        self.distill_loss.set(result.metrics.get("distill_loss", 0.0))
        if "topk_agreement@10" in result.metrics:
            self.topk_agreement.set(result.metrics["topk_agreement@10"])
        self.gate_ndcg.labels("candidate").set(result.gate.candidate_ndcg)
        self.gate_ndcg.labels("current").set(result.gate.current_ndcg)
