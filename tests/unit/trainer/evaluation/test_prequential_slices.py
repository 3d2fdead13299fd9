"""The per-slice popularity reference of the prequential report: each slice of the stream is
compared with popularity on the same scored rows (not with the run's overall figure)."""

from __future__ import annotations

import pytest

from trainer.evaluation.prequential import Scored, aggregate, popularity_reference, slice_reference


def test_each_slice_gets_the_reference_of_its_own_rows() -> None:
    past = ["p", "p", "p", "q", "q"]
    users = ["a", "b", "a", "b"]
    stream = ["x0", "x1", "x2", "x3"]
    future = {"a": ["x0", "x2", "p"], "b": ["x1", "x3", "q"]}
    rows = [Scored("a", 1, 0, "1", 0.5), Scored("b", 1, 1, "1", 0.5),
            Scored("a", 2, 2, "2", 0.9), Scored("b", 2, 3, "2", 0.1)]  # fmt: skip
    at: dict[int, float] = {}
    by_k = popularity_reference(
        past_items=past, stream_items=stream, users=users, rows=rows, future=future,
        per_position=at,
    )  # fmt: skip
    assert sorted(at) == [0, 1, 2, 3]
    assert sorted(by_k[1] + by_k[2]) == sorted(at.values())  # the same values, by position
    agg = aggregate(rows, n_stream=4, buckets=2)
    slice_reference(agg["over_time"], at)
    first, second = agg["over_time"]
    assert first["reference_popularity"] == pytest.approx(round((at[0] + at[1]) / 2, 5))
    assert second["reference_popularity"] == pytest.approx(round((at[2] + at[3]) / 2, 5))
    assert first["n"] == second["n"] == 2


def test_a_slice_without_rows_has_no_reference() -> None:
    agg = aggregate([Scored("a", 1, 0, "1", 0.5)], n_stream=4, buckets=2)
    slice_reference(agg["over_time"], {0: 0.3})
    assert [r["reference_popularity"] for r in agg["over_time"]] == [0.3, None]
