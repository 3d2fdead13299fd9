"""Ranking metrics (binary relevance), per user, against a full score matrix.

Definitions (``gt`` = the user's relevant items, ``K`` the cut-off):

* ``recall@K = |top-K ∩ gt| / |gt|``
* ``hr@K = 1 if top-K ∩ gt else 0``
* ``ndcg@K = DCG@K / IDCG@K`` with ``DCG = Σ_{rank r (1-based) of a hit} 1 / log2(r + 1)``
  and ``IDCG`` the DCG of ``min(|gt|, K)`` hits at the top.

Excluded items (the revealed history, or non-candidates) get score ``-inf`` and are
never ranked. Ties are broken by item row (stable sort), so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRIC_NAMES = ("ndcg@10", "recall@10", "hr@10", "ndcg@20", "recall@20", "hr@20")


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the ``k`` highest scores, best first, ties by row (stable)."""
    k = min(k, scores.shape[-1])
    return np.argsort(-scores, kind="stable")[..., :k]


def ndcg_at_k(ranked: Sequence[int], gt: Sequence[int] | set[int], k: int) -> float:
    gt = set(gt)
    if not gt:
        return 0.0
    dcg = sum(1.0 / np.log2(r + 2) for r, i in enumerate(list(ranked)[:k]) if i in gt)
    idcg = sum(1.0 / np.log2(r + 2) for r in range(min(len(gt), k)))
    return float(dcg / idcg)


def recall_at_k(ranked: Sequence[int], gt: Sequence[int] | set[int], k: int) -> float:
    gt = set(gt)
    return float(len(set(list(ranked)[:k]) & gt) / len(gt)) if gt else 0.0


def hr_at_k(ranked: Sequence[int], gt: Sequence[int] | set[int], k: int) -> float:
    return float(bool(set(list(ranked)[:k]) & set(gt)))


def rank_metrics(
    scores: np.ndarray,
    gts: Sequence[Sequence[int]],
    exclude: Sequence[Sequence[int]] | None = None,
    candidates: np.ndarray | None = None,
    ks: Sequence[int] = (10, 20),
) -> dict[str, np.ndarray]:
    """Per-user metric arrays for a ``[B, N]`` score matrix.

    ``exclude[b]`` are rows never ranked for user ``b``; ``candidates`` (bool ``[N]``)
    restricts ranking to a candidate set (e.g. cold items)."""
    s = np.array(scores, dtype=np.float64, copy=True)
    if candidates is not None:
        s[:, ~np.asarray(candidates, dtype=bool)] = -np.inf
    if exclude is not None:
        for b, ex in enumerate(exclude):
            if len(ex):
                s[b, np.asarray(ex, dtype=np.int64)] = -np.inf
    kmax = max(ks)
    ranked = top_k(s, kmax)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        nd, rc, hr = [], [], []
        for b, gt in enumerate(gts):
            r = [int(i) for i in ranked[b, :k] if np.isfinite(s[b, i])]
            nd.append(ndcg_at_k(r, gt, k))
            rc.append(recall_at_k(r, gt, k))
            hr.append(hr_at_k(r, gt, k))
        out[f"ndcg@{k}"], out[f"recall@{k}"], out[f"hr@{k}"] = map(np.asarray, (nd, rc, hr))
    return out


def summarize(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: round(float(np.mean(v)), 5) if len(v) else 0.0 for k, v in per_user.items()}


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, object]:
    """Mean of ``a - b`` (paired per user) and its percentile bootstrap interval."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = a - b
    if len(d) == 0:
        return {"mean": 0.0, "ci95": [0.0, 0.0], "n_users": 0}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    means = d[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {
        "mean": round(float(d.mean()), 5),
        "ci95": [round(float(lo), 5), round(float(hi), 5)],
        "n_users": int(len(d)),
    }
