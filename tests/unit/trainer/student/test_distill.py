"""Distillation losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainer.student.distill import (
    dllm2rec_rank_loss,
    kd_kl,
    log_expected_count,
    next_item_ce,
    rank_distill_loss,
    rank_weights,
    sampled_softmax_ce,
    topk_kd_kl,
    topk_rank_loss,
    uniform_logits,
)


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


# --------------------------------------------------------------- catalogue-scale losses


def test_sampled_ce_with_every_item_as_a_negative_equals_the_full_ce():
    torch.manual_seed(0)
    s = torch.randn(5, 40, dtype=torch.float64)
    y = torch.tensor([3, 0, 39, 17, 17])
    cat = torch.ones(40, dtype=torch.bool)
    cat[[5, 6, 7]] = False  # not in the training catalogue: masked in both
    full = next_item_ce(s, y, cat)
    hits = torch.zeros(5, 40, dtype=torch.bool)
    hits[torch.arange(5), y] = True
    pos = s[torch.arange(5), y]
    got = sampled_softmax_ce(pos, s, 0.0, neg_mask=hits | ~cat)
    assert got.item() == pytest.approx(full.item(), rel=1e-12)
    # shared negatives ([M]) broadcast over the rows give the same as per-row ones
    shared = torch.randn(40, dtype=torch.float64)
    a = sampled_softmax_ce(pos, shared, 0.0, reduction="none")
    b = sampled_softmax_ce(pos, shared.expand(5, -1), 0.0, reduction="none")
    assert torch.equal(a, b)


def test_sampled_ce_hand_case_with_log_q_correction():
    # s_y = 1, negatives s = [0, 2] with expected counts c = [2, 0.5]
    got = sampled_softmax_ce(
        torch.tensor([1.0]), torch.tensor([[0.0, 2.0]]), torch.log(torch.tensor([2.0, 0.5]))
    ).item()
    expected = -1.0 + math.log(math.e + math.exp(0.0) / 2.0 + math.exp(2.0) / 0.5)
    assert got == pytest.approx(expected, rel=1e-6)


def _sampled_grad(s: torch.Tensor, y: int, q: torch.Tensor, m: int, correct: bool, rng):
    """d loss / d logits of one sampled-softmax draw (``m`` negatives from ``q``)."""
    s = s.clone().requires_grad_(True)
    j = torch.multinomial(q, m, replacement=True, generator=rng)
    lc = torch.log(m * q[j]) if correct else None
    sampled_softmax_ce(
        s[y : y + 1], s[j].unsqueeze(0), lc, neg_mask=(j == y).unsqueeze(0)
    ).backward()
    return s.grad


def test_log_q_corrected_gradient_matches_the_full_gradient_in_expectation():
    torch.manual_seed(1)
    n, y = 50, 7
    s = torch.randn(n, dtype=torch.float64) * 2
    q = 1.0 / torch.arange(1, n + 1, dtype=torch.float64) ** 1.2  # Zipf proposal, far from p
    q = q / q.sum()
    full = torch.softmax(s, 0) - F.one_hot(torch.tensor(y), n).double()
    rng = torch.Generator().manual_seed(0)
    corrected = torch.stack([_sampled_grad(s, y, q, 2000, True, rng) for _ in range(800)]).mean(0)
    plain = torch.stack([_sampled_grad(s, y, q, 2000, False, rng) for _ in range(800)]).mean(0)
    err_corrected = (corrected - full).abs().max().item()
    err_plain = (plain - full).abs().max().item()
    assert err_corrected < 0.01, err_corrected
    assert err_plain > 10 * err_corrected, (err_plain, err_corrected)


def test_log_expected_count_of_mixed_negatives():
    p = torch.tensor([0.5, 0.25, 0.25, 0.0])
    lc = log_expected_count(100, 4, 8, p)
    assert torch.allclose(lc, torch.log(torch.tensor([25 + 4.0, 25 + 2.0, 25 + 2.0, 25.0])))
    assert log_expected_count(10, 1000) == pytest.approx(math.log(0.01))


def test_topk_kd_hand_case():
    # teacher top-2 logits [ln 3, 0] at T=1 -> p_t = [3/4, 1/4]; student top-2 [1, 0];
    # one negative with logit 2 drawn with expected count 4: Z = e + 1 + e^2 / 4
    got = topk_kd_kl(
        torch.tensor([[1.0, 0.0]]),
        torch.tensor([[math.log(3.0), 0.0]]),
        torch.tensor([[2.0]]),
        math.log(4.0),
    ).item()
    z = math.e + 1.0 + math.exp(2.0) / 4.0
    log_ps = [1.0 - math.log(z), 0.0 - math.log(z)]
    expected = 0.75 * (math.log(0.75) - log_ps[0]) + 0.25 * (math.log(0.25) - log_ps[1])
    assert got == pytest.approx(expected, rel=1e-6)


def _logit_world(seed: int, b: int, n: int, k: int, t_scale: float):
    """Student and teacher logits ``[b, n]`` (float64), the teacher's top-``k`` and its mask."""
    torch.manual_seed(seed)
    s = torch.randn(b, n, dtype=torch.float64)
    t = torch.randn(b, n, dtype=torch.float64) * t_scale
    top = t.topk(k, dim=1).indices
    return s, t, top, torch.zeros(b, n, dtype=torch.bool).scatter(1, top, True)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_topk_kd_with_every_other_item_as_a_negative_equals_dense_kl(temperature):
    s, t, top, hits = _logit_world(2, 4, 30, 6, 3.0)
    dense_t = torch.full_like(t, float("-inf")).scatter(1, top, t.gather(1, top))
    got = topk_kd_kl(
        s.gather(1, top), t.gather(1, top), s, 0.0, neg_mask=hits, temperature=temperature
    )
    assert got.item() == pytest.approx(kd_kl(s, dense_t, temperature).item(), rel=1e-10)
    # with K = N (the whole teacher) it is the full KL itself
    allk = t.topk(30, dim=1).indices
    full = topk_kd_kl(s.gather(1, allk), t.gather(1, allk), temperature=temperature)
    assert full.item() == pytest.approx(kd_kl(s, t, temperature).item(), rel=1e-10)
    # and so is the KL with the teacher scoring the negatives (the full teacher, not -inf)
    scored = topk_kd_kl(
        s.gather(1, top),
        t.gather(1, top),
        s,
        0.0,
        neg_mask=hits,
        teacher_neg=t,
        temperature=temperature,
    )
    assert scored.item() == pytest.approx(kd_kl(s, t, temperature).item(), rel=1e-10)


def test_topk_kd_scored_negatives_hand_case_with_log_q():
    # top-1: teacher ln 2, student 0; one negative drawn with expected count 2 (log c = ln 2):
    # teacher atoms [ln 2, ln 4 - ln 2] -> P = [1/2, 1/2]; student [0, ln 2 - ln 2] -> Q = [1/2, 1/2]
    same = topk_kd_kl(
        torch.tensor([[0.0]]),
        torch.tensor([[math.log(2.0)]]),
        torch.tensor([[math.log(2.0)]]),
        math.log(2.0),
        teacher_neg=torch.tensor([[math.log(4.0)]]),
    ).item()
    assert same == pytest.approx(0.0, abs=1e-7)
    # student negative at ln 6 instead: Q = [1/4, 3/4]
    got = topk_kd_kl(
        torch.tensor([[0.0]]),
        torch.tensor([[math.log(2.0)]]),
        torch.tensor([[math.log(6.0)]]),
        math.log(2.0),
        teacher_neg=torch.tensor([[math.log(4.0)]]),
    ).item()
    assert got == pytest.approx(0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75), rel=1e-6)
    with pytest.raises(ValueError, match="not both"):
        topk_kd_kl(
            torch.zeros(1, 1),
            torch.zeros(1, 1),
            torch.zeros(1, 1),
            teacher_neg=torch.zeros(1, 1),
            teacher_tail=torch.zeros(1),
        )


def test_topk_kd_tail_bucket_hand_case():
    # teacher top-1 logit ln 3 and a tail of mass e^0 = 1 (T=1): p = [3/4], p(tail) = 1/4;
    # student top-1 logit 0, one negative (logit ln 2, count 1): S_tail = 2, Z_s = 3
    got = topk_kd_kl(
        torch.tensor([[0.0]]),
        torch.tensor([[math.log(3.0)]]),
        torch.tensor([[math.log(2.0)]]),
        0.0,
        teacher_tail=torch.tensor([0.0]),
    ).item()
    expected = 0.75 * math.log(0.75 / (1 / 3)) + 0.25 * math.log(0.25 / (2 / 3))
    assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_topk_kd_with_the_tail_is_the_full_kl_when_the_student_ranks_the_tail_alike(
    temperature,
):
    b = 5
    s, t, top, in_top = _logit_world(3, b, 40, 4, 2.0)
    # outside the shortlist the student is the teacher plus a per-row constant
    s_alike = torch.where(in_top, s, t + torch.randn(b, 1, dtype=torch.float64))
    tail = torch.logsumexp((t / temperature).masked_fill(in_top, float("-inf")), dim=1)

    def binned(student):
        return topk_kd_kl(
            student.gather(1, top),
            t.gather(1, top),
            student,
            0.0,
            neg_mask=in_top,
            teacher_tail=tail,
            temperature=temperature,
        ).item()

    assert binned(s_alike) == pytest.approx(kd_kl(s_alike, t, temperature).item(), rel=1e-9)
    # otherwise it is below the full KL (log-sum inequality), and well above the
    # renormalised top-K KL's blind spot: a student with no tail mass is penalised
    assert binned(s) < kd_kl(s, t, temperature).item()
    no_tail = torch.where(in_top, s, torch.full_like(s, -30.0))
    renormalised = topk_kd_kl(
        no_tail.gather(1, top),
        t.gather(1, top),
        no_tail,
        0.0,
        neg_mask=in_top,
        temperature=temperature,
    ).item()
    assert binned(no_tail) > renormalised + 0.5


def test_topk_kd_tail_gradient_matches_the_full_kl_gradient_on_the_tail_total():
    # the bucket's gradient moves the student's tail *total* toward the teacher's: summed
    # over the tail items it equals the full KL's summed gradient
    s, t, top, in_top = _logit_world(4, 1, 30, 5, 2.0)
    s.requires_grad_(True)
    tail = torch.logsumexp(t.masked_fill(in_top, float("-inf")), dim=1)
    g_bin = torch.autograd.grad(
        topk_kd_kl(s.gather(1, top), t.gather(1, top), s, 0.0, neg_mask=in_top, teacher_tail=tail),
        s,
    )[0]
    g_full = torch.autograd.grad(kd_kl(s, t, 1.0), s)[0]
    assert torch.allclose(g_bin[in_top], g_full[in_top], atol=1e-12)
    assert g_bin[~in_top].sum().item() == pytest.approx(g_full[~in_top].sum().item(), abs=1e-12)


def test_rank_weights_hand_case():
    # K = 2, beta = 1: w_p = [1, e^-1] / (1 + e^-1); teacher [ln 3, 0] -> w_c = [3/4, 1/4];
    # the student agrees on the second item only: w_o = [0, 1]
    w = rank_weights(
        torch.tensor([[math.log(3.0), 0.0]]),
        torch.tensor([[False, True]]),
        beta=1.0,
        mix=(0.3, 0.5, 0.1),
    )[0].tolist()
    e = math.exp(-1.0)
    raw = [0.3 * 1 / (1 + e) + 0.5 * 0.75, 0.3 * e / (1 + e) + 0.5 * 0.25 + 0.1]
    assert w == pytest.approx([raw[0] / sum(raw), raw[1] / sum(raw)], rel=1e-6)


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_rank_distill_loss_hand_case_pairwise_and_pointwise():
    st = torch.tensor([[2.0, 0.5]])
    tt = torch.tensor([[math.log(3.0), 0.0]])
    neg = torch.tensor([[1.0, -1.0, 9.0]])
    mask = torch.tensor([[False, False, True]])  # the third negative is dropped
    kw = {"beta": 2.0, "mix": (0.4, 0.6, 0.0)}
    e = math.exp(-0.5)
    w = [(0.4 / (1 + e) + 0.6 * 0.75), (0.4 * e / (1 + e) + 0.6 * 0.25)]  # sums to 1
    sp = _softplus
    pair = [(sp(-(2.0 - 1.0)) + sp(-(2.0 + 1.0))) / 2, (sp(-(0.5 - 1.0)) + sp(-(0.5 + 1.0))) / 2]
    got = rank_distill_loss(st, tt, neg, neg_mask=mask, **kw).item()
    assert got == pytest.approx(w[0] * pair[0] + w[1] * pair[1], rel=1e-6)
    negterm = (sp(1.0) + sp(-1.0)) / 2
    point = w[0] * (sp(-2.0) + negterm) + w[1] * (sp(-0.5) + negterm)
    got_p = rank_distill_loss(st, tt, neg, neg_mask=mask, pointwise=True, **kw).item()
    assert got_p == pytest.approx(point, rel=1e-6)
    # the student that ranks the teacher's list above the negatives has the lower loss
    good = rank_distill_loss(torch.tensor([[5.0, 4.0]]), tt, neg, neg_mask=mask, **kw)
    assert good.item() < got


def test_rank_distill_consistency_uses_the_students_own_top_k():
    tt = torch.tensor([[2.0, 1.0]])
    neg = torch.tensor([[3.0, -5.0]])
    # student top-2 among {top items 0.0, 2.5; negatives 3.0, -5.0} = {3.0, 2.5}: item 2 only
    got = rank_distill_loss(torch.tensor([[0.0, 2.5]]), tt, neg, mix=(0.0, 0.0, 1.0))
    item2 = (_softplus(-(2.5 - 3.0)) + _softplus(-(2.5 + 5.0))) / 2
    assert got.item() == pytest.approx(item2, rel=1e-5)


def test_dense_dllm2rec_loss_is_rank_distill_with_every_item_scored():
    torch.manual_seed(3)
    s, t = torch.randn(6, 40, dtype=torch.float64), torch.randn(6, 40, dtype=torch.float64)
    neg = torch.randint(0, 40, (6, 50))
    got = dllm2rec_rank_loss(s, t, 8, negatives=neg)
    tl, top = t.topk(8, dim=1)
    s_top = s.topk(8, dim=1).indices
    cons = (top.unsqueeze(-1) == s_top.unsqueeze(1)).any(-1)
    w = rank_weights(tl, cons)
    pair = F.softplus(-(s.gather(1, top).unsqueeze(2) - s.gather(1, neg).unsqueeze(1))).mean(2)
    assert got.item() == pytest.approx((w * pair).sum(1).mean().item(), rel=1e-10)
    # the consistency decided among "every item" (each once: the top-K masked out of the
    # negatives) equals the one from the dense top-K
    hits = torch.zeros(6, 40, dtype=torch.bool).scatter(1, top, True)
    st = s.gather(1, top)
    pool = rank_distill_loss(st, tl, s, neg_mask=hits, reduction="none")
    given = rank_distill_loss(st, tl, s, neg_mask=hits, consistent=cons, reduction="none")
    assert torch.allclose(pool, given)
