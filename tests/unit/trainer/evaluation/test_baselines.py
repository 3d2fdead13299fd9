"""EASE's closed form and text k-shot's cosine by hand on tiny cases; SASRec learns a tiny synthetic set and beats random."""

from __future__ import annotations

import numpy as np

from trainer.evaluation.baselines import EASE, TextKShot
from trainer.evaluation.sasrec import SASRec, SASRecConfig
from trainer.ranking import rank_metrics


def test_ease_closed_form_on_a_tiny_matrix():
    seqs = [np.array([0, 1]), np.array([1, 2]), np.array([0, 1, 2]), np.array([2])]
    lam = 1.0
    x = np.zeros((4, 4))
    for u, s in enumerate(seqs):
        x[u, s] = 1
    # by hand: item 3 never seen; G = X^T X + lam I on the seen items 0..2
    g = np.array([[2.0, 2.0, 1.0], [2.0, 3.0, 2.0], [1.0, 2.0, 3.0]]) + lam * np.eye(3)
    p = np.linalg.inv(g)
    b = np.eye(3) - p / np.diag(p)
    model = EASE(4, lam=lam).learn(seqs)
    assert np.allclose(model.B[:3, :3], b, atol=1e-6)
    assert np.allclose(np.diag(model.B), 0.0)
    s = model.score([[0]])
    assert np.allclose(s[0, :3], b[0], atol=1e-5)
    assert s[0, 3] < s[0, :3].min()  # the unseen item ranks last


def test_text_kshot_by_hand_on_a_tiny_case():
    # three items in 2-D; item 0's vector is not of unit length (cosine ignores lengths)
    vecs = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 4.0]], dtype=np.float32)
    unit = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    s = TextKShot(vecs).score([[0], [0, 1], [], [1, 2]])
    # one revealed item: the user is that item's direction
    assert np.allclose(s[0], [1.0, 0.0, 0.6])
    # two revealed: the mean of their unit vectors, (0.5, 0.5), i.e. (1, 1) / sqrt(2)
    r = 1 / np.sqrt(2)
    assert np.allclose(s[1], [r, r, (0.6 + 0.8) * r])
    # nothing revealed: no preference
    assert np.allclose(s[2], 0.0)
    # (0, 1) and (0.6, 0.8): mean (0.3, 0.9), normalised (1, 3) / sqrt(10)
    u = np.array([0.3, 0.9]) / np.linalg.norm([0.3, 0.9])
    assert np.allclose(s[3], unit @ u)
    # no training: the scores are the cosines themselves, every item scored (cold ones too)
    assert s.shape == (4, 3) and np.all(np.abs(s) <= 1 + 1e-9)


def _world(n_users=300, n_items=40, seed=0):
    """Deterministic cycles: item i is followed by item (i + 1) mod n (noise-free)."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_users):
        start, n = int(rng.integers(n_items)), int(rng.integers(4, 12))
        seqs.append((start + np.arange(n)) % n_items)
    return seqs


def test_sasrec_learns_a_tiny_synthetic_set_and_beats_random():
    train, test = _world(), _world(60, seed=1)
    hist = [s[:3] for s in test]
    gts = [s[3:4] for s in test]
    model = SASRec(
        40, SASRecConfig(dim=32, n_layers=1, n_heads=1, max_len=12, epochs=40, patience=40)
    )
    model.learn(train)
    got = rank_metrics(model.score(hist), gts, hist)["hr@10"].mean()
    rand = rank_metrics(np.random.default_rng(0).random((60, 40)), gts, hist)["hr@10"].mean()
    assert got > 0.9 and got > rand + 0.4
    assert model.curve[-1]["loss"] < model.curve[0]["loss"]


def test_sasrec_scores_an_empty_or_unseen_history():
    model = SASRec(10, SASRecConfig(dim=8, n_layers=1, n_heads=1, max_len=5, epochs=1))
    model.learn([np.array([0, 1, 2]), np.array([1, 2, 3])])
    s = model.score([[], [9]])
    assert s.shape == (2, 10) and np.isfinite(s).all()
    assert s[0, 9] < s[0, :4].min()  # never-seen items rank below seen ones
