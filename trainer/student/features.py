"""Shared steps of training and evaluation: user splits, cold items, evaluation sets, teacher
features and the teacher's budget of prefixes.

Kept in one place so that ``coldstream train`` (:mod:`trainer.student.fitting`) and ``coldstream
evaluate`` (:mod:`trainer.evaluation.evaluate`) prepare data identically. At catalogue scale: the
teacher's prefixes and their rows come as arrays (:func:`teacher_position_arrays`,
:func:`kd_rows`: no Python tuple per prefix), and :func:`student_metrics` computes the
metrics of :meth:`EvalSet.metrics` from each user's top-K, users scored a chunk at a time
(memory ``O(items x dim + chunk x items)``, never ``[users x items]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from trainer.ranking import hr_at_k, ndcg_at_k, rank_metrics, recall_at_k
from trainer.student.training import (
    Examples,
    Seq,
    encode_users,
    position_arrays,
    sorted_positions,
    student_item_vectors,
)
from trainer.teacher.topk import BLOCK_ELEMENTS


def split_users(
    n_users: int, seed: int, shares: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n_users)
    a = int(round(shares[0] * n_users))
    b = a + int(round(shares[1] * n_users))
    return np.sort(perm[:a]), np.sort(perm[a:b]), np.sort(perm[b:])


def pick_cold_items(n_items: int, share: float, seed: int) -> np.ndarray:
    """Bool ``[N]``: items held out of training entirely (their text stays known)."""
    rng = np.random.default_rng(seed + 7919)
    cold = np.zeros(n_items, dtype=bool)
    cold[rng.choice(n_items, size=int(round(share * n_items)), replace=False)] = True
    return cold


def drop_items(seq: Seq, drop: np.ndarray) -> Seq:
    keep = ~drop[seq[0]]
    return seq[0][keep], seq[1][keep]


@dataclass
class EvalSet:
    """Users of one protocol cell: revealed histories, ground truth, candidates."""

    name: str
    histories: list[Seq]
    gts: list[np.ndarray]
    candidates: np.ndarray | None  # bool [N] or None (all)
    users: np.ndarray

    def metrics(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        return rank_metrics(scores, self.gts, [h[0] for h in self.histories], self.candidates)


def warm_sets(
    seqs: Sequence[Seq], users: np.ndarray, cold: np.ndarray, ks=(1, 3, 5), n_next: int = 10
) -> dict[str, EvalSet]:
    """k-protocol on the warm catalogue: reveal the first k warm events, truth = next 10."""
    out = {}
    for k in ks:
        hs, gts, us = [], [], []
        for u in users:
            s = drop_items(seqs[u], cold)
            if len(s[0]) >= k + 1:
                hs.append((s[0][:k], s[1][:k]))
                gts.append(s[0][k : k + n_next])
                us.append(u)
        out[f"k={k}"] = EvalSet(f"k={k}", hs, gts, ~cold, np.array(us))
    return out


def cold_sets(
    seqs: Sequence[Seq], users: np.ndarray, cold: np.ndarray, reveal: int = 5
) -> dict[str, EvalSet]:
    """Cold items: reveal the first ``reveal`` events (any items); truth = cold items the
    user interacted with later. ``cold_items`` ranks among cold items only (the "new
    arrivals" shelf), ``cold_items_mixed`` among all items."""
    hs, gts, us = [], [], []
    for u in users:
        items, ev = seqs[u]
        if len(items) <= reveal:
            continue
        later = items[reveal:]
        g = later[cold[later]]
        if len(g):
            hs.append((items[:reveal], ev[:reveal]))
            gts.append(g)
            us.append(u)
    us_a = np.array(us)
    return {
        "cold_items": EvalSet("cold_items", hs, gts, cold.copy(), us_a),
        "cold_items_mixed": EvalSet("cold_items_mixed", hs, gts, None, us_a),
    }


def teacher_position_arrays(
    seqs: Sequence[Seq], *, first: int, random_more: int, max_prefix: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`teacher_positions` as two int64 arrays ``(users, ts)`` (same order, same random
    numbers), without a Python tuple per prefix."""
    rng = np.random.default_rng(seed + 17)
    lengths = np.fromiter((len(s[0]) for s in seqs), dtype=np.int64, count=len(seqs))
    n_first = np.clip(np.minimum(first, lengths - 1), 0, None)
    users = [np.repeat(np.arange(len(seqs), dtype=np.int64), n_first)]
    offsets = np.cumsum(n_first) - n_first
    ts = [np.arange(int(n_first.sum()), dtype=np.int64) - np.repeat(offsets, n_first) + 1]
    if random_more > 0:
        hi = np.minimum(max_prefix, lengths - 1)
        eu, et = [], []
        for u in np.flatnonzero(hi > first):
            more = rng.choice(
                np.arange(first + 1, int(hi[u]) + 1),
                size=min(random_more, int(hi[u]) - first),
                replace=False,
            )
            et.append(np.sort(more))
            eu.append(np.full(len(more), u, dtype=np.int64))
        if eu:
            users.append(np.concatenate(eu))
            ts.append(np.concatenate(et).astype(np.int64))
    return sorted_positions(users, ts)


def teacher_positions(
    seqs: Sequence[Seq], *, first: int, random_more: int, max_prefix: int, seed: int
) -> list[tuple[int, int]]:
    """The budgeted subsample of training prefixes the teacher is run on: every prefix of
    length ``1..first`` plus ``random_more`` random lengths in ``first+1..max_prefix``."""
    u, t = teacher_position_arrays(
        seqs, first=first, random_more=random_more, max_prefix=max_prefix, seed=seed
    )
    return list(zip(u.tolist(), t.tolist(), strict=True))


def kd_rows(positions, teacher_pos) -> torch.Tensor:
    """``[E]``: the row of each training prefix in the teacher's prefixes, -1 where it has none
    (both as ``(user, t)`` pairs or ``(users, ts)`` arrays); vectorised (sort + search)."""
    pu, pt = position_arrays(positions)
    tu, tt = position_arrays(teacher_pos)
    if not len(pu):
        return torch.zeros(0, dtype=torch.long)
    width = int(max(pt.max(initial=0), tt.max(initial=0))) + 1
    keys, tkeys = pu * width + pt, tu * width + tt
    order = np.argsort(tkeys, kind="stable")
    found = np.searchsorted(tkeys[order], keys).clip(max=max(len(tkeys) - 1, 0))
    hit = (tkeys[order][found] == keys) if len(tkeys) else np.zeros(len(keys), bool)
    return torch.as_tensor(np.where(hit, order[found] if len(tkeys) else 0, -1), dtype=torch.long)


def attach_kd_rows(ex: Examples, positions, teacher_pos) -> None:
    ex.kd_row = kd_rows(positions, teacher_pos)


def subsample_positions(
    positions: tuple[np.ndarray, np.ndarray], limit: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``limit`` of the prefixes (a uniform sample, in their order; ``None``: all)."""
    u, t = positions
    if limit is None or len(u) <= limit:
        return u, t
    keep = np.sort(np.random.default_rng(seed + 29).choice(len(u), size=limit, replace=False))
    return u[keep], t[keep]


# ------------------------------------------------------------------ metrics at catalogue scale


def topk_rank_metrics(
    ranked: np.ndarray, gts: Sequence[Sequence[int]], ks: Sequence[int] = (10, 20)
) -> dict[str, np.ndarray]:
    """:func:`trainer.ranking.rank_metrics` from each user's ranked list (``[B, >= max(ks)]``
    item rows, best first, ``-1`` where fewer items were rankable) instead of a score matrix."""
    out: dict[str, np.ndarray] = {}
    for k in ks:
        nd, rc, hr = [], [], []
        for b, gt in enumerate(gts):
            r = [int(i) for i in ranked[b, :k] if i >= 0]
            nd.append(ndcg_at_k(r, gt, k))
            rc.append(recall_at_k(r, gt, k))
            hr.append(hr_at_k(r, gt, k))
        out[f"ndcg@{k}"], out[f"recall@{k}"], out[f"hr@{k}"] = map(np.asarray, (nd, rc, hr))
    return out


@torch.no_grad()
def student_metrics(
    model,
    text_vecs: np.ndarray,
    id_index: np.ndarray,
    es: EvalSet,
    *,
    table: torch.Tensor | None = None,
    ks: Sequence[int] = (10, 20),
) -> dict[str, np.ndarray]:
    """``es.metrics(student_scores(...))`` without a ``[users x items]`` matrix: users are
    scored a chunk at a time (:data:`trainer.teacher.topk.BLOCK_ELEMENTS` scores per chunk) and only
    each user's top ``max(ks)`` is kept. Memory ``O(N x dim + chunk x N)``, time
    ``O(users x N x dim)``. ``table``: the student's item vectors, if already computed."""
    table = student_item_vectors(model, text_vecs, id_index) if table is None else table
    n = table.shape[0]
    kmax = min(max(ks), n)
    step = max(1, BLOCK_ELEMENTS // max(n, 1))
    blocked = None if es.candidates is None else torch.as_tensor(~np.asarray(es.candidates))
    ranked = np.full((len(es.histories), kmax), -1, dtype=np.int64)
    for s in range(0, len(es.histories), step):
        hs = es.histories[s : s + step]
        scores = encode_users(model, table, hs) @ table.T
        if blocked is not None:
            scores[:, blocked.to(scores.device)] = float("-inf")
        for b, h in enumerate(hs):
            if len(h[0]):
                scores[b, torch.as_tensor(np.asarray(h[0], dtype=np.int64))] = float("-inf")
        v, i = scores.topk(kmax, dim=1)
        ranked[s : s + len(hs)] = torch.where(torch.isfinite(v), i, -1).cpu().numpy()
    return topk_rank_metrics(ranked, es.gts, ks)
