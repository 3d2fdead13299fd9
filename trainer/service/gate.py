"""The promotion gate: candidate vs current student on held-out recent sessions.

Both models rank the same item table (the current catalogue plus new, text-only items)
for the same holdout users (:meth:`trainer.service.buffer.EventBuffer.split`), revealed items
excluded; the candidate is promoted unless its mean NDCG@10 is worse than the current
model's by more than ``margin``. Both figures are returned and recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from coldstream.core.student import Student
from trainer.ranking import rank_metrics
from trainer.student.features import EvalSet, student_metrics
from trainer.student.training import FULL_SOFTMAX_MAX_ITEMS, student_scores


@dataclass(frozen=True)
class GateResult:
    promote: bool
    candidate_ndcg: float
    current_ndcg: float
    margin: float
    n_users: int

    def as_dict(self) -> dict[str, float | int | bool]:
        return {
            "promote": self.promote,
            "candidate_ndcg@10": round(self.candidate_ndcg, 5),
            "current_ndcg@10": round(self.current_ndcg, 5),
            "margin": self.margin,
            "holdout_users": self.n_users,
        }


def holdout_ndcg(
    model: Student,
    text_vecs: np.ndarray,
    id_index: np.ndarray,
    histories: Sequence[tuple[np.ndarray, np.ndarray]],
    truths: Sequence[np.ndarray],
    k: int = 10,
) -> float:
    """Mean NDCG@k of ``model`` on (row, type) histories against row truths. Above
    :data:`~trainer.student.training.FULL_SOFTMAX_MAX_ITEMS` items the users are scored in chunks and
    only their top-k kept (:func:`trainer.student.features.student_metrics`): no ``[users x items]``
    matrix at catalogue scale."""
    if not histories:
        return 0.0
    if len(text_vecs) > FULL_SOFTMAX_MAX_ITEMS:
        es = EvalSet(
            "holdout", list(histories), [np.asarray(t) for t in truths], None, np.arange(0)
        )
        return float(student_metrics(model, text_vecs, id_index, es, ks=(k,))[f"ndcg@{k}"].mean())
    scores = student_scores(
        model,
        torch.as_tensor(text_vecs, dtype=torch.float32),
        torch.as_tensor(id_index, dtype=torch.long),
        histories,
    )
    per = rank_metrics(scores, [list(t) for t in truths], [h[0] for h in histories], ks=(k,))
    return float(per[f"ndcg@{k}"].mean())


def gate(
    candidate: Student,
    current: Student,
    *,
    text_vecs: np.ndarray,
    id_index: np.ndarray,
    histories: Sequence[tuple[np.ndarray, np.ndarray]],
    truths: Sequence[np.ndarray],
    margin: float,
) -> GateResult:
    cand = holdout_ndcg(candidate, text_vecs, id_index, histories, truths)
    curr = holdout_ndcg(current, text_vecs, id_index, histories, truths)
    return GateResult(
        promote=bool(histories) and cand >= curr - margin,
        candidate_ndcg=cand,
        current_ndcg=curr,
        margin=margin,
        n_users=len(histories),
    )
