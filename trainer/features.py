"""Shared steps of training and evaluation: user splits, cold items, evaluation sets, teacher
features and the teacher's budget of prefixes.

Kept in one place so that ``coldstream train`` (:mod:`trainer.fitting`) and ``coldstream
evaluate`` (:mod:`trainer.evaluate`) prepare data identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from trainer.ranking import rank_metrics
from trainer.training import Examples, Seq

HISTORY_ITEMS = 5
"""Most recent items in the teacher's history text (keeps encoder cost bounded)."""


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


def teacher_features(
    teacher,
    item_vecs: np.ndarray,
    texts: Sequence[str],
    histories: Sequence[np.ndarray],
    *,
    progress: bool = False,
) -> np.ndarray:
    """``[B, 2D]``: encoder vector of the history text and the mean item-text vector."""
    from trainer.teacher import history_text

    h_text = [history_text([texts[i] for i in h], max_items=HISTORY_ITEMS) for h in histories]
    enc = teacher.encode(h_text, progress=progress)
    mean = np.stack(
        [
            item_vecs[np.asarray(h[-HISTORY_ITEMS:], dtype=np.int64)].mean(0)
            if len(h)
            else np.zeros(item_vecs.shape[1], np.float32)
            for h in histories
        ]
    )
    return np.concatenate([enc, mean], axis=1).astype(np.float32)


def teacher_positions(
    seqs: Sequence[Seq], *, first: int, random_more: int, max_prefix: int, seed: int
) -> list[tuple[int, int]]:
    """The budgeted subsample of training prefixes the teacher is run on: every prefix of
    length ``1..first`` plus ``random_more`` random lengths in ``first+1..max_prefix``."""
    rng = np.random.default_rng(seed + 17)
    out = []
    for u, (items, _) in enumerate(seqs):
        n = len(items)
        out += [(u, t) for t in range(1, min(first, n - 1) + 1)]
        hi = min(max_prefix, n - 1)
        if hi > first and random_more > 0:
            more = rng.choice(
                np.arange(first + 1, hi + 1), size=min(random_more, hi - first), replace=False
            )
            out += [(u, int(t)) for t in sorted(more)]
    return out


def attach_kd_rows(
    ex: Examples, positions: Sequence[tuple[int, int]], teacher_pos: Sequence[tuple[int, int]]
) -> None:
    where = {p: i for i, p in enumerate(teacher_pos)}
    ex.kd_row = torch.as_tensor(
        [where.get((int(u), int(t)), -1) for u, t in positions], dtype=torch.long
    )
