"""A toy world for the LoRA tests: six real movie texts of two kinds, and histories of one
kind whose next items are of the same kind."""

from __future__ import annotations

import numpy as np

TEXTS = [
    "Toy Story (1995) - Animation, Children's, Comedy",
    "GoldenEye (1995) - Action, Adventure, Thriller",
    "Heat (1995) - Action, Crime, Thriller",
    "Babe (1995) - Children's, Comedy, Drama",
    "Casino (1995) - Drama, Thriller",
    "Aladdin (1992) - Animation, Children's, Comedy, Musical",
]
KIDS, ACTION = [0, 3, 5], [1, 2, 4]
KIND = np.array([0, 1, 1, 0, 1, 0])
"""The kind of each of :data:`TEXTS` (0: kids, 1: action)."""


def kind_histories(n: int = 48, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` histories of two items of one kind, each with the rest of its kind as next items."""
    rng = np.random.default_rng(seed)
    hist, pos = [], []
    for _ in range(n):
        group = KIDS if rng.random() < 0.5 else ACTION
        h = rng.choice(group, size=2, replace=False)
        hist.append(h)
        pos.append(np.array([g for g in group if g not in h]))
    return hist, pos
