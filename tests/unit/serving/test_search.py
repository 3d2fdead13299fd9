"""The serving search with seen items excluded (:func:`stream_app.recommender.search_unseen`):
the same results as the batch-wide search it replaced (:func:`search_wide`) on an exact
index, no lower recall on IVF, and a width asked of the index that follows each user's own
history, not the longest of the batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from stream_app.index import IndexConfig, SearchParams, VectorStore, exact_topk, make_index
from stream_app.recommender import SEARCH_MARGIN, search_unseen, search_wide


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _index(vecs: np.ndarray, **cfg: Any) -> Any:
    index = make_index(
        vecs.shape[1],
        n_items=len(vecs),
        config=IndexConfig(recall_sample=0, **cfg),
        store=VectorStore.adopt(vecs.copy()),
        prefer_gpu=False,
    )
    index.build()
    return index


def _histories(rng: np.random.Generator, n_items: int, n_users: int) -> list[list[int]]:
    """Random histories of 1-30 events with repeated items, one of 500 events."""
    out = []
    for j in range(n_users):
        length = 500 if j == n_users // 2 else int(rng.integers(1, 31))
        rows = rng.integers(0, n_items, length).tolist()
        rows += rows[: length // 3]  # seen twice
        out.append(rows)
    return out


def _near_history(vecs: np.ndarray, rows_l: list[list[int]], rng: np.random.Generator) -> Any:
    """Users close to their own items (as a student pools a history): seen items rank high."""
    u = np.stack([vecs[r].mean(axis=0) for r in rows_l])
    u += 0.05 * rng.standard_normal(u.shape).astype(np.float32)
    return np.ascontiguousarray(u, np.float32)


def _lists(scores: np.ndarray, found: np.ndarray, keep: np.ndarray) -> list[Any]:
    return [(f[m].tolist(), s[m]) for s, f, m in zip(scores, found, keep, strict=True)]


@pytest.mark.parametrize("k", [1, 10, 25])
@pytest.mark.parametrize("margin", [0, 4, SEARCH_MARGIN])
def test_same_results_as_the_wide_search_on_an_exact_index(k, margin):
    rng = np.random.default_rng(k * 100 + margin)
    vecs = _unit(rng, 3000, 16)
    index = _index(vecs, kind="flat")
    rows_l = _histories(rng, 3000, 40)
    users = _unit(rng, 40, 16)
    for j in range(0, 40, 2):  # half the users have seen their own best items (the one of
        # 500 events too): those fill their first results, they are searched again
        best = np.argsort(-(vecs @ users[j]))[: len(set(rows_l[j]))]
        rows_l[j] = rng.permutation(best).tolist() + best[:3].tolist()
    old = _lists(*search_wide(index, users, rows_l, k, 3000))
    spy: Any = _Spy(vecs)
    s, f = search_unseen(spy, users, rows_l, k, 3000, margin=margin)
    assert len(spy.calls) > 1  # the users left short were searched again
    s, f = search_unseen(index, users, rows_l, k, 3000, margin=margin)
    new = _lists(s, f, f >= 0)
    for (oi, os_), (ni, ns), seen in zip(old, new, rows_l, strict=True):
        assert len(ni) == k
        assert ni == oi
        np.testing.assert_allclose(ns, os_, rtol=1e-5, atol=1e-6)
        assert not set(ni) & set(seen)


def test_a_user_who_has_seen_almost_everything_gets_the_rest():
    rng = np.random.default_rng(1)
    vecs = _unit(rng, 300, 8)
    index = _index(vecs, kind="flat")
    rest = [3, 77, 150, 299, 0, 42, 201]
    seen = [i for i in range(300) if i not in rest]
    rows_l = [seen + seen[:40], [5], list(range(10, 30))]  # with batch-mates, repeats
    users = _unit(rng, 3, 8)
    s, f = search_unseen(index, users, rows_l, 10, 300)
    got = f[0][f[0] >= 0].tolist()
    assert sorted(got) == sorted(rest)
    truth = np.argsort(-(vecs[rest] @ users[0]), kind="stable")
    assert got == [rest[i] for i in truth]
    assert np.all(np.diff(s[0][: len(rest)]) <= 0)
    assert (f[1:] >= 0).sum(axis=1).tolist() == [10, 10]


def _recall(found: np.ndarray, truth: np.ndarray, rows_l: list[list[int]], k: int) -> float:
    hits = total = 0
    for f, t, seen in zip(found, truth, rows_l, strict=True):
        want = [x for x in t.tolist() if x >= 0 and x not in set(seen)][:k]
        hits += len(set(f[f >= 0].tolist()) & set(want))
        total += len(want)
    return hits / total


@pytest.mark.parametrize("codes", ["pq", "flat"])
def test_ivf_recall_not_below_the_wide_search(codes):
    rng = np.random.default_rng(7)
    centres = _unit(rng, 40, 16)
    vecs = centres[rng.integers(0, 40, 8000)] + 0.25 * rng.standard_normal((8000, 16))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    index = _index(vecs, kind="ivf", codes=codes, nprobe=16)
    assert index.kind == "ivf" and index.nprobe == 16
    rows_l = _histories(rng, 8000, 64)
    users = _near_history(vecs, rows_l, rng)
    _, truth = exact_topk(index.store, users, 10 + max(len(set(r)) for r in rows_l))
    _, old_f, old_keep = search_wide(index, users, rows_l, 10, 8000)
    _, new_f = search_unseen(index, users, rows_l, 10, 8000)
    old = _recall(np.where(old_keep, old_f, -1), truth, rows_l, 10)
    new = _recall(new_f, truth, rows_l, 10)
    assert new >= old
    assert new > 0.85
    assert all(not set(f[f >= 0].tolist()) & set(r) for f, r in zip(new_f, rows_l, strict=True))


class _Spy:
    """An exact index over a few vectors that records each call's queries and width."""

    def __init__(self, vecs: np.ndarray) -> None:
        self.vecs = vecs
        self.dim = vecs.shape[1]
        self.calls: list[tuple[int, int]] = []

    def search(
        self, queries: np.ndarray, k: int, params: SearchParams | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append((queries.shape[0], k))
        s = queries @ self.vecs.T
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(s, top, 1).astype(np.float32), top.astype(np.int64)


def test_the_width_follows_each_users_own_history():
    rng = np.random.default_rng(3)
    vecs = _unit(rng, 2000, 8)
    rows_l = [rng.integers(0, 2000, n).tolist() for n in (3, 1, 12, 7, 5, 2, 9, 4)]
    users = _unit(rng, 8, 8)
    rows_l[5] = np.argsort(-(vecs @ users[5]))[:500].tolist()  # one 500-event history of
    # the user's own best items: they fill its first results, it is left short
    spy: Any = _Spy(vecs)
    s, f = search_unseen(spy, users, rows_l, 10, 2000)
    first, *again = spy.calls
    assert first == (8, 10 + SEARCH_MARGIN)  # not 500 + 10 for everyone
    assert again == [(1, 510)]  # only the long history, at its own width
    assert ((f >= 0).sum(axis=1) == 10).all()
    assert not set(f[5].tolist()) & set(rows_l[5])

    spy.calls.clear()
    search_wide(spy, users, rows_l, 10, 2000)
    assert spy.calls == [(8, 510)]  # what the batch-wide search asked of every user
