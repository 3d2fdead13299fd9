"""Scoring of the prequential stream evaluation on hand-made streams (no broker)."""

from __future__ import annotations

import math

import pytest

from trainer.evaluation.prequential import (
    Scored,
    aggregate,
    popularity_reference,
    score_recommendations,
    stream_positions,
    truth_after,
)
from trainer.evaluation.reports import prequential_markdown as markdown


def _rec(items, version="1", fallback=None):
    return {
        "items": [{"item_id": i, "score": 1.0} for i in items],
        "model_version": version,
        "fallback": fallback,
    }


def test_positions_and_truth():
    assert stream_positions(["a", "b", "a", "a", "c", "b"]) == [1, 1, 2, 3, 1, 2]
    seq = [f"i{j}" for j in range(15)]
    assert truth_after(seq, 1) == seq[1:11]  # after the 1st event: events 2..11
    assert truth_after(seq, 5) == seq[5:15]
    assert truth_after(seq, 15) == [] and truth_after(seq, 3, n_next=2) == ["i3", "i4"]


# user "a": events x0..x6 in the stream, interleaved with "b" (not scored: seen in the past)
USERS = ["a", "b", "a", "a", "b", "a", "a", "a", "a"]
ITEMS = ["x0", "y0", "x1", "x2", "y1", "x3", "x4", "x5", "x6"]
FUTURE = {"a": ["x0", "x1", "x2", "x3", "x4", "x5", "x6"], "b": ["y0", "y1"]}
EIDS = [f"e{p}" for p in range(len(USERS))]


def test_score_joins_k_th_event_to_next_ten_with_exact_ndcg():
    recs = {
        "e0": _rec(["x1", "zz", "x2"]),  # after a's 1st event: hits at ranks 1 and 3
        "e2": _rec(["zz", "x2"], version="2"),  # after the 2nd: hit at rank 2
        "e3": _rec(["q1", "q2"]),  # after the 3rd: no hit
        "e6": _rec(["x5", "x6"]),  # after the 5th: truth = x5, x6: perfect
        "e1": _rec(["y1"]),  # user b is not scored
    }
    rows, counts = score_recommendations(
        users=USERS, event_ids=EIDS, future=FUTURE, recs=recs, scored_users={"a"}
    )
    by_k = {r.k: r for r in rows}
    assert set(by_k) == {1, 2, 3, 5} and all(r.user == "a" for r in rows)
    # truth after 1: x1..x6 (6 items): IDCG = sum_{r<6} 1/log2(r+2)
    idcg6 = sum(1 / math.log2(r + 2) for r in range(6))
    assert by_k[1].ndcg == pytest.approx((1 + 1 / 2) / idcg6)
    idcg5 = sum(1 / math.log2(r + 2) for r in range(5))
    assert by_k[2].ndcg == pytest.approx((1 / math.log2(3)) / idcg5) and by_k[2].version == "2"
    assert by_k[3].ndcg == 0.0
    assert by_k[5].ndcg == pytest.approx(1.0) and by_k[5].position == 6
    assert counts == {"missing": 0, "no_truth": 0, "excluded_possible_leak": 0}


def test_missing_and_no_truth_are_counted_not_scored():
    future = {
        "a": FUTURE["a"][:3],
        "b": FUTURE["b"],
    }  # a has 3 events in all: nothing after the 3rd
    recs = {"e2": _rec(["x2"])}  # only the 2nd event's recommendation arrived
    rows, counts = score_recommendations(
        users=USERS[:4], event_ids=EIDS[:4], future=future, recs=recs, scored_users={"a"}
    )
    assert [(r.k, r.ndcg) for r in rows] == [(2, 1.0)]
    assert counts["missing"] == 1 and counts["no_truth"] == 1  # k=1 missing, k=3 has no truth


def test_leak_guard_drops_versions_trained_after_the_truth_was_sent():
    sent = [float(p) for p in range(len(USERS))]  # event p sent at t = p
    recs = {
        "e0": _rec(["x1"], version="2"),
        "e2": _rec(["x2"], version="3"),
        "e3": _rec(["x3"], version="1"),
    }
    # v2 copied its buffer at t=1.5: the truth of a's 1st event starts at position 2 (t=2): fine.
    # v3 copied at t=4: the truth of a's 2nd event starts at position 3 (t=3): maybe trained on.
    rows, counts = score_recommendations(
        users=USERS,
        event_ids=EIDS,
        future=FUTURE,
        recs=recs,
        scored_users={"a"},
        sent_at=sent,
        snapshot_at={"2": 1.5, "3": 4.0},
    )
    assert sorted((r.k, r.version) for r in rows) == [(1, "2"), (3, "1")]
    assert counts["excluded_possible_leak"] == 1 and counts["missing"] == 1  # k=5 has no record


def test_aggregate_by_k_version_and_time():
    rows = [
        Scored("a", 1, 0, "1", 0.2),
        Scored("b", 1, 5, "2", 0.4),
        Scored("a", 2, 1, "1", 0.5),
        Scored("c", 5, 9, "2", 1.0),
    ]
    agg = aggregate(rows, n_stream=10, buckets=2, key_of={p: 100.0 + p for p in range(10)})
    assert agg["ndcg@10"] == {"after_1": 0.3, "after_2": 0.5, "after_3": None, "after_5": 1.0}
    assert agg["n_users"] == {"after_1": 2, "after_2": 1, "after_3": 0, "after_5": 1}
    assert list(agg["by_model_version"]) == ["1", "2"]
    assert agg["by_model_version"]["2"]["ndcg@10"]["after_1"] == 0.4
    assert agg["by_model_version"]["1"]["all"] == 0.35
    t0, t1 = agg["over_time"]
    assert (
        t0["positions"] == [0, 4]
        and t0["n"] == 2
        and t0["ndcg@10"] == 0.35
        and t0["versions"] == {"1": 2}
    )
    assert t1["versions"] == {"2": 2} and t1["dataset_time"] == [105.0, 109.0]


def test_popularity_reference_counts_only_the_past_and_excludes_seen():
    past = ["p", "p", "p", "q", "q", "x1"]
    users = ["a", "b", "a"]
    stream = ["x0", "x1", "x1"]
    future = {"a": ["x0", "x1", "q"], "b": ["x1"]}
    rows = [Scored("a", 1, 0, "1", 0.0), Scored("a", 2, 2, "1", 0.0)]
    got = popularity_reference(
        past_items=past, stream_items=stream, users=users, rows=rows, future=future
    )
    # after a's 1st event (x0): counts p3 q2 x1 1 x0 1 -> top (x0 excluded) p, q, x1; truth x1, q
    idcg2 = 1 + 1 / math.log2(3)
    assert got[1][0] == pytest.approx((1 / math.log2(3) + 1 / 2) / idcg2)
    # after a's 2nd (x1 seen, x1 now at 3 but excluded): truth = [q] -> q is 2nd after p
    assert got[2][0] == pytest.approx(1 / math.log2(3))


def test_markdown_renders_every_version():
    rows = [Scored("a", k, k, v, 0.1 * k) for k in (1, 2, 3, 5) for v in ("1", "2")]
    agg = aggregate(rows, n_stream=6, buckets=2)
    report = {
        **agg,
        "reference_popularity": {"ndcg@10": {f"after_{k}": 0.05 for k in (1, 2, 3, 5)}},
        "counts": {
            "stream_events_replayed": 6,
            "scored_users": 1,
            "scored_recommendations": 8,
            "missing": 0,
            "excluded_possible_leak": 0,
            "model_updates": 1,
        },
        "protocol": {"stream": {"of": 10, "rate_eps": 5.0}, "system": {"broker": "kafka"}},
        "timings_s": {"total_s": 1.0},
    }
    md = markdown(report)
    assert "| 1 |" in md and "| 2 |" in md and "0.5000" in md  # v2 after 5 = 0.5
