"""Shared training steps at catalogue scale (:mod:`trainer.student.features`): vectorised teacher
prefixes and KD rows equal the loops they replaced; top-K metrics equal the dense ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coldstream.core.student import Student, StudentConfig
from trainer.student.features import (
    EvalSet,
    kd_rows,
    student_metrics,
    subsample_positions,
    teacher_position_arrays,
    teacher_positions,
    warm_sets,
)
from trainer.student.training import prefix_positions, student_scores


def _old_teacher_positions(seqs, *, first, random_more, max_prefix, seed):
    """The loop :func:`teacher_positions` was before it was vectorised (the reference)."""
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


def _seqs(n_users=150, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (rng.integers(0, 300, n).astype(np.int64), rng.integers(0, 2, n).astype(np.int64))
        for n in rng.integers(0, 45, n_users)
    ]


@pytest.mark.parametrize(("first", "more", "max_prefix"), [(5, 3, 20), (1, 0, 10), (5, 9, 30)])
def test_vectorised_teacher_prefixes_equal_the_loop_they_replaced(first, more, max_prefix):
    seqs = _seqs()
    kw = {"first": first, "random_more": more, "max_prefix": max_prefix, "seed": 3}
    old = _old_teacher_positions(seqs, **kw)
    assert teacher_positions(seqs, **kw) == old
    u, t = teacher_position_arrays(seqs, **kw)
    assert list(zip(u.tolist(), t.tolist(), strict=True)) == old


def test_kd_rows_equal_the_dictionary_lookup():
    seqs = _seqs()
    pos = prefix_positions(seqs, max_prefix=20, extra_per_user=3, seed=0)
    tpos = teacher_positions(seqs, first=5, random_more=3, max_prefix=20, seed=0)
    where = {p: i for i, p in enumerate(tpos)}
    expected = [where.get(p, -1) for p in pos]
    assert kd_rows(pos, tpos).tolist() == expected
    # arrays in, and a teacher budget subsampled out of order of the prefixes
    u, t = subsample_positions(
        teacher_position_arrays(seqs, first=5, random_more=3, max_prefix=20, seed=0), 100, 0
    )
    sub = list(zip(u.tolist(), t.tolist(), strict=True))
    assert len(sub) == 100 and set(sub) <= set(tpos)
    where = {p: i for i, p in enumerate(sub)}
    assert kd_rows(pos, (u, t)).tolist() == [where.get(p, -1) for p in pos]


def test_student_metrics_in_chunks_equal_the_dense_metrics(monkeypatch):
    import trainer.student.features as features

    torch.manual_seed(0)
    n = 300
    model = Student(StudentConfig(n_items=250, text_dim=16, dim=8, max_len=10, dropout=0.0))
    text = np.random.default_rng(1).standard_normal((n, 16)).astype(np.float32)
    ids = np.where(np.arange(n) < 250, np.arange(n), -1)
    seqs = _seqs(80, seed=2)
    cold = np.zeros(n, bool)
    cold[::7] = True
    cells = {**warm_sets(seqs, np.arange(80), cold)}
    cells["cold"] = EvalSet(
        "cold",
        [(s[0][:3], s[1][:3]) for s in seqs[:30]],
        [s[0][3:9] for s in seqs[:30]],
        cold,
        np.arange(30),
    )
    monkeypatch.setattr(features, "BLOCK_ELEMENTS", 7 * n)  # 7 users per chunk
    for es in cells.values():
        dense = es.metrics(
            student_scores(model, torch.as_tensor(text), torch.as_tensor(ids), es.histories)
        )
        got = student_metrics(model, text, ids, es)
        assert set(got) == set(dense)
        for k in dense:
            assert np.allclose(got[k], dense[k]), k


def test_the_gate_scores_large_catalogues_in_chunks_with_the_same_result(monkeypatch):
    import trainer.service.gate as gate

    torch.manual_seed(1)
    n = 400
    model = Student(StudentConfig(n_items=n, text_dim=16, dim=8, max_len=10, dropout=0.0))
    text = np.random.default_rng(5).standard_normal((n, 16)).astype(np.float32)
    ids = np.arange(n)
    seqs = _seqs(60, seed=4)
    hs = [(s[0][:4] % n, s[1][:4]) for s in seqs if len(s[0]) > 6]
    truths = [s[0][4:10] % n for s in seqs if len(s[0]) > 6]
    dense = gate.holdout_ndcg(model, text, ids, hs, truths)
    monkeypatch.setattr(gate, "FULL_SOFTMAX_MAX_ITEMS", 100)  # 400 items: "large"
    assert gate.holdout_ndcg(model, text, ids, hs, truths) == pytest.approx(dense, abs=1e-12)
