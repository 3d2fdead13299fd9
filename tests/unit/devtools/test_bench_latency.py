"""``coldstream bench latency``: the grid it sweeps and how it picks a setting."""

from __future__ import annotations

from devtools.bench.latency import best_rows, grid


def test_in_flight_is_swept_under_at_least_once_only() -> None:
    settings = grid(["at_least_once", "exactly_once"], [1.0, 5.0], [1, 4])
    alo = [s for s in settings if s["processing_guarantee"] == "at_least_once"]
    eos = [s for s in settings if s["processing_guarantee"] == "exactly_once"]
    assert len(alo) == 4 and {s["max_uncommitted_batches"] for s in alo} == {1, 4}
    assert len(eos) == 2 and {s["max_uncommitted_batches"] for s in eos} == {1}
    assert {s["batch_window_ms"] for s in eos} == {1.0, 5.0}


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
