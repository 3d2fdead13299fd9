"""Helpers of ``coldstream bench serve --items`` and ``bench recommend``: the same events on
every catalogue, the histories the worker had, recall against exact search, the report."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from coldstream.core.checkpoint import load_checkpoint
from devtools.bench.recommend import exact_recall
from devtools.bench.scale import (
    EventPlan,
    _floors,
    histories_at,
    index_metrics,
    output_order,
    phase_stats,
    served_recall,
    worker_rss_mb,
    zipf_ranks,
)
from devtools.checkpoints import catalogue_text, make_checkpoint, random_serving_model
from stream_app.index import IndexConfig
from stream_app.metrics import Metrics
from stream_app.recommender import Recommender


def test_zipf_ranks_are_common_random_numbers():
    u = np.random.default_rng(0).random(20_000)
    small, large = zipf_ranks(u, 1682), zipf_ranks(u, 1_000_000)
    assert small.max() <= 1681 and large.max() <= 999_999
    assert (small <= large).all()  # one draw: the same quantile, the same or a rarer item
    assert (small[u < 0.1] == 0).all() and (large[u < 0.1] == 0).all()  # the shared head
    assert (large < 1682).mean() > 0.6  # most events of the big catalogue hit its head too
    assert np.bincount(small)[0] > np.bincount(small)[100] > 0  # Zipf: the head is popular


def test_event_plan_lays_the_same_users_on_every_catalogue():
    plan = EventPlan(500, n_users=50, seed=1)
    a, b = plan.events(1682, "a"), plan.events(100_000, "b")
    assert [k for _, k, _ in a] == [k for _, k, _ in b]  # same users, same order
    assert [t for t, _, _ in a] == [t for t, _, _ in b]  # same clicks / purchases
    assert b'"event_id":"a-0"' in a[0][2] and b'"event_id":"b-499"' in b[-1][2]
    assert 0 < sum(t == "purchases" for t, _, _ in a) < 150


def test_histories_are_what_the_worker_had():
    plan = EventPlan(200, n_users=3, seed=2)
    items = plan.items(50)
    got = histories_at(plan, items, [0, 199], max_history=5)
    u = plan.users[199]
    mine = [i for i in range(200) if plan.users[i] == u]
    assert [x for x, _ in got[199]] == [items[i] for i in mine][-5:]
    assert [t for _, t in got[199]] == [int(plan.purchase[i]) for i in mine][-5:]
    assert got[0] == [(items[0], int(plan.purchase[0]))]
    swapped = list(range(200))  # the worker answered u's last two events the other way round
    a, b = mine[-2], mine[-1]
    swapped[a], swapped[b] = b, a
    again = histories_at(plan, items, [a], order=swapped, max_history=5)
    assert [x for x, _ in again[a]] == [items[i] for i in mine[:-2] + [b, a]][-5:]


def test_output_order_is_partition_then_offset():
    class R:
        def __init__(self, partition, offset, eid):
            self.topic, self.partition, self.offset = "recs", partition, offset
            self.value = json.dumps({"event_id": eid, "items": []}).encode()

    records = [R(1, 0, "x-5"), R(0, 1, "x-2"), R(0, 0, "x-9"), R(1, 1, "y-1")]
    assert output_order(records, "x") == [9, 2, 5]


def test_served_recall_against_exact_search(tmp_path):
    ck = load_checkpoint(make_checkpoint(tmp_path, n_items=300, dim=16, text_dim=8))
    hist = [[("1", 0), ("2", 1)], [("7", 0)]]
    exact = [[i for i, _ in ck.recommend(h, k=10)] for h in hist]
    assert served_recall(ck, hist, exact) == 1.0
    half = [e[:5] + ["299", "298", "297", "296", "295"] for e in exact]
    assert 0.45 <= served_recall(ck, hist, half) <= 0.75


def test_exact_recall_of_bench_recommend():
    m = random_serving_model(3000, 16, clusters=8, index=IndexConfig(kind="flat"))
    rec = Recommender(m)
    hist = [[str(i) for i in range(j, j + 5)] for j in range(0, 100, 5)]
    served = [[i for i, _ in r] for r in rec.recommend_batch(hist, 10)]
    assert exact_recall(rec, hist, served, 10) == 1.0
    assert exact_recall(rec, hist, [s[:3] for s in served], 10) == 0.3


def test_clustered_catalogue_text():
    rng = np.random.default_rng(0)
    x = catalogue_text(4000, 8, clusters=4, rng=rng)
    assert x.shape == (4000, 8) and x.dtype == np.float32
    spread = np.linalg.norm(x - x.mean(0), axis=1).mean()
    import faiss

    km = faiss.Kmeans(8, 4, niter=20, seed=1, nredo=3)
    km.train(x)
    _, labels = km.index.search(x, 1)
    within = np.linalg.norm(x - km.centroids[labels[:, 0]], axis=1).mean()
    assert within < 0.5 * spread  # topics, not one isotropic cloud


def test_worker_rss_and_index_metrics():
    rss, peak = worker_rss_mb(os.getpid())
    assert rss is not None and peak is not None and 0 < rss <= peak
    assert worker_rss_mb(2**22 + 12345) == (None, None)
    m = Metrics(CollectorRegistry())
    rec = Recommender(random_serving_model(30_000, 16, clusters=30))
    m.set_index(rec.model.index_report)
    info = index_metrics(m.exposition().decode())
    assert info["kind"] == "ivf" and int(info["nprobe"]) == rec.model.index_report.nprobe
    assert info["build_recall_at_10"] == round(rec.model.index_report.recall_at_10, 4)


def test_floors_against_the_smallest_size():
    rows = [
        {"items": 1682, "events_per_s": 10_000.0, "p99_ms": 40.0, "recall_at_10": 1.0},
        {"items": 1_000_000, "events_per_s": 4_000.0, "p99_ms": 120.0, "recall_at_10": 0.96},
    ]
    f = _floors(rows)
    assert f["throughput_fraction_of_smallest"] == 0.4
    assert f["throughput_at_least_30pct"] and not f["throughput_goal_50pct"]
    assert f["throughput_at_least_3000_ev_s"] and not f["p99_at_most_100ms"]
    assert f["recall_at_least_0_95"]
    assert _floors(rows[:1]) == {}


def test_phase_stats_of_a_worker_histogram():
    m = Metrics(CollectorRegistry())
    m.search.observe(0.5)  # before the phase
    before = m.exposition().decode()
    for v in [0.001] * 98 + [0.03, 0.2]:
        m.search.observe(v)
    after = m.exposition().decode()
    got = phase_stats(before, after, "coldstream_search_seconds")
    assert got["n"] == 100 and got["mean"] == pytest.approx((0.098 + 0.23) / 100 * 1000)
    assert got["p99_at_most"] == 50.0  # the 99th observation (30 ms) is in the <= 50 ms bucket
    assert phase_stats(after, after, "coldstream_search_seconds")["n"] == 0
