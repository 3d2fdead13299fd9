"""Distillation losses: the exact full-softmax ones and their catalogue-scale counterparts.

The student's training loss (:mod:`trainer.student.training`) is::

    CE(student, next item) + alpha * T^2 * KL(p_teacher^T || p_student^T) [+ beta * rank]

with ``p^T = softmax(logits / T)``. The ``T^2`` factor keeps the gradient scale of the soft
term independent of ``T`` (Hinton et al., 2015). A *uniform* teacher (all logits equal)
turns the KD term into plain label smoothing: the control against which a teacher's
knowledge is credited.

Two families, one formula each (notation: ``s`` student logits, ``t`` teacher logits,
``y`` the next item, ``N`` the catalogue):

* **Full softmax** (the exact reference; cost ``O(B x N)`` per batch): :func:`next_item_ce`,
  :func:`kd_kl`, :func:`topk_rank_loss` (BPR) and :func:`dllm2rec_rank_loss`.
* **Catalogue scale** (cost ``O(B x (K + M))``; nothing of size ``N`` per row):
  :func:`sampled_softmax_ce` (sampled softmax with logQ correction, mixed negatives),
  :func:`topk_kd_kl` (KL over the teacher's top-K plus sampled negatives) and
  :func:`rank_distill_loss` (DLLM2Rec's position- and confidence-weighted ranking loss over
  the teacher's top-K). With every item as a negative exactly once (``log_count = 0``) the
  sampled losses *equal* the full ones (tests/unit/trainer/test_distill.py checks it).

**logQ correction.** Negatives ``j_1..j_M`` are drawn from a proposal (uniform over the
catalogue, plus the batch's own targets: "mixed negatives", Yang et al. 2020); ``c_j`` is the
*expected number of times* item ``j`` is among them (``M * q_j`` for ``M`` draws from ``q``).
``sum_m exp(s_{j_m}) / c_{j_m}`` is then an unbiased estimate of ``sum_j exp(s_j)``, so every
sampled loss below replaces the softmax normaliser's tail by that estimate: each negative
logit enters as ``s_j - log c_j`` (Bengio & Senecal 2008; Yi et al. 2019). The positive is
always present and enters uncorrected; a negative equal to a positive (an "accidental hit")
is masked out, since the positive term counts it exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "dllm2rec_rank_loss",
    "kd_kl",
    "log_expected_count",
    "next_item_ce",
    "rank_distill_loss",
    "rank_weights",
    "sampled_softmax_ce",
    "topk_kd_kl",
    "topk_rank_loss",
    "uniform_logits",
]


def _reduce(per_row: torch.Tensor, reduction: str, like: torch.Tensor) -> torch.Tensor:
    if reduction == "none":
        return per_row
    if reduction == "sum":
        return per_row.sum()
    return per_row.mean() if per_row.numel() else like.sum() * 0.0


# ------------------------------------------------------------------------ full softmax (exact)


def kd_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))`` per row, averaged over rows by default::

        T^2 * sum_i p_t(i) * (log p_t(i) - log p_s(i)),  p_x = softmax(x / T) over all items

    Items the teacher gives ``-inf`` have zero teacher mass and contribute nothing (a
    top-K teacher written densely: ``-inf`` outside its top-K)."""
    t = float(temperature)
    log_ps = F.log_softmax(student_logits / t, dim=-1)
    log_pt = F.log_softmax(teacher_logits / t, dim=-1)
    pt = log_pt.exp()
    kl = (pt * (log_pt - log_ps)).nan_to_num(0.0, posinf=0.0, neginf=0.0).sum(dim=-1) * (t * t)
    return _reduce(kl, reduction, student_logits)


def next_item_ce(
    student_logits: torch.Tensor, target: torch.Tensor, catalogue: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy on the next item, ``-s_y + log sum_j exp(s_j)`` averaged over rows;
    ``catalogue`` (bool ``[N]``) masks items unknown at training time (held-out cold items
    are not in the training catalogue)."""
    if catalogue is not None:
        student_logits = student_logits.masked_fill(~catalogue, float("-inf"))
    return F.cross_entropy(student_logits, target)


def topk_rank_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, k: int = 20, n_neg: int = 50
) -> torch.Tensor:
    """BPR-style ranking loss: the teacher's top-``k`` items should outscore random items::

    mean_{b, r <= k, m <= n_neg} softplus(-(s_{b, top_r} - s_{b, j_m})),  j_m ~ U(N)"""
    b, n = student_logits.shape
    top = teacher_logits.topk(min(k, n), dim=-1).indices
    neg = torch.randint(0, n, (b, n_neg), device=student_logits.device)
    pos_s = student_logits.gather(1, top).unsqueeze(-1)
    neg_s = student_logits.gather(1, neg).unsqueeze(1)
    return F.softplus(-(pos_s - neg_s)).mean()


def uniform_logits(like: torch.Tensor) -> torch.Tensor:
    """The control teacher: equal logits for every item (KD becomes label smoothing)."""
    return torch.zeros_like(like)


# ------------------------------------------------------------------------ catalogue scale


def _neg_terms(
    neg_logits: torch.Tensor,
    log_count: torch.Tensor | float | None,
    mask: torch.Tensor | None,
    rows: int,
    scale: float = 1.0,
) -> torch.Tensor:
    """``[B, M]`` corrected negative terms ``s_j / T - log c_j`` (``-inf`` where masked);
    ``neg_logits`` ``[B, M]`` or ``[M]`` (negatives shared by the batch)."""
    x = neg_logits if neg_logits.dim() == 2 else neg_logits.unsqueeze(0).expand(rows, -1)
    x = x * scale
    if log_count is not None:
        x = x - (log_count if isinstance(log_count, float) else log_count.to(x.dtype))
    if mask is not None:
        x = x.masked_fill(mask, float("-inf"))
    return x


def sampled_softmax_ce(
    pos_logits: torch.Tensor,
    neg_logits: torch.Tensor,
    log_count: torch.Tensor | float | None = None,
    *,
    neg_mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Sampled softmax cross-entropy with logQ correction, per row ``b``::

        -s_y + log( exp(s_y) + sum_{m: not masked} exp(s_{j_m} - log c_{j_m}) )

    ``pos_logits`` ``[B]`` (``s_y``); ``neg_logits`` ``[B, M]`` or ``[M]`` shared by every
    row (``s_{j_m}``); ``log_count`` ``[M]`` / ``[B, M]`` / scalar: ``log c_j``, the log of
    the expected number of times ``j`` is drawn (``log(M q_j)``; ``None`` or 0: no
    correction); ``neg_mask`` (bool, like ``neg_logits`` broadcast to ``[B, M]``) drops
    accidental hits (``j_m = y``) and items outside the catalogue. The tail
    ``sum_{j != y} exp(s_j)`` of the full normaliser is replaced by its unbiased
    importance-sampling estimate; with every item a negative once and ``log c = 0`` this is
    exactly :func:`next_item_ce`."""
    b = pos_logits.shape[0]
    neg = _neg_terms(neg_logits, log_count, neg_mask, b)
    z = torch.logsumexp(torch.cat([pos_logits.unsqueeze(1), neg], dim=1), dim=1)
    return _reduce(z - pos_logits, reduction, pos_logits)


def topk_kd_kl(
    student_top: torch.Tensor,
    teacher_top: torch.Tensor,
    neg_logits: torch.Tensor | None = None,
    log_count: torch.Tensor | float | None = None,
    *,
    neg_mask: torch.Tensor | None = None,
    teacher_tail: torch.Tensor | None = None,
    teacher_neg: torch.Tensor | None = None,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """KL from the teacher's top-K plus the teacher's mass outside it, by one of two means.

    **Scored negatives** (``teacher_neg`` ``[B, M]`` / ``[M]``: the teacher's logits of the
    negatives): both distributions over the same support, the top-K exactly and each
    negative with its sampling correction::

        P(a) = softmax_a( [t_k / T] ++ [t_{j_m} / T - log c_{j_m}] )   (masked negatives: no atom)
        Q(a) = softmax_a( [s_k / T] ++ [s_{j_m} / T - log c_{j_m}] )
        loss = T^2 * sum_a P(a) log(P(a) / Q(a))

    the sampled-softmax estimate of the full KL: with every item outside the top-K a negative
    once (``log c = 0``) it *is* the full KL.

    **Tail bucket** (``teacher_tail``, when the teacher cannot score other items), the
    student's normaliser and tail estimated from negatives::

        log Z_t  = log( sum_k exp(t_k / T) + exp(tail_t) )      tail_t = log sum_{j not in K} exp(t_j / T)
        p(k)     = exp(t_k / T - log Z_t),   p(tail) = exp(tail_t - log Z_t)
        S_tail   = sum_{m: not masked} exp(s_{j_m} / T - log c_{j_m})   (estimates sum_{j not in K} exp(s_j / T))
        log Z_s  = log( sum_k exp(s_k / T) + S_tail )
        q(k)     = exp(s_k / T - log Z_s),   q(tail) = S_tail / Z_s
        loss     = T^2 * ( sum_k p(k) log(p(k) / q(k)) + p(tail) log(p(tail) / q(tail)) )

    This is the full KL with the items outside the teacher's shortlist merged into one
    bucket: the student is asked to give that bucket the teacher's mass there, not to move
    it onto the shortlist. It is never above the full KL (log-sum inequality) and equals it
    when the student ranks the tail like the teacher (``tests/unit/trainer/test_distill.py``).

    ``student_top``/``teacher_top`` ``[B, K]``: the student's and the teacher's logits of the
    teacher's top-K items (``-inf`` teacher logits: padding, no mass); ``neg_logits``,
    ``log_count``, ``neg_mask`` as in :func:`sampled_softmax_ce` (mask the negatives that are
    among the row's top-K: they are counted exactly); ``teacher_tail`` ``[B]``: ``tail_t``
    (:attr:`trainer.teacher.topk.TopK.tails` at ``T``). Without ``teacher_tail`` (or without
    negatives, so no student tail) the teacher is renormalised over its top-K: ``p(tail) = 0``
    and ``Z_s`` runs over the top-K and the negatives. With every item outside the top-K a
    negative once (``log c = 0``) and no ``teacher_tail`` this equals :func:`kd_kl` against a
    teacher that is ``-inf`` outside its top-K."""
    t = float(temperature)
    s = student_top / t
    tt = teacher_top / t
    neg = None
    if neg_logits is not None:
        neg = _neg_terms(neg_logits, log_count, neg_mask, s.shape[0], scale=1.0 / t)
    if teacher_neg is not None:
        if neg is None:
            raise ValueError("teacher_neg needs neg_logits (the student's side of the same items)")
        if teacher_tail is not None:
            raise ValueError("give teacher_neg or teacher_tail, not both")
        tneg = _neg_terms(teacher_neg, log_count, neg_mask, s.shape[0], scale=1.0 / t)
        log_p = F.log_softmax(torch.cat([tt, tneg], dim=1), dim=1)
        log_q = F.log_softmax(torch.cat([s, neg], dim=1), dim=1)
        kl = (log_p.exp() * (log_p - log_q)).nan_to_num(0.0, posinf=0.0, neginf=0.0).sum(-1)
        return _reduce(kl * (t * t), reduction, student_top)
    use_tail = teacher_tail is not None and neg is not None
    if use_tail:
        tail_t = teacher_tail.to(tt.dtype).unsqueeze(1)
        log_zt = torch.logsumexp(torch.cat([tt, tail_t], dim=1), dim=1, keepdim=True)
        log_pt = tt - log_zt
    else:
        log_pt = F.log_softmax(tt, dim=-1)
    log_z = torch.logsumexp(torch.cat([s] if neg is None else [s, neg], dim=1), dim=1, keepdim=True)
    pt = log_pt.exp()
    kl = (pt * (log_pt - (s - log_z))).nan_to_num(0.0, posinf=0.0, neginf=0.0).sum(-1)
    if use_tail:
        assert neg is not None
        log_ptail = (tail_t - log_zt).squeeze(1)
        log_qtail = torch.logsumexp(neg, dim=1) - log_z.squeeze(1)
        tail_kl = log_ptail.exp() * (log_ptail - log_qtail)
        # no teacher tail (-inf): no term; every negative masked: no estimate, no term
        kl = kl + tail_kl.nan_to_num(0.0, posinf=0.0, neginf=0.0)
    return _reduce(kl * (t * t), reduction, student_top)


def rank_weights(
    teacher_top: torch.Tensor,
    student_consistent: torch.Tensor | None = None,
    *,
    beta: float = 5.0,
    mix: tuple[float, float, float] = (1.0, 1.0, 0.5),
    temperature: float = 1.0,
) -> torch.Tensor:
    """DLLM2Rec's importance weights ``[B, K]`` of the teacher's top-K (Cui et al. 2024), rank
    ``r = 0..K-1`` (``teacher_top`` sorted best first), ``mix = (l_p, l_c, l_o)``::

        w_p(r) = exp(-r / beta) / sum_r' exp(-r' / beta)            position
        w_c(r) = softmax_r(t_r / T)                                  the teacher's confidence
        w_o(r) = 1[r in the student's own top-K] / max(1, #such r)   consistency
        w      = normalise_r(l_p * w_p + l_c * w_c + l_o * w_o)

    DLLM2Rec scores confidence as ``softmax(-d)`` of the distance ``d`` between the LLM's
    generated item and the real one; a scoring teacher's confidence in an item is its own
    probability, the same form with its logit in place of ``-d``. ``student_consistent``
    (bool ``[B, K]``; ``None``: ``w_o = 0``) marks the items the student also ranks in its
    top-K. ``-inf`` teacher logits (padding) get weight 0. The weights carry no gradient."""
    t = teacher_top.detach().float()
    k = t.shape[1]
    valid = torch.isfinite(t)
    r = torch.arange(k, device=t.device, dtype=torch.float32)
    w_p = torch.exp(-r / float(beta)).expand_as(t) * valid
    w_p = w_p / w_p.sum(1, keepdim=True).clamp_min(1e-30)
    w_c = torch.softmax(t / float(temperature), dim=-1).nan_to_num(0.0)
    lp, lc, lo = mix
    w = lp * w_p + lc * w_c
    if student_consistent is not None and lo:
        w_o = (student_consistent & valid).float()
        w = w + lo * w_o / w_o.sum(1, keepdim=True).clamp_min(1.0)
    return (w / w.sum(1, keepdim=True)).nan_to_num(0.0)


def rank_distill_loss(
    student_top: torch.Tensor,
    teacher_top: torch.Tensor,
    student_neg: torch.Tensor,
    *,
    neg_mask: torch.Tensor | None = None,
    consistent: torch.Tensor | None = None,
    beta: float = 5.0,
    mix: tuple[float, float, float] = (1.0, 1.0, 0.5),
    temperature: float = 1.0,
    pointwise: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """Importance-aware ranking distillation over the teacher's top-K (DLLM2Rec, Cui et al.
    2024), per row with the weights ``w`` of :func:`rank_weights`::

        pairwise (default):  sum_r w_r * mean_{m: not masked} softplus(-(s_r - s_{j_m}))
        pointwise (the paper's BCE):
                             sum_r w_r * ( softplus(-s_r) + mean_{m: not masked} softplus(s_{j_m}) )

    (``softplus(-x) = -log sigmoid(x)``.) ``student_top`` ``[B, K]``: the student's logits of
    the teacher's top-K (``teacher_top``, best first); ``student_neg`` ``[B, M]`` or ``[M]``:
    its logits of negatives (random items; ``neg_mask`` drops some, e.g. those in the row's
    top-K). The pairwise form needs no calibrated scores (a softmax student's logits have a
    free offset); the pointwise one is the paper's. ``consistent`` (bool ``[B, K]``): the
    items the student ranks in its own top-K; ``None``: decided among the items scored here
    (the top-K and the negatives: with every item a negative, the student's true top-K)."""
    b, k = student_top.shape
    neg = student_neg if student_neg.dim() == 2 else student_neg.unsqueeze(0).expand(b, -1)
    keep = torch.ones_like(neg, dtype=torch.bool) if neg_mask is None else ~neg_mask
    if consistent is None and mix[2]:
        with torch.no_grad():
            pool = torch.cat([student_top, neg.masked_fill(~keep, float("-inf"))], dim=1)
            kth = pool.topk(min(k, pool.shape[1]), dim=1).values[:, -1:]
            consistent = student_top >= kth
    w = rank_weights(teacher_top, consistent, beta=beta, mix=mix, temperature=temperature)
    n_keep = keep.sum(1).clamp_min(1).to(student_top.dtype)
    pad = ~torch.isfinite(teacher_top)  # padding of a short top-K: weight 0, no term
    s_top = student_top.masked_fill(pad, 0.0)
    if pointwise:
        neg_term = (F.softplus(neg) * keep).sum(1) / n_keep
        item = F.softplus(-s_top) + neg_term.unsqueeze(1)
    else:
        pair = F.softplus(-(s_top.unsqueeze(2) - neg.unsqueeze(1)))  # [B, K, M]
        item = (pair * keep.unsqueeze(1)).sum(2) / n_keep.unsqueeze(1)
    per = (w * item.masked_fill(pad, 0.0)).sum(1)
    return _reduce(per, reduction, student_top)


def dllm2rec_rank_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    k: int = 10,
    *,
    n_neg: int = 50,
    beta: float = 5.0,
    mix: tuple[float, float, float] = (1.0, 1.0, 0.5),
    negatives: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """:func:`rank_distill_loss` (pairwise) on dense ``[B, N]`` logits, the full-softmax path:
    the teacher's top-``k`` of ``teacher_logits``, consistency against the student's true
    top-``k``, ``negatives`` ``[B, J]`` (default ``n_neg`` uniform random items per row, not
    masked). (DLLM2Rec's recipe on the full-softmax path.)"""
    b, n = student_logits.shape
    k = min(k, n)
    tl, top = teacher_logits.topk(k, dim=-1)
    with torch.no_grad():
        s_top = student_logits.detach().topk(k, dim=-1).indices
        consistent = (top.unsqueeze(-1) == s_top.unsqueeze(1)).any(-1)
    if negatives is None:
        negatives = torch.randint(
            0, n, (b, n_neg), device=student_logits.device, generator=generator
        )
    return rank_distill_loss(
        student_logits.gather(1, top),
        tl,
        student_logits.gather(1, negatives),
        consistent=consistent,
        beta=beta,
        mix=mix,
    )


def log_expected_count(
    n_uniform: int, n_support: int, inbatch: int = 0, target_prob: torch.Tensor | None = None
) -> torch.Tensor | float:
    """``log c_j`` of mixed negatives: ``n_uniform`` draws uniform over ``n_support`` items plus
    ``inbatch`` draws from the targets' distribution ``target_prob[j]``::

        c_j = n_uniform / n_support + inbatch * target_prob[j]

    A float when there are no in-batch draws (the same for every item), else ``[len(target_prob)]``."""
    base = n_uniform / max(n_support, 1)
    if not inbatch or target_prob is None:
        return math.log(base) if base > 0 else 0.0
    return torch.log(base + inbatch * target_prob)
