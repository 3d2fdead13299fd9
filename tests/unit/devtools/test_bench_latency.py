"""``coldstream bench latency``: the grid it sweeps, how it picks a setting, and the worker
counts its rows are computed from."""

from __future__ import annotations

import os
import time

from devtools.bench.latency import best_rows, grid
from devtools.bench.pipeline import batches, cpu_seconds, processed


def test_in_flight_is_swept_under_at_least_once_only() -> None:
    settings = grid(["at_least_once", "exactly_once"], [1.0, 5.0], [1, 4])
    alo = [s for s in settings if s["processing_guarantee"] == "at_least_once"]
    eos = [s for s in settings if s["processing_guarantee"] == "exactly_once"]
    assert len(alo) == 4 and {s["max_uncommitted_batches"] for s in alo} == {1, 4}
    assert len(eos) == 2 and {s["max_uncommitted_batches"] for s in eos} == {1}
    assert {s["batch_window_ms"] for s in eos} == {1.0, 5.0}
    assert {s["fetch_min_bytes"] for s in settings} == {None}  # not swept: the worker's default


def test_fetch_minimum_is_swept_for_both_guarantees() -> None:
    settings = grid(["at_least_once", "exactly_once"], [5.0], [1, 4], [1, 16384])
    assert len(settings) == 2 * 2 + 2
    for g in ("at_least_once", "exactly_once"):
        assert {s["fetch_min_bytes"] for s in settings if s["processing_guarantee"] == g} == {
            1,
            16384,
        }
    assert len({tuple(sorted(s.items())) for s in settings}) == len(settings)


def _row(g: str, window: float, rate: float, p99: float, answered: int = 100) -> dict:
    return {
        "processing_guarantee": g,
        "batch_window_ms": window,
        "max_uncommitted_batches": 1,
        "rate": rate,
        "achieved_events_per_s": rate,
        "events": 100,
        "answered": answered,
        "latency_ms": {"p50": p99 / 2, "p99": p99},
    }


def test_best_is_the_lowest_p99_among_settings_that_kept_up() -> None:
    rows = [
        _row("at_least_once", 1.0, 1000, 30.0),
        _row("at_least_once", 5.0, 1000, 20.0),
        _row("at_least_once", 0.5, 1000, 5.0, answered=90),  # fell behind: not eligible
        _row("exactly_once", 5.0, 1000, 80.0),
    ]
    best = best_rows(rows)
    assert [(b["processing_guarantee"], b["batch_window_ms"]) for b in best] == [
        ("at_least_once", 5.0),
        ("exactly_once", 5.0),
    ]


METRICS = """\
# HELP coldstream_events_total Events processed
# TYPE coldstream_events_total counter
coldstream_events_total{type="click"} 900.0
coldstream_events_total{type="purchase"} 100.0
# HELP coldstream_batch_size Events per micro-batch
# TYPE coldstream_batch_size histogram
coldstream_batch_size_bucket{le="1.0"} 3.0
coldstream_batch_size_count 125.0
coldstream_batch_size_sum 1000.0
"""


def test_the_worker_counts_are_read_from_its_metrics() -> None:
    # events: every label of the counter; batches: the batch-size histogram's count only
    assert processed(METRICS) == 1000.0
    assert batches(METRICS) == 125.0
    assert processed("") == batches("") == 0.0


def test_cpu_seconds_counts_this_process_working() -> None:
    before = cpu_seconds(os.getpid())
    t = time.process_time()
    while time.process_time() - t < 0.3:  # busy for 0.3 s of CPU
        pass
    spent = cpu_seconds(os.getpid()) - before
    assert 0.2 <= spent <= 5.0
