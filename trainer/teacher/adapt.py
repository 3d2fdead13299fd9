"""Teacher adaptation (transfer learning) on the training users' interactions.

A zero-shot sentence encoder is a weak recommender (NDCG@10 ~0.02-0.04 on ML-100K). We
adapt it *parameter-efficiently*: the encoder stays frozen (so new items are embedded by
the stock weights, on any machine), and a small :class:`TeacherHead` is trained on top:

* user features = ``[enc(history text), mean(enc(item text) over the history)]``
* ``u' = u + A·features``,  ``x' = x + B·x`` (residual linear maps, zero-initialised, so
  training starts at the zero-shot teacher)
* ``score(u, x) = s · <norm(u'), norm(x')> + w·x``  (learned scale ``s``; ``w·x`` is an
  item prior read from the text, i.e. popularity as the text predicts it)

It is trained contrastively - history text against the text of the next items - with
the *whole training catalogue* as negatives (a superset of in-batch negatives, affordable
because the encoder outputs are cached), AdamW, dropout, and early stopping on the
validation users' NDCG@10. Encoder forward passes dominate the cost on CPU, so the
training prefixes are subsampled (see :func:`trainer.student.features.teacher_positions`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class TeacherHead(nn.Module):
    def __init__(self, dim: int, dropout: float = 0.1, scale: float = 10.0) -> None:
        super().__init__()
        self.dim = dim
        self.user_map = nn.Linear(2 * dim, dim)
        self.item_map = nn.Linear(dim, dim)
        for lin in (self.user_map, self.item_map):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.prior = nn.Linear(dim, 1)
        nn.init.zeros_(self.prior.weight)
        nn.init.zeros_(self.prior.bias)
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))
        self.drop = nn.Dropout(dropout)

    def users(self, feats: torch.Tensor) -> torch.Tensor:
        u = feats[:, : self.dim]
        return F.normalize(u + self.user_map(self.drop(feats)), dim=-1)

    def items(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x + self.item_map(self.drop(x)), dim=-1)

    def forward(self, feats: torch.Tensor, item_vecs: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, N]``."""
        return self.log_scale.exp() * self.users(feats) @ self.items(item_vecs).T + self.prior(
            item_vecs
        ).squeeze(-1)

    @torch.no_grad()
    def score(self, feats: np.ndarray, item_vecs: np.ndarray) -> np.ndarray:
        self.eval()
        return self(torch.as_tensor(feats), torch.as_tensor(item_vecs)).numpy()


def zero_shot_logits(feats: np.ndarray, item_vecs: np.ndarray) -> np.ndarray:
    """The zero-shot teacher: cosine of history-text and item-text vectors."""
    d = item_vecs.shape[1]
    return feats[:, :d] @ item_vecs.T


@dataclass
class HeadConfig:
    epochs: int = 60
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    dropout: float = 0.1
    patience: int = 5
    seed: int = 0


def fit_head(
    feats: np.ndarray,
    targets: list[np.ndarray],
    item_vecs: np.ndarray,
    catalogue: np.ndarray,
    *,
    config: HeadConfig | None = None,
    validate: Callable[[TeacherHead], float] | None = None,
    progress: bool = False,
) -> tuple[TeacherHead, list[dict]]:
    """Train a :class:`TeacherHead`. ``targets[i]`` are the positive items of example
    ``i`` (the next items; a soft multi-positive target), ``catalogue`` (bool ``[N]``)
    the items known at training time. Early stopping on ``validate(head)`` (higher is
    better, computed on validation users only). Returns the best head and a curve."""
    cfg = config or HeadConfig()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    n = item_vecs.shape[0]
    head = TeacherHead(item_vecs.shape[1], dropout=cfg.dropout)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    X = torch.as_tensor(feats, dtype=torch.float32)
    V = torch.as_tensor(item_vecs, dtype=torch.float32)
    cat = torch.as_tensor(catalogue, dtype=torch.bool)
    Y = torch.zeros((len(targets), n), dtype=torch.float32)
    for i, t in enumerate(targets):
        if len(t):
            Y[i, torch.as_tensor(t, dtype=torch.long)] = 1.0 / len(t)
    # without a validation callback an epoch scores -loss: start below any finite score, so the
    # first trained epoch replaces the zero-initialised head (it used to start at -1.0, which a
    # loss > 1 never beat: the untrained head came back)
    best, best_state, bad, curve = -float("inf"), copy.deepcopy(head.state_dict()), 0, []
    if validate is not None:
        best = validate(head)
        curve.append({"epoch": 0, "loss": None, "val": best})
    it = range(1, cfg.epochs + 1)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="adapt teacher", unit="epoch", leave=False)
    for epoch in it:
        head.train()
        perm = rng.permutation(len(targets))
        tot = 0.0
        for s in range(0, len(perm), cfg.batch_size):
            b = torch.as_tensor(perm[s : s + cfg.batch_size])
            logits = head(X[b], V).masked_fill(~cat, float("-inf"))
            loss = -(Y[b] * F.log_softmax(logits, -1).clamp(min=-1e4)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += loss.item() * len(b)
        val = validate(head) if validate is not None else -float(tot)
        curve.append({"epoch": epoch, "loss": tot / max(len(perm), 1), "val": val})
        if val > best:
            best, best_state, bad = val, copy.deepcopy(head.state_dict()), 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    head.load_state_dict(best_state)
    head.eval()
    return head, curve


def calibrate_temperature(
    logits: np.ndarray, targets: np.ndarray, grid: np.ndarray | None = None
) -> float:
    """The temperature ``tau`` minimising the NLL of ``targets`` under ``softmax(logits/tau)``
    (run on validation users only). Non-finite logits (excluded items) are ignored."""
    grid = np.exp(np.linspace(np.log(0.01), np.log(10.0), 61)) if grid is None else grid
    lt = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(targets, dtype=torch.long)
    best, best_nll = 1.0, float("inf")
    for tau in grid:
        nll = float(F.cross_entropy(lt / tau, y))
        if nll < best_nll:
            best, best_nll = float(tau), nll
    return best
