"""Non-neural baselines: popularity, item-based kNN (cosine on the user-item matrix), EASE
(the closed-form linear item-item model) and text k-shot (the teacher's item text alone, no
training). SASRec, the neural one, is :mod:`trainer.evaluation.sasrec`."""

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


class EASE:
    """EASE (Steck, 2019): the closed-form item-item linear autoencoder on the binary
    user-item matrix ``X``: ``P = (X^T X + lambda I)^{-1}``, ``B = I - P / diag(P)`` (columns
    divided), so ``diag(B) = 0``; score of a history = ``x_h B``. Items never seen in training
    (all-zero columns) score a seeded jitter below every seen item."""

    def __init__(self, n_items: int, *, lam: float = 250.0, seed: int = 0) -> None:
        self.n_items, self.lam, self.seed = n_items, float(lam), seed
        self.B = np.zeros((n_items, n_items), dtype=np.float32)
        self.seen = np.zeros(n_items, dtype=bool)

    def learn(self, sequences: Sequence[np.ndarray]) -> EASE:
        x = np.zeros((len(sequences), self.n_items), dtype=np.float64)
        for u, s in enumerate(sequences):
            x[u, np.asarray(s, dtype=np.int64)] = 1.0
        self.seen = x.sum(0) > 0
        g = x.T @ x
        g[np.diag_indices_from(g)] += self.lam
        p = np.linalg.inv(g)
        b = -p / np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        b[:, ~self.seen] = 0.0
        b[~self.seen, :] = 0.0
        self.B = b.astype(np.float32)
        return self

    def score(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        x = np.zeros((len(histories), self.n_items), dtype=np.float32)
        for b, h in enumerate(histories):
            if len(h):
                x[b, np.asarray(h, dtype=np.int64)] = 1.0
        out = (x @ self.B).astype(np.float64)
        jitter = np.random.default_rng(self.seed).random(self.n_items) * 1e-6
        floor = out.min() - 1.0 if out.size else 0.0
        out[:, ~self.seen] = floor
        return out + jitter


class TextKShot:
    """What text alone gives, with no training: a user is the mean of the revealed items'
    text vectors (the stock teacher's), and item ``j`` scores the cosine of that mean with
    ``j``'s text vector. Cold items are scored like any other (their text is known); a user
    with no revealed item scores zero everywhere."""

    def __init__(self, item_vecs: np.ndarray) -> None:
        v = np.asarray(item_vecs, dtype=np.float64)
        self.unit = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def score(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        users = np.zeros((len(histories), self.unit.shape[1]), dtype=np.float64)
        for b, h in enumerate(histories):
            if len(h):
                users[b] = self.unit[np.asarray(h, dtype=np.int64)].mean(0)
        users /= np.maximum(np.linalg.norm(users, axis=1, keepdims=True), 1e-12)
        return users @ self.unit.T
