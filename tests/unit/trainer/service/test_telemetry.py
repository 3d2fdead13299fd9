"""The trainer's Prometheus metrics: the names of docs/architecture.md, primed outcomes, a cycle's gauges."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from trainer.service.gate import GateResult
from trainer.service.telemetry import TrainerMetrics


def test_metric_names_and_primed_outcomes():
    m = TrainerMetrics()
    for outcome in ("promoted", "rejected", "failed"):  # primed at 0 before any cycle
        assert (
            m.registry.get_sample_value("coldstream_trainer_cycles_total", {"outcome": outcome})
            == 0.0
        )
    m.cycles.labels("promoted").inc()
    m.new_items.inc(2)
    from prometheus_client import generate_latest

    text = generate_latest(m.registry).decode()
    for name in (
        "coldstream_trainer_cycles_total",
        "coldstream_trainer_cycle_seconds",
        "coldstream_trainer_distill_loss",
        "coldstream_trainer_topk_agreement",
        "coldstream_trainer_model_age_seconds",
        "coldstream_trainer_buffer_events",
        "coldstream_trainer_new_items_total",
        "coldstream_trainer_gate_ndcg",
    ):
        assert name in text, name
    assert json.dumps(m.registry.get_sample_value("coldstream_trainer_new_items_total")) == "2.0"


def test_record_cycle_sets_the_gauges_of_the_last_cycle():
    m = TrainerMetrics()
    get = m.registry.get_sample_value
    g = GateResult(promote=True, candidate_ndcg=0.31, current_ndcg=0.25, margin=0.01, n_users=40)
    m.record_cycle(
        SimpleNamespace(
            seconds=12.5, gate=g, metrics={"distill_loss": 0.7, "topk_agreement@10": 0.4}
        )
    )
    assert get("coldstream_trainer_cycle_seconds_count") == 1.0
    assert get("coldstream_trainer_cycle_seconds_sum") == pytest.approx(12.5)
    assert get("coldstream_trainer_distill_loss") == pytest.approx(0.7)
    assert get("coldstream_trainer_topk_agreement") == pytest.approx(0.4)
    assert get("coldstream_trainer_gate_ndcg", {"model": "candidate"}) == pytest.approx(0.31)
    assert get("coldstream_trainer_gate_ndcg", {"model": "current"}) == pytest.approx(0.25)
    # a cycle without KD: no agreement measured, the last value stays; the loss reads 0
    m.record_cycle(SimpleNamespace(seconds=1.0, gate=g, metrics={}))
    assert get("coldstream_trainer_topk_agreement") == pytest.approx(0.4)
    assert get("coldstream_trainer_distill_loss") == 0.0
    assert (
        get("coldstream_trainer_cycles_total", {"outcome": "promoted"}) == 0.0
    )  # the caller's to count
