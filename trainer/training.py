"""The student's training loop (CE + optional KD). The public ``fit()`` API is :mod:`trainer.fitting`.

Training examples are ``(prefix, next item)`` pairs of the training users: every prefix
of length ``1..max_prefix`` (cold-start users are what we serve) plus
``extra_per_user`` random longer prefixes, each truncated to the student's ``max_len``
most recent events. Item vectors are recomputed every batch from the teacher text
vectors; a random ``id_dropout`` share of the id embeddings is switched off per batch so
the text projection alone can place an item (item cold start).

Loss per batch (:mod:`trainer.distill`)::

    CE(next item, over the training catalogue)
      + alpha * T^2 * KL(teacher^T || student^T)   on examples that have teacher logits
      + rank_weight * BPR(teacher's top-k vs random items)

The teacher is ``none`` (CE only), a dense matrix of teacher logits for a subsample of
the prefixes (``model``), or ``uniform`` on the same subsample (the label-smoothing
control). AdamW, dropout, early stopping on a validation callback, fixed seeds, tqdm.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from coldstream.core.student import Student, StudentConfig, pack_histories
from trainer.distill import kd_kl, next_item_ce, topk_rank_loss

Seq = tuple[np.ndarray, np.ndarray]  # (item rows, event types), oldest first


@dataclass
class TrainConfig:
    """Student training hyper-parameters (defaults chosen on validation users)."""

    epochs: int = 25
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 3
    seed: int = 0
    max_prefix: int = 30
    """All prefixes of length 1..max_prefix are training examples."""
    extra_per_user: int = 5
    """Random longer prefixes per user."""
    id_dropout: float = 0.25
    teacher: str = "none"
    """``none``, ``model`` (teacher logits given) or ``uniform`` (control)."""
    alpha: float = 0.0
    temperature: float = 1.0
    rank_weight: float = 0.0
    rank_k: int = 20
    max_seconds: float = 600.0
    """Hard wall-time budget for one training run."""
    device: str = "auto"
    """Where the student trains: ``auto`` (cuda when visible, else cpu), ``cpu``, ``cuda[:N]``
    (:func:`coldstream.core.device.resolve_device`). The returned model is always on the CPU."""


@dataclass
class Examples:
    idx: torch.Tensor  # [E, L] item rows, left-aligned
    types: torch.Tensor  # [E, L]
    mask: torch.Tensor  # [E, L]
    target: torch.Tensor  # [E]
    user: np.ndarray  # [E] position of the user in the sequence list
    length: np.ndarray  # [E] prefix length
    kd_row: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    """[E] row in the teacher-logit matrix, -1 where the example has no teacher logits."""


def prefix_positions(
    seqs: Sequence[Seq], *, max_prefix: int, extra_per_user: int, seed: int
) -> list[tuple[int, int]]:
    """``(user, t)`` pairs: the prefix ``seq[:t]`` predicts ``seq[t]``."""
    rng = np.random.default_rng(seed)
    out = []
    for u, (items, _) in enumerate(seqs):
        n = len(items)
        out += [(u, t) for t in range(1, min(max_prefix, n - 1) + 1)]
        if n - 1 > max_prefix and extra_per_user > 0:
            more = rng.choice(
                np.arange(max_prefix + 1, n),
                size=min(extra_per_user, n - 1 - max_prefix),
                replace=False,
            )
            out += [(u, int(t)) for t in sorted(more)]
    return out


def build_examples(
    seqs: Sequence[Seq], positions: Sequence[tuple[int, int]], max_len: int
) -> Examples:
    rows = [seqs[u][0][max(0, t - max_len) : t] for u, t in positions]
    types = [seqs[u][1][max(0, t - max_len) : t] for u, t in positions]
    idx, typ, mask = pack_histories(rows, types, max_len)
    target = torch.as_tensor([int(seqs[u][0][t]) for u, t in positions], dtype=torch.long)
    return Examples(
        idx=idx,
        types=typ,
        mask=mask,
        target=target,
        user=np.array([u for u, _ in positions]),
        length=np.array([t for _, t in positions]),
        kd_row=torch.full((len(positions),), -1, dtype=torch.long),
    )


def set_threads(n: int) -> None:
    torch.set_num_threads(max(1, n))


@torch.no_grad()
def student_scores(
    model: Student, text_vecs: torch.Tensor, id_index: torch.Tensor, histories: Sequence[Seq]
) -> np.ndarray:
    """Scores ``[B, N]`` of users (``(rows, types)`` histories) against all items."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device  # the model's device (cpu: every .to() is a no-op)
    table = model.item_vectors(text_vecs.to(dev), id_index.to(dev))
    idx, typ, mask = pack_histories(
        [h[0] for h in histories], [h[1] for h in histories], model.config.max_len
    )
    u = model.encode_indexed(table, idx.to(dev), typ.to(dev), mask.to(dev))
    model.train(was)
    return (u @ table.T).cpu().numpy()


def train_student(
    ex: Examples,
    *,
    text_vecs: np.ndarray,
    id_index: np.ndarray,
    catalogue: np.ndarray,
    student_config: StudentConfig,
    config: TrainConfig,
    teacher_logits: torch.Tensor | None = None,
    validate: Callable[[Student], float] | None = None,
    progress: bool = True,
    desc: str = "student",
    init: Student | None = None,
    device: str | torch.device | None = None,
) -> tuple[Student, list[dict[str, Any]]]:
    """Train a student; returns the best model (by ``validate``) and a per-epoch curve.

    ``id_index[i]`` is item ``i``'s id-embedding row or -1; ``catalogue`` (bool ``[N]``)
    marks the items known at training time (CE targets and negatives). KD spans every
    item whose text is known (the teacher reads text, so it can score new items).

    Runs on ``device`` (default: ``config.device``, ``auto`` = cuda when visible, else cpu):
    the model, item tables, examples and teacher logits move there once; batches are cut
    there. ``validate`` gets the model on that device. The returned model is on the CPU."""
    from coldstream.core.device import resolve_device

    cfg = config
    dev = resolve_device(str(device if device is not None else cfg.device))
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    # ``init``: warm start (a copy of that student; the trainer service re-distils from it)
    model = (copy.deepcopy(init).cpu() if init is not None else Student(student_config)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    text = torch.as_tensor(text_vecs, dtype=torch.float32).to(dev)
    ids = torch.as_tensor(id_index, dtype=torch.long).to(dev)
    cat = torch.as_tensor(catalogue, dtype=torch.bool).to(dev)
    ex_idx, ex_types, ex_mask = ex.idx.to(dev), ex.types.to(dev), ex.mask.to(dev)
    ex_target, ex_kd_row = ex.target.to(dev), ex.kd_row.to(dev)
    if teacher_logits is not None:
        teacher_logits = teacher_logits.to(dev)
    use_kd = cfg.teacher in ("model", "uniform") and (cfg.alpha > 0 or cfg.rank_weight > 0)
    if cfg.teacher == "model" and use_kd and teacher_logits is None:
        raise ValueError("teacher='model' needs teacher_logits")
    has_id = ids >= 0
    t0 = time.perf_counter()
    best, best_state, bad, curve = -float("inf"), copy.deepcopy(model.state_dict()), 0, []
    n = len(ex.target)
    from tqdm import tqdm

    epochs = tqdm(
        range(1, cfg.epochs + 1), desc=desc, unit="epoch", leave=False, disable=not progress
    )
    for epoch in epochs:
        model.train()
        perm = torch.as_tensor(rng.permutation(n)).to(dev)
        sums = {"loss": 0.0, "ce": 0.0, "kd": 0.0}
        for s in range(0, n, cfg.batch_size):
            b = perm[s : s + cfg.batch_size]
            drop = has_id & (torch.rand(ids.shape, device=dev) < cfg.id_dropout)
            table = model.item_vectors(text, torch.where(drop, torch.full_like(ids, -1), ids))
            u = model.encode_indexed(table, ex_idx[b], ex_types[b], ex_mask[b])
            logits = u @ table.T
            ce = next_item_ce(logits, ex_target[b], cat)
            loss = ce
            kd_val = 0.0
            if use_kd:
                rows = ex_kd_row[b]
                sel = rows >= 0
                if bool(sel.any()):
                    if cfg.teacher == "model":
                        tl = teacher_logits[rows[sel]]
                    else:
                        tl = torch.zeros((int(sel.sum()), logits.shape[1]), device=dev)
                    kd = kd_kl(logits[sel], tl, cfg.temperature)
                    loss = loss + cfg.alpha * kd
                    kd_val = kd.item()
                    if cfg.rank_weight > 0 and cfg.teacher == "model":
                        loss = loss + cfg.rank_weight * topk_rank_loss(logits[sel], tl, cfg.rank_k)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sums["loss"] += loss.item() * len(b)
            sums["ce"] += ce.item() * len(b)
            sums["kd"] += kd_val * len(b)
        row = {k: v / n for k, v in sums.items()}
        row["epoch"] = epoch
        row["seconds"] = round(time.perf_counter() - t0, 2)
        row["val"] = validate(model) if validate is not None else -row["loss"]
        curve.append(row)
        epochs.set_postfix(loss=f"{row['loss']:.3f}", val=f"{row['val']:.4f}")
        if row["val"] > best:
            best, best_state, bad = row["val"], copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
        if time.perf_counter() - t0 > cfg.max_seconds:
            break
    model.load_state_dict(best_state)
    model.cpu().eval()
    return model, curve
