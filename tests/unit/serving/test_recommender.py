"""The serving recommender: seen items excluded, unknown items tolerated, fallback, swaps."""

from __future__ import annotations

import numpy as np
import pytest

from coldstream.core.checkpoint import load_checkpoint
from devtools.checkpoints import make_checkpoint
from stream_app.recommender import Recommender, ServingModel


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("store"), n_items=60, dim=32, text_dim=24)


@pytest.fixture
def rec(ckpt_path):
    return Recommender.from_checkpoint(ckpt_path, device="cpu", prefer_gpu_index=False)


def test_matches_checkpoint_recommend_and_excludes_seen(rec, ckpt_path):
    ck = load_checkpoint(ckpt_path)
    histories = [["1", "2", "3"], [("5", "purchase"), ("9", 0)], [str(i) for i in range(1, 40)]]
    out = rec.recommend_batch(histories, k=10)
    assert len(out) == 3
    for h, items in zip(histories, out, strict=True):
        seen = {e[0] if isinstance(e, tuple) else e for e in h}
        assert len(items) == 10
        assert not seen & {i for i, _ in items}
        ref = ck.recommend(h, k=10)
        assert [i for i, _ in items] == [i for i, _ in ref]
        np.testing.assert_allclose([s for _, s in items], [s for _, s in ref], rtol=1e-4, atol=1e-4)


def test_batch_equals_one_by_one(rec):
    histories = [[str(j) for j in range(i, i + 5)] for i in range(1, 20)]
    batched = rec.recommend_batch(histories, k=5)
    single = [rec.recommend_batch([h], k=5)[0] for h in histories]
    assert [[i for i, _ in r] for r in batched] == [[i for i, _ in r] for r in single]


def test_unknown_items_tolerated(rec):
    mixed = rec.rank_batch([["1", "no-such-item", "2"]], k=5)
    assert mixed.fallback == [None]
    assert len(mixed.items[0]) == 5
    assert not {"1", "2", "no-such-item"} & {i for i, _ in mixed.items[0]}
    # unknown items do not change the user vector
    assert [i for i, _ in mixed.items[0]] == [
        i for i, _ in rec.recommend_batch([["1", "2"]], k=5)[0]
    ]


def test_only_unknown_items_gets_popular_fallback(rec):
    rec.observe(["7"] * 5 + ["8"] * 3 + ["unknown"] * 10)
    r = rec.rank_batch([["x1", "x2"], ["1"]], k=4)
    assert r.fallback == ["popular", None]
    ids = [i for i, _ in r.items[0]]
    assert ids[:2] == ["7", "8"]  # most popular first; unknown ids never recommended
    assert len(ids) == 4 and "unknown" not in ids
    assert r.n_known_users == 1


def test_fallback_excludes_seen(rec):
    rec.observe(["7"] * 5)
    r = rec.rank_batch([["x1", "7"]], k=3)
    assert r.fallback == [None]  # "7" is known: model path, 7 excluded
    assert "7" not in [i for i, _ in r.items[0]]


def test_history_longer_than_catalogue(rec):
    everything = [str(i) for i in range(1, 61)]
    r = rec.rank_batch([everything[-50:]], k=20)
    assert len(r.items[0]) == 10  # 60 items, 50 seen
    assert not set(everything[-50:]) & {i for i, _ in r.items[0]}


def test_upsert_items_new_and_replaced(rec):
    old = rec.model
    dim = old.table.shape[1]
    u = rec.model.checkpoint.embed_users([["1", "2"]])[0]
    big = (u / np.linalg.norm(u) * 1000).astype(np.float32)
    new = rec.upsert_items(["new-1", "5"], np.stack([big, -big]))
    assert rec.model is new and new is not old
    assert new.n_items == old.n_items + 1
    assert rec.recommend_batch([["1", "2"]], k=1)[0][0][0] == "new-1"
    # old bundle is unaffected (still serves its own rows only)
    assert "new-1" not in old.index_of
    # the replaced "5" is served from its new row only (never twice)
    ids = [i for i, _ in rec.recommend_batch([["1"]], k=100)[0]]
    assert ids.count("5") == 1 and len(ids) == len(set(ids)) == 60
    with pytest.raises(ValueError):
        rec.upsert_items(["x"], np.zeros((1, dim + 1), np.float32))


def test_swap_is_one_reference(rec, ckpt_path, tmp_path):
    other = ServingModel.from_checkpoint(
        load_checkpoint(make_checkpoint(tmp_path, n_items=30, dim=32, seed=3)),
        prefer_gpu_index=False,
    )
    before = rec.model
    assert rec.swap(other) is before
    assert rec.model is other
    assert all(int(i) <= 30 for i, _ in rec.recommend_batch([["1"]], k=10)[0])
