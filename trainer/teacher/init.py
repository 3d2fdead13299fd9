"""The student's item vectors initialised from the teacher's item geometry.

:func:`init_from_teacher`: a student whose text projection maps the stock item text vectors
to the first ``dim`` principal directions of the *teacher's* item vectors (least squares), so
that training starts from the teacher's item geometry (ids start at zero). The ranking
distillation losses that go with it (DLLM2Rec, Cui et al., RecSys 2024) live in
:mod:`trainer.student.distill` (:func:`~trainer.student.distill.dllm2rec_rank_loss`).
"""

from __future__ import annotations

import numpy as np
import torch

from coldstream.core.student import Student, StudentConfig


def init_from_teacher(
    config: StudentConfig, text_vecs: np.ndarray, teacher_item_vecs: np.ndarray, *, seed: int = 0
) -> Student:
    """A fresh student whose item vectors start at the teacher's item geometry: ``text_proj``
    is the least-squares map of ``text_vecs`` onto the top ``config.dim`` principal components
    of ``teacher_item_vecs`` (both ``[N, *]``, same rows), scaled to unit average norm; id
    embeddings start at zero."""
    torch.manual_seed(seed)
    model = Student(config)
    t = np.asarray(teacher_item_vecs, dtype=np.float64)
    t = t - t.mean(0)
    _, _, vt = np.linalg.svd(t, full_matrices=False)
    target = t @ vt[: config.dim].T  # [N, dim] (fewer columns when N or width < dim)
    target = target / max(float(np.linalg.norm(target, axis=1).mean()), 1e-9)
    x = np.asarray(text_vecs, dtype=np.float64)
    xa = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    sol, *_ = np.linalg.lstsq(xa, target, rcond=None)  # [text_dim + 1, <=dim]
    w = np.zeros((config.text_dim + 1, config.dim))
    w[:, : sol.shape[1]] = sol
    with torch.no_grad():
        model.text_proj.weight.copy_(torch.as_tensor(w[:-1].T, dtype=torch.float32))
        model.text_proj.bias.copy_(torch.as_tensor(w[-1], dtype=torch.float32))
        if model.id_emb is not None:
            model.id_emb.weight.zero_()
    return model
