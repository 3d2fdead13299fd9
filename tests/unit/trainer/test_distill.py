"""Distillation losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainer.distill import kd_kl, next_item_ce, topk_rank_loss, uniform_logits


def _softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kl_matches_hand_computed_formula_including_t_squared(temperature):
    s, t = [1.0, 2.0, 0.5], [0.2, -1.0, 3.0]
    ps = _softmax([x / temperature for x in s])
    pt = _softmax([x / temperature for x in t])
    expected = temperature**2 * sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True))
    got = kd_kl(torch.tensor([s]), torch.tensor([t]), temperature)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_kl_hand_case_two_items_t2():
    # s = [0, 0] -> uniform; t = [2 ln 3, 0] at T=2 -> teacher probabilities [3/4, 1/4]
    got = kd_kl(torch.tensor([[0.0, 0.0]]), torch.tensor([[2 * math.log(3.0), 0.0]]), 2.0)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert got.item() == pytest.approx(4.0 * kl, rel=1e-6)


def test_kl_is_zero_for_identical_logits_and_averages_rows():
    x = torch.randn(3, 7)
    assert kd_kl(x, x, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    y = torch.randn(3, 7)
    rows = kd_kl(x, y, 1.5, reduction="none")
    assert rows.shape == (3,) and kd_kl(x, y, 1.5).item() == pytest.approx(
        rows.mean().item(), rel=1e-6
    )


def test_uniform_teacher_is_label_smoothing():
    s = torch.randn(4, 10)
    kl = kd_kl(s, uniform_logits(s), 1.0, reduction="none")
    # KL(u || p) = -log N - mean(log p)
    expected = -math.log(10) - F.log_softmax(s, -1).mean(-1)
    assert torch.allclose(kl, expected, atol=1e-5)


def test_items_without_teacher_mass_contribute_nothing():
    s = torch.tensor([[1.0, 2.0, 3.0]])
    t = torch.tensor([[0.5, float("-inf"), 1.0]])
    got = kd_kl(s, t, 1.0).item()
    pt = _softmax([0.5, 1.0])
    ps = _softmax([1.0, 2.0, 3.0])
    expected = pt[0] * math.log(pt[0] / ps[0]) + pt[1] * math.log(pt[1] / ps[2])
    assert math.isfinite(got) and got == pytest.approx(expected, rel=1e-5)


def test_ce_respects_the_training_catalogue():
    logits = torch.tensor([[1.0, 5.0, 0.0]])
    cat = torch.tensor([True, False, True])
    got = next_item_ce(logits, torch.tensor([0]), cat).item()
    assert got == pytest.approx(-math.log(math.e / (math.e + 1.0)), rel=1e-6)


def test_rank_loss_prefers_the_teachers_top_items():
    torch.manual_seed(0)
    t = torch.tensor([[5.0, 4.0] + [0.0] * 30])
    good = torch.tensor([[9.0, 9.0] + [0.0] * 30])
    bad = torch.tensor([[-9.0, -9.0] + [0.0] * 30])
    assert topk_rank_loss(good, t, k=2).item() < topk_rank_loss(bad, t, k=2).item()
