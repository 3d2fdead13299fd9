"""Fault scenarios against real brokers: nothing lost, duplicates bounded, clear failures.

The scenarios live in ``devtools.faults`` (``coldstream bench faults`` runs the same code
on larger streams); here they run on small streams and every figure is asserted.
"""

from __future__ import annotations

import json
import time

from devtools import faults


def _show(r: faults.FaultResult) -> str:
    d = dict(r.details)
    d.pop("log_tail", None)
    return json.dumps({**r.row(), "details": d}, default=str)[:3000]


def test_kill9_then_restart_loses_nothing_and_keeps_sessions(harness):
    r = faults.kill9(harness, n_events=600, n_users=30, rate=200.0)
    assert r.lost == 0, _show(r)
    assert r.outputs >= r.events_in and r.dlq == 0, _show(r)
    assert r.duplicated <= r.details["duplicate_bound"], _show(r)
    assert r.details["session_mismatches"] == 0, _show(r)  # no entry twice, none missing
    assert r.details["order_violations"] == 0, _show(r)
    assert r.recovery_seconds is not None and r.recovery_seconds < 60, _show(r)


def test_sigterm_drains_commits_and_exits_zero_within_budget(harness):
    r = faults.sigterm(harness, n_events=600, n_users=30, rate=200.0)
    assert r.details["exit_code"] == 0, _show(r)
    # deploy/k8s: grace 60 s = preStop 5 s + drain budget 30 s + margin
    assert r.details["drain_seconds"] < 30, _show(r)
    assert r.lost == 0, _show(r)
    assert r.duplicated == 0, _show(r)  # everything answered was committed
    assert r.details["order_violations"] == 0, _show(r)


def test_rebalance_under_load_keeps_order_and_loses_nothing(harness):
    r = faults.rebalance(harness, n_events=10_000, n_users=60, rate=100.0, tail_events=300)
    assert r.lost == 0, _show(r)
    assert r.details["order_violations"] == 0, _show(r)
    assert r.details["leaver_exit_code"] == 0, _show(r)
    assert r.details["others_alive"], _show(r)
    assert r.details["sent_when_left"] < r.events_in, "the leave happened after the stream ended"


def test_kafka_broker_restart_is_survived(kafka_broker_factory, harness_factory):
    broker = kafka_broker_factory()
    h = harness_factory(broker.bootstrap)
    r = faults.broker_restart(h, broker, n_events=600, n_users=30, rate=100.0, down_s=4.0)
    assert r.details["worker_alive"] and r.details["worker_starts"] == 1, _show(r)  # no crash loop
    assert r.lost == 0, _show(r)
    assert r.details["order_violations"] == 0, _show(r)


def test_tansu_restart_is_survived_without_crash_loop(harness_factory):
    from devtools.brokers import TansuBroker

    broker = TansuBroker().start()
    try:
        h = harness_factory(broker.bootstrap)
        r = faults.tansu_restart(h, broker, n_events=200)
        # Tansu's memory storage loses everything on restart (README): only events sent after
        # the restart can be answered, and they must be.
        assert r.details["worker_alive"] and r.details["worker_starts"] == 1, _show(r)
        assert r.lost == 0, _show(r)
    finally:
        h.close()
        broker.close()


def test_bad_input_through_a_worker(harness):
    # 300 of 800 refused: under the breaker's 50% (the breaker has its own test)
    r = faults.bad_input(harness, n_bad=300, n_good=500)
    assert r.details["worker_alive"], _show(r)
    assert r.lost == 0 and r.duplicated == 0, _show(r)
    assert r.details["rejected_not_in_dlq_with_reason"] == 0, _show(r)
    assert r.details["dlq_not_expected"] == 0, _show(r)
    assert r.details["unknown_reasons"] == [], _show(r)
    assert len(r.details["reasons"]) >= 10, _show(r)


def test_dlq_breaker_stops_with_a_clear_message(harness):
    r = faults.dlq_breaker(harness, n_events=600, bad_share=0.9)
    assert r.details["exit_code"] == 3, _show(r)
    assert r.details["message"], _show(r)
    assert r.lost == 0, _show(r)  # every committed input has its output
    assert r.details["unread"] > 0, _show(r)  # it stopped instead of dead-lettering everything
    assert r.recovery_seconds is not None and r.recovery_seconds < 60, _show(r)


def test_burst_100x_bounded_memory_and_drained(harness):
    r = faults.burst(harness, steady_rate=20.0, steady_s=3.0, burst_factor=100, burst_s=1.5)
    assert r.lost == 0, _show(r)
    assert r.recovery_seconds is not None and r.recovery_seconds < 60, _show(r)
    # bounded: the burst (3,000 events) may not grow the worker by more than 300 MB
    assert r.details["rss_peak_mb"] - r.details["rss_before_mb"] < 300, _show(r)


def test_forget_a_user(harness):
    r = faults.forget(harness, n_users=4)
    assert r.details["problems"] == [], _show(r)
    assert r.lost == 0 and r.dlq == 0, _show(r)


def test_hostile_checkpoints_are_refused_before_allocating(tmp_path):
    t = time.monotonic()
    r = faults.hostile_checkpoint(tmp_path)
    results = {a["attack"]: a.get("result") for a in r.details["attacks"]}
    assert results == {
        "oversize_file": "too_large",
        "absurd_config": "shape_mismatch",
        "path_escape": "path_escape",
    }, _show(r)
    # the absurd config asks for ~1.9e9 parameters (~7 GB): peak RSS may grow by < 256 MB
    assert r.details["max_rss_growth_mb"] < 256, _show(r)
    assert time.monotonic() - t < 120
