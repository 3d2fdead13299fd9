"""Non-neural baselines: popularity and item-based kNN (cosine on the user-item matrix)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Popularity:
    """Score = number of training interactions of the item (+ a tiny seeded jitter so
    items never seen in training, e.g. cold items, are ordered at random, not by row)."""

    def __init__(self, n_items: int, seed: int = 0) -> None:
        self.n_items = n_items
        self.seed = seed
        self.counts = np.zeros(n_items, dtype=np.float64)

    def learn(self, sequences: Sequence[np.ndarray]) -> Popularity:
        for s in sequences:
            np.add.at(self.counts, np.asarray(s, dtype=np.int64), 1.0)
        return self

    def score(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        jitter = np.random.default_rng(self.seed).random(self.n_items) * 1e-6
        return np.tile(self.counts + jitter, (len(histories), 1))


class ItemKNN:
    """Score of item j = Σ_{i in history} cos(i, j) over binary user-item vectors,
    keeping each item's ``neighbours`` most similar items (shrunk cosine)."""

    def __init__(
        self, n_items: int, *, neighbours: int = 100, shrink: float = 10.0, seed: int = 0
    ) -> None:
        self.n_items, self.neighbours, self.shrink, self.seed = n_items, neighbours, shrink, seed
        self.sim = np.zeros((n_items, n_items), dtype=np.float32)

    def learn(self, sequences: Sequence[np.ndarray]) -> ItemKNN:
        x = np.zeros((len(sequences), self.n_items), dtype=np.float32)
        for u, s in enumerate(sequences):
            x[u, np.asarray(s, dtype=np.int64)] = 1.0
        co = x.T @ x
        norms = np.sqrt(np.diag(co))
        sim = co / (np.outer(norms, norms) + self.shrink + 1e-9)
        np.fill_diagonal(sim, 0.0)
        if self.neighbours < self.n_items:
            cut = np.partition(sim, -self.neighbours, axis=1)[:, -self.neighbours][:, None]
            sim = np.where(sim >= cut, sim, 0.0)
        self.sim = sim.astype(np.float32)
        self.pop = x.sum(0)
        return self

    def score(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        jitter = np.random.default_rng(self.seed).random(self.n_items) * 1e-6
        out = np.zeros((len(histories), self.n_items), dtype=np.float64)
        for b, h in enumerate(histories):
            if len(h):
                out[b] = self.sim[np.asarray(h, dtype=np.int64)].sum(0)
        # popularity as a tie-breaker far below any similarity
        return out + 1e-6 * self.pop / max(self.pop.max(), 1) + jitter * 1e-3
