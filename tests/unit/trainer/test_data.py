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
