"""Teacher adaptation (:mod:`trainer.teacher.adapt`) on a small synthetic problem."""

from __future__ import annotations

import numpy as np
import torch

from trainer.teacher.adapt import HeadConfig, fit_head


def _problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(40, 8)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    targets = [rng.choice(40, size=2, replace=False) for _ in range(120)]
    # user features: the next items' mean (the history text "knows" them) plus noise, and a mean
    feats = np.stack(
        [np.r_[items[t].mean(0) + 0.3 * rng.normal(size=8), items[t].mean(0)] for t in targets]
    )
    return feats.astype(np.float32), targets, items


def test_fit_head_without_validation_returns_a_trained_head():
    # the service fits its first head with no validation callback; it must get the trained
    # head, not the zero-initialised one (before the fix, -loss never beat the start at -1.0)
    feats, targets, items = _problem()
    head, curve = fit_head(
        feats, targets, items, np.ones(40, bool), config=HeadConfig(epochs=8, seed=0)
    )
    assert any(
        float(p.detach().abs().sum()) > 0 for p in (head.user_map.weight, head.item_map.weight)
    )
    losses = [r["loss"] for r in curve if r["loss"] is not None]
    assert losses[-1] < losses[0]
    with torch.no_grad():
        zero = fit_head(
            feats, targets, items, np.ones(40, bool), config=HeadConfig(epochs=0, seed=0)
        )[0]
    assert not np.allclose(head.score(feats, items), zero.score(feats, items))
