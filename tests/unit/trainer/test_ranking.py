"""Ranking metrics against hand-computed rankings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.ranking import hr_at_k, ndcg_at_k, paired_bootstrap, rank_metrics, recall_at_k


def test_hand_computed_ranking():
    ranked = [5, 2, 9, 1, 7]
    gt = {2, 7, 4}
    # hits at ranks 2 and 5 -> DCG = 1/log2(3) + 1/log2(6); IDCG@5 over 3 relevant
    dcg = 1 / math.log2(3) + 1 / math.log2(6)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, gt, 5) == pytest.approx(dcg / idcg)
    assert recall_at_k(ranked, gt, 5) == pytest.approx(2 / 3)
    assert hr_at_k(ranked, gt, 5) == 1.0
    # cut at 1: no hit
    assert (
        ndcg_at_k(ranked, gt, 1) == 0.0
        and recall_at_k(ranked, gt, 1) == 0.0
        and hr_at_k(ranked, gt, 1) == 0.0
    )
    # IDCG is capped at K: cut at 2 with one hit at rank 2
    assert ndcg_at_k(ranked, gt, 2) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_perfect_ranking_is_one():
    assert ndcg_at_k([3, 4, 8], [4, 3], 10) == pytest.approx(1.0)


def test_rank_metrics_excludes_history_and_honours_candidates():
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])
    # item 0 is revealed history: never ranked; item 1 not a candidate
    cand = np.array([True, False, True, True, True])
    out = rank_metrics(scores, [[2]], exclude=[[0]], candidates=cand, ks=(1, 2))
    assert out["ndcg@1"][0] == 1.0 and out["hr@1"][0] == 1.0 and out["recall@2"][0] == 1.0
    out = rank_metrics(scores, [[3]], exclude=[[0]], candidates=cand, ks=(1, 2))
    assert out["hr@1"][0] == 0.0 and out["ndcg@2"][0] == pytest.approx(1 / math.log2(3))


def test_paired_bootstrap():
    a = np.array([0.3, 0.2, 0.5, 0.1])
    same = paired_bootstrap(a, a)
    assert same["mean"] == 0.0 and same["ci95"] == [0.0, 0.0]
    up = paired_bootstrap(a + 0.1, a)
    assert up["mean"] == pytest.approx(0.1) and up["ci95"][0] == pytest.approx(0.1)
