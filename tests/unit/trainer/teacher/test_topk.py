"""The teacher's top-K in blocks (:mod:`trainer.teacher.topk`) equals the dense top-K."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.teacher.adapt import TeacherHead
from trainer.teacher.heads import TeacherScorer
from trainer.teacher.topk import TopK, chunked_topk, head_topk, inner_product_topk, scorer_topk


def _dense_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    v, i = scores.topk(k, dim=1)
    return i, v


@pytest.mark.parametrize(("row_chunk", "item_chunk", "k"), [(7, 13, 5), (64, 1000, 20), (3, 4, 9)])
def test_chunked_topk_equals_dense_topk(row_chunk, item_chunk, k):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(50, 301, generator=g)  # distinct scores: no ties

    def block(r, c):
        return scores[r, c]

    got = chunked_topk(block, 50, 301, k, row_chunk=row_chunk, item_chunk=item_chunk)
    ids, vals = _dense_topk(scores, k)
    assert torch.equal(got.ids, ids) and torch.equal(got.logits, vals)
    assert got.ids.dtype == torch.long and got.logits.shape == (50, k)


@pytest.mark.parametrize(("row_chunk", "item_chunk", "k"), [(7, 13, 5), (64, 1000, 20), (3, 4, 9)])
def test_chunked_tails_equal_the_dense_log_sum_outside_the_top_k(row_chunk, item_chunk, k):
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(50, 301, generator=g) * 3
    got = chunked_topk(
        lambda r, c: scores[r, c],
        50,
        301,
        k,
        row_chunk=row_chunk,
        item_chunk=item_chunk,
        temperatures=(1.0, 2.5),
    )
    ids, _ = _dense_topk(scores, k)
    outside = torch.ones_like(scores, dtype=torch.bool).scatter(1, ids, False)
    for t in (1.0, 2.5):
        want = torch.logsumexp((scores / t).masked_fill(~outside, float("-inf")), dim=1)
        assert torch.allclose(got.tail(t), want, atol=1e-5)
    assert got.tail(3.0) is None
    # truncating moves the cut items into the tail; rows, concat and to() keep it
    cut = got.truncate(2)
    ids2, _ = _dense_topk(scores, 2)
    outside2 = torch.ones_like(scores, dtype=torch.bool).scatter(1, ids2, False)
    want2 = torch.logsumexp(scores.masked_fill(~outside2, float("-inf")), dim=1)
    assert torch.allclose(cut.tail(1.0), want2, atol=1e-5)
    both = TopK.concat([got.rows(slice(0, 20)), got.rows(slice(20, 50)).to("cpu")])
    assert torch.equal(both.tail(2.5), got.tail(2.5)) and torch.equal(both.ids, got.ids)


def test_the_heads_pair_scorer_equals_its_dense_scores_on_any_rows_and_items():
    torch.manual_seed(0)
    head = TeacherHead(8)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.3)
    feats, vecs = torch.randn(30, 16).numpy(), torch.randn(200, 8).numpy()
    top = head_topk(head, feats, vecs, 5, tau=0.7)
    dense = torch.as_tensor(head.score(feats, vecs) / 0.7)
    rows, items = torch.tensor([3, 0, 29, 3]), torch.tensor([199, 5, 5, 0, 17])
    assert torch.allclose(top.scorer(rows, items), dense[rows][:, items], atol=1e-5)
    # a row subset keeps pointing at its own rows
    sub = top.rows(torch.tensor([10, 20]))
    assert torch.allclose(sub.scorer(torch.tensor([1]), items), dense[20][items], atol=1e-5)
    assert torch.equal(sub.ids, top.ids[[10, 20]])


def test_the_whole_catalogue_leaves_no_tail():
    got = TopK.from_dense(torch.randn(4, 6), 10, temperatures=(1.0,))
    assert torch.isneginf(got.tail(1.0)).all()


def test_k_above_the_catalogue_is_the_whole_catalogue_sorted():
    scores = torch.randn(4, 6)
    got = TopK.from_dense(scores, 10)
    assert got.k == 6 and torch.equal(got.logits, scores.sort(dim=1, descending=True).values)


def test_dense_round_trip_is_minus_inf_outside_the_top_k():
    scores = torch.randn(3, 8)
    top = TopK.from_dense(scores, 3)
    dense = top.dense(8)
    assert torch.isinf(dense).sum() == 3 * 5
    assert torch.equal(TopK.from_dense(dense, 3).ids, top.ids)


def test_inner_product_topk_with_bias_equals_dense():
    rng = np.random.default_rng(1)
    u, x, b = (
        rng.standard_normal((40, 16)),
        rng.standard_normal((5000, 16)),
        rng.standard_normal(5000),
    )
    got = inner_product_topk(u, x, 10, scale=3.0, bias=b)
    dense = torch.as_tensor(3.0 * u @ x.T + b, dtype=torch.float32)
    ids, vals = _dense_topk(dense, 10)
    assert torch.equal(got.ids, ids) and torch.allclose(got.logits, vals, atol=1e-4)


def test_head_topk_equals_the_heads_dense_scores():
    torch.manual_seed(0)
    head = TeacherHead(12)
    for p in head.parameters():  # a trained-looking head, not the zero-initialised one
        torch.nn.init.normal_(p, std=0.3)
    rng = np.random.default_rng(2)
    feats = rng.standard_normal((30, 24)).astype(np.float32)
    items = rng.standard_normal((9000, 12)).astype(np.float32)
    got = head_topk(head, feats, items, 15, tau=0.5)
    dense = torch.as_tensor(head.score(feats, items) / 0.5)
    ids, vals = _dense_topk(dense, 15)
    assert torch.equal(got.ids, ids) and torch.allclose(got.logits, vals, atol=1e-4)


class _Encoder:
    """Deterministic history-text vectors (the scorer only needs ``encode``)."""

    dim = 12

    def encode(self, texts, progress=False):
        rng = np.random.default_rng(len(texts))
        v = rng.standard_normal((len(texts), self.dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_scorer_topk_equals_the_scorers_dense_logits_with_and_without_a_head():
    rng = np.random.default_rng(3)
    items = rng.standard_normal((500, 12)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    texts = [f"item {i}" for i in range(500)]
    histories = [rng.integers(0, 500, n) for n in (1, 3, 5, 2)]
    head = TeacherHead(12)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.3)
    for h in (None, head):
        scorer = TeacherScorer(_Encoder(), texts, items, h, tau=0.7)
        feats = scorer.features(histories)
        got = scorer_topk(scorer, histories, 8, feats=feats)
        ids, vals = _dense_topk(torch.as_tensor(scorer(histories, feats)), 8)
        assert torch.equal(got.ids, ids) and torch.allclose(got.logits, vals, atol=1e-4)
    # a plain callable is scored in row chunks (here one row at a time)
    from trainer.teacher.topk import BLOCK_ELEMENTS

    dense = rng.standard_normal((4, 500)).astype(np.float32)
    rows = [np.array([i]) for i in range(4)]
    got = scorer_topk(lambda hs: dense[[int(h[0]) for h in hs]], rows, 8, n_items=BLOCK_ELEMENTS)
    assert torch.equal(got.ids, _dense_topk(torch.as_tensor(dense), 8)[0])
