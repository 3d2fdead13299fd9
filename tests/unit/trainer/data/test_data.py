"""MovieLens loader (recbole package files) and the synthetic generator."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from trainer.data import item_text, load_movielens, tie_share
from trainer.data.synthetic import SyntheticConfig, synthetic_dataset, synthetic_events


@pytest.fixture(scope="module")
def ml():
    return load_movielens()


def test_movielens_shape_order_and_events(ml):
    inter, items = ml
    assert len(inter) == 100_000 and len(inter.user_ids) == 943 and len(items) == 1682
    assert "recbole" not in sys.modules  # located, never imported
    assert np.all(np.diff(inter.ts) >= 0)
    assert (
        items.ids[0] == "1" and items.texts[0] == "Toy Story (1995) - Animation, Children's, Comedy"
    )
    assert set(np.unique(inter.event)) == {0, 1}
    assert 0.5 < inter.event.mean() < 0.6  # share of ratings >= 4
    assert 0.7 < tie_share(inter) < 0.8
    seqs = inter.sequences()
    assert len(seqs) == 943 and min(len(s[0]) for s in seqs.values()) >= 20


def test_item_text_handles_unknowns():
    assert item_text("unknown", "", "unknown") == "Unknown title"
    assert item_text("Heat", "1995", "Action Crime") == "Heat (1995) - Action, Crime"


def test_synthetic_streams_exact_counts_deterministically():
    cfg = SyntheticConfig(n_users=500, n_items=20_000, n_events=50_001, chunk_size=10_000, seed=3)
    chunks = list(synthetic_events(cfg))
    assert len(chunks) >= 5 and all(len(c["user"]) <= 10_000 for c in chunks)
    item = np.concatenate([c["item"] for c in chunks])
    ts = np.concatenate([c["ts"] for c in chunks])
    assert len(item) == 50_001 and np.all(np.diff(ts) > 0)
    assert item.min() >= 0 and item.max() < 20_000
    again = np.concatenate([c["item"] for c in synthetic_events(cfg)])
    assert np.array_equal(item, again)
    # Zipf: the 1% most frequent items take a large share of events
    counts = np.sort(np.bincount(item, minlength=20_000))[::-1]
    assert counts[:200].sum() / counts.sum() > 0.3


def test_synthetic_items_and_sessions_share_topics():
    cfg = SyntheticConfig(
        n_users=50, n_items=3000, n_events=4000, n_topics=20, noise=0.0, drift=0.0
    )
    inter, items = synthetic_dataset(cfg)
    assert len(items) == 3000 and items.ids[:2] == ["s0", "s1"] and all(items.texts)
    from trainer.data.synthetic import item_topics

    topics = item_topics(cfg)
    items_u0 = inter.sequences()[int(inter.user[0])][0]
    assert len(set(topics[items_u0])) == 1  # no drift, no noise: one interest


def _peak_bytes(cfg: SyntheticConfig) -> tuple[int, int]:
    """Peak traced allocation while streaming ``cfg`` chunk by chunk, and the events seen."""
    import tracemalloc

    tracemalloc.start()
    try:
        seen = sum(len(c["user"]) for c in synthetic_events(cfg))
        return tracemalloc.get_traced_memory()[1], seen
    finally:
        tracemalloc.stop()


def test_synthetic_stream_memory_does_not_grow_with_the_number_of_events():
    base = {"n_users": 200_000, "n_items": 100_000, "chunk_size": 20_000, "seed": 1}
    small, n_small = _peak_bytes(SyntheticConfig(n_events=100_000, **base))
    large, n_large = _peak_bytes(SyntheticConfig(n_events=1_000_000, **base))
    assert (n_small, n_large) == (100_000, 1_000_000)
    # 10x the events, the same peak: users x 2 bytes + items x ~40 bytes + one chunk
    assert large < 1.1 * small, (small, large)
    assert small < 200_000 * 2 + 100_000 * 48 + 20_000 * 200, small


def test_synthetic_chunks_are_bounded_and_compact():
    from trainer.data.synthetic import EVENT_DTYPES

    cfg = SyntheticConfig(n_users=10_000, n_items=5_000, n_events=55_555, chunk_size=8_000)
    chunks = list(synthetic_events(cfg))
    assert sum(len(c["user"]) for c in chunks) == 55_555
    assert all(0 < len(c["user"]) <= 8_000 for c in chunks)
    assert all(c[k].dtype == np.dtype(t) for c in chunks for k, t in EVENT_DTYPES.items())
    assert {"user": np.int32, "item": np.int32, "ts": np.int64, "event": np.int8} == EVENT_DTYPES
    with pytest.raises(ValueError, match="int32"):
        next(synthetic_events(SyntheticConfig(n_users=2**31)))


def test_synthetic_stream_is_deterministic_per_seed_and_differs_across_seeds():
    cfg = SyntheticConfig(n_users=3_000, n_items=4_000, n_events=30_000, chunk_size=7_000, seed=9)
    a = [c["item"] for c in synthetic_events(cfg)]
    b = [c["item"] for c in synthetic_events(cfg)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    other = np.concatenate(
        [c["item"] for c in synthetic_events(SyntheticConfig(**{**cfg.__dict__, "seed": 10}))]
    )
    assert not np.array_equal(np.concatenate(a), other)


def test_synthetic_interests_drift_between_sessions():
    """drift=1: a user's interest jumps at every session (it is applied per chunk, so with
    small chunks each session sees it), so their sessions span several topics; drift=0: one
    topic per user (noise off)."""
    from trainer.data.synthetic import item_topics

    kw = {"n_users": 30, "n_items": 3000, "n_events": 6000, "n_topics": 20, "noise": 0.0}
    kw["chunk_size"] = 40
    spans = {}
    for drift in (0.0, 1.0):
        cfg = SyntheticConfig(drift=drift, **kw)
        inter, _ = synthetic_dataset(cfg)
        topics = item_topics(cfg)
        spans[drift] = np.mean([len(set(topics[s[0]])) for s in inter.sequences().values()])
    assert spans[0.0] == 1.0 and spans[1.0] > 5
