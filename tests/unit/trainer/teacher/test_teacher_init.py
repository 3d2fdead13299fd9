"""The DLLM2Rec ranking-distillation loss (:mod:`trainer.student.distill`) against a hand computation,
and the student's item vectors initialised from the teacher's (:mod:`trainer.teacher.init`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from coldstream.core.student import StudentConfig
from trainer.student.distill import dllm2rec_rank_loss, rank_weights
from trainer.teacher.init import init_from_teacher


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_weights_and_loss_by_hand():
    # one example, 4 items; the teacher ranks 2 > 0 > 3 > 1; the student ranks 0 > 1 > 2 > 3
    teacher = torch.tensor([[1.0, -1.0, 2.0, 0.0]])
    student = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    tl, top = teacher.topk(2, dim=-1)
    assert top.tolist() == [[2, 0]]
    s_top = student.topk(2, dim=-1).indices
    consistent = (top.unsqueeze(-1) == s_top.unsqueeze(1)).any(-1)
    w = rank_weights(tl, consistent, beta=1.0, mix=(1.0, 1.0, 1.0))
    wp = np.array([1.0, math.exp(-1.0)])
    wp /= wp.sum()
    wc = np.array([math.exp(2.0), math.exp(1.0)])
    wc /= wc.sum()
    wo = np.array([0.0, 1.0])  # of the teacher's top-2 only item 0 is in the student's top-2
    want_w = wp + wc + wo
    want_w /= want_w.sum()
    assert np.allclose(w.numpy()[0], want_w, atol=1e-6)
    neg = torch.tensor([[1, 3]])
    got = dllm2rec_rank_loss(student, teacher, 2, beta=1.0, mix=(1.0, 1.0, 1.0), negatives=neg)
    s = [3.0, 2.0, 1.0, 0.0]
    pair = [
        -(math.log(_sig(s[2] - s[1])) + math.log(_sig(s[2] - s[3]))) / 2,  # item 2 vs 1, 3
        -(math.log(_sig(s[0] - s[1])) + math.log(_sig(s[0] - s[3]))) / 2,  # item 0 vs 1, 3
    ]
    assert float(got) == pytest.approx(float(np.dot(want_w, pair)), rel=1e-6)


def test_the_loss_falls_when_the_student_follows_the_teacher():
    teacher = torch.tensor([[0.0, 5.0, 4.0, 0.0, 0.0, 0.0]])
    neg = torch.tensor([[0, 3, 4, 5]])
    follow = torch.tensor([[0.0, 3.0, 2.0, 0.0, 0.0, 0.0]])
    against = torch.tensor([[3.0, 0.0, 0.0, 2.0, 0.0, 0.0]])
    assert dllm2rec_rank_loss(follow, teacher, 2, negatives=neg) < dllm2rec_rank_loss(
        against, teacher, 2, negatives=neg
    )
    x = against.clone().requires_grad_(True)
    dllm2rec_rank_loss(x, teacher, 2, negatives=neg).backward()
    assert x.grad[0, 1] < 0 and x.grad[0, 2] < 0  # gradient descent raises the teacher's top-2


def test_init_from_teacher_starts_at_the_teachers_item_geometry():
    rng = np.random.default_rng(0)
    text = rng.standard_normal((200, 12)).astype(np.float32)
    teacher_items = text @ rng.standard_normal((12, 12)).astype(np.float32)  # a linear map
    cfg = StudentConfig(n_items=200, text_dim=12, dim=4, max_len=5)
    model = init_from_teacher(cfg, text, teacher_items)
    with torch.no_grad():
        v = model.item_vectors(torch.as_tensor(text), torch.arange(200)).numpy()
    t = teacher_items - teacher_items.mean(0)
    _, _, vt = np.linalg.svd(t, full_matrices=False)
    pcs = t @ vt[:4].T
    # the student's item vectors span the teacher's top principal directions (exactly: linear)
    coef, res, *_ = np.linalg.lstsq(np.c_[v, np.ones(200)], pcs, rcond=None)
    assert np.allclose(np.c_[v, np.ones(200)] @ coef, pcs, atol=1e-3)
    assert np.allclose(model.id_emb.weight.detach().numpy(), 0.0)
