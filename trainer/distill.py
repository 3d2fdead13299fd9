"""Distillation losses.

``loss = CE(student, next item) + alpha * T^2 * KL(p_teacher^T || p_student^T) [+ beta * rank]``

where ``p^T = softmax(logits / T)`` over the item catalogue. The ``T^2`` factor keeps the
gradient scale of the soft term independent of ``T`` (Hinton et al., 2015). A *uniform*
teacher (all logits equal) turns the KD term into plain label smoothing: the control
against which a teacher's knowledge is credited.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))`` per row, averaged over rows by default.

    Items the teacher gives ``-inf`` have zero teacher mass and contribute nothing."""
    t = float(temperature)
    log_ps = F.log_softmax(student_logits / t, dim=-1)
    log_pt = F.log_softmax(teacher_logits / t, dim=-1)
    pt = log_pt.exp()
    kl = (pt * (log_pt - log_ps)).nan_to_num(0.0, posinf=0.0, neginf=0.0).sum(dim=-1) * (t * t)
    if reduction == "none":
        return kl
    return kl.mean() if kl.numel() else student_logits.sum() * 0.0


def next_item_ce(
    student_logits: torch.Tensor, target: torch.Tensor, catalogue: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy on the next item; ``catalogue`` (bool ``[N]``) masks items unknown at
    training time (held-out cold items are not in the training catalogue)."""
    if catalogue is not None:
        student_logits = student_logits.masked_fill(~catalogue, float("-inf"))
    return F.cross_entropy(student_logits, target)


def topk_rank_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, k: int = 20, n_neg: int = 50
) -> torch.Tensor:
    """BPR-style ranking loss: the teacher's top-``k`` items should outscore random items."""
    b, n = student_logits.shape
    top = teacher_logits.topk(min(k, n), dim=-1).indices
    neg = torch.randint(0, n, (b, n_neg), device=student_logits.device)
    pos_s = student_logits.gather(1, top).unsqueeze(-1)
    neg_s = student_logits.gather(1, neg).unsqueeze(1)
    return F.softplus(-(pos_s - neg_s)).mean()


def uniform_logits(like: torch.Tensor) -> torch.Tensor:
    """The control teacher: equal logits for every item (KD becomes label smoothing)."""
    return torch.zeros_like(like)
