"""Online quality joins and the current-window popularity used by the fallback."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from devtools.checkpoints import make_checkpoint
from devtools.kafka_io import new_event
from stream_app.batch import BatchProcessor, Incoming
from stream_app.metrics import Metrics
from stream_app.online import OnlineQuality, WindowedCounter
from stream_app.recommender import Recommender
from stream_app.settings import Settings


def test_next_event_joined_to_previous_recommendation_per_version():
    m = Metrics(CollectorRegistry())
    q = OnlineQuality(window_s=10.0, metrics=m)
    q.step("u", "1", [("2", 1.0), ("3", 0.5)], "1", now=0.0)  # first event: nothing to join
    q.step("u", "3", [("4", 1.0)], "1", now=1.0)  # hit for v1
    q.step("u", "9", [("5", 1.0)], "2", now=2.0)  # miss for v1
    q.step("u", "5", [], "2", now=30.0)  # outside the window: not counted
    q.step("w", "5", [], "2", now=30.0)
    q.flush()
    reg = m.registry
    assert reg.get_sample_value("coldstream_online_requests_total", {"model_version": "1"}) == 2.0
    assert reg.get_sample_value("coldstream_online_hits_total", {"model_version": "1"}) == 1.0
    assert reg.get_sample_value("coldstream_online_requests_total", {"model_version": "2"}) is None
    assert q.hit_rate("1") == 0.5
    small = OnlineQuality(window_s=10.0, max_users=2)
    for u in "abc":
        small.step(u, "1", [("1", 1.0)], "1", now=0.0)
    small.step("a", "1", [], "1", now=1.0)  # "a" was forgotten (bounded memory)
    small.flush()
    assert small.requests["1"] == 0


def test_hit_rate_by_segment_of_the_previous_recommendation():
    """A next event counts in the segment of the recommendation it is checked against: a hit
    on a cold-start top-K is a cold hit, even though the user is warm by then."""
    m = Metrics(CollectorRegistry())
    q = OnlineQuality(window_s=10.0, metrics=m)
    q.step("u", "1", [("2", 1.0)], "1", now=0.0, cold=True)
    q.step("u", "2", [("3", 1.0)], "1", now=1.0, cold=False)  # hit on the cold top-K
    q.step("u", "9", [("4", 1.0)], "1", now=2.0, cold=False)  # miss on the warm top-K
    q.step("v", "1", [("2", 1.0)], "1", now=0.0, cold=True)
    q.step("v", "7", [], "1", now=1.0)  # miss on the cold top-K
    q.flush()
    reg = m.registry
    hits = "coldstream_online_segment_hits_total"
    reqs = "coldstream_online_segment_requests_total"
    assert reg.get_sample_value(reqs, {"segment": "cold"}) == 2.0
    assert reg.get_sample_value(hits, {"segment": "cold"}) == 1.0
    assert reg.get_sample_value(reqs, {"segment": "warm"}) == 1.0
    assert (reg.get_sample_value(hits, {"segment": "warm"}) or 0.0) == 0.0
    assert q.segment_requests == {"cold": 2, "warm": 1} and q.segment_hits == {"cold": 1}


def test_windowed_popularity_forgets_old_events():
    t = [0.0]
    c = WindowedCounter(60.0, buckets=6, clock=lambda: t[0])
    c.update(["old"] * 50)
    t[0] = 30.0
    c.update(["new"] * 5)
    assert c.most_common(1)[0][0] == "old" and c.total == 55
    t[0] = 65.0
    c.update(["new"])
    assert c.count("old") == 0 and c.count("new") == 6 and c.most_common(1) == [("new", 6)]
    assert c.total == 6  # the running total forgot the expired bucket too
    t[0] = 200.0
    assert c.total == 0 and c.most_common() == [] and len(c) == 0


def test_windowed_popularity_is_bounded_and_keeps_heavy_hitters():
    rng = np.random.default_rng(0)
    c = WindowedCounter(3600.0, buckets=4, clock=lambda: 0.0, capacity=50)
    heavy = ["h1"] * 3000 + ["h2"] * 2000 + ["h3"] * 1000
    tail = [f"t{i}" for i in rng.integers(0, 100_000, 60_000)]  # 100k distinct items
    events = np.array(heavy + tail, dtype=object)
    rng.shuffle(events)
    for chunk in np.array_split(events, 130):  # ~512-event micro-batches
        c.update(chunk.tolist())
    assert len(c) <= 4 * 2 * 50  # counters, whatever the number of distinct items
    assert [i for i, _ in c.most_common(3)] == ["h1", "h2", "h3"]
    assert c.total == len(events)
    err = c.total / 51  # Misra-Gries: under-counted by at most total / (capacity + 1)
    assert 3000 - err <= c.count("h1") <= 3000


def test_windowed_popularity_counts_a_user_once_per_item_and_bucket():
    t = [0.0]
    c = WindowedCounter(60.0, buckets=6, clock=lambda: t[0])
    c.update(["x"] * 100 + ["y", "y"], users=["bot"] * 100 + ["a", "b"])
    c.update(["x"], users=["bot"])  # the same pair later in the bucket: not counted
    assert c.most_common() == [("y", 2), ("x", 1)] and c.total == 3
    t[0] = 10.0  # the next bucket: one more
    c.update(["x", "x"], users=["bot", "bot"])
    assert c.count("x") == 2
    with pytest.raises(ValueError):
        c.update(["x"], users=[])


def test_pipeline_feeds_online_quality(tmp_path):
    rec = Recommender.from_checkpoint(
        make_checkpoint(tmp_path / "s", n_items=50), prefer_gpu_index=False
    )
    rec.popularity = WindowedCounter(3600.0)
    settings = Settings()
    sessions: dict = {}
    p = BatchProcessor(
        rec,
        settings,
        get_session=sessions.get,
        clock=lambda: 1000.0,
        online=OnlineQuality(window_s=60.0),
    )
    first = p.process([Incoming("clicks", 0, 0, b"u", new_event("u", "1", ts=999.0)[1], None)])
    top = [i for i, _ in rec.recommend_batch([["1"]], 10)[0]]
    sessions.update({u: h for u, (_, h) in first.sessions.items()})
    p.process([Incoming("clicks", 0, 1, b"u", new_event("u", top[0], ts=999.5)[1], None)])
    assert p.online.requests["1"] == 1 and p.online.hits["1"] == 1
    ghost = p.process([Incoming("clicks", 0, 2, b"g", new_event("g", "nope", ts=999.0)[1], None)])
    import json

    body = json.loads(ghost.recommendations[0][1])
    assert body["fallback"] == "popular" and body["items"][0]["item_id"] in ("1", top[0])
