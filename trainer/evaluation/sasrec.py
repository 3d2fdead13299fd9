"""SASRec (Kang & McAuley, 2018), compact: the baseline a reviewer expects beside ItemKNN and EASE.

Item-id embeddings (no text) + learned positions -> a causal Transformer encoder
(pre-norm, ``n_layers`` blocks of ``n_heads`` heads) -> the hidden state at each position
scores every item by an inner product with the (tied) item embeddings. Trained with **full
cross-entropy** over the training catalogue at every position (not sampled BCE: the
stronger variant, Klenitskiy & Vasilev, 2023), AdamW, dropout, early stopping on a
validation callback (validation users only).

Training sequences are the training users' warm sequences cut into consecutive windows of
``max_len + 1`` events from the start (the cold-start prefixes are targets too); a history
is read left-aligned from its first event, as in the protocol. Items never seen in training
are dropped from histories and score below every seen item (a seeded jitter orders them).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class SASRecConfig:
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 2
    max_len: int = 50
    dropout: float = 0.2
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 10
    max_events: int | None = None
    """Train on each user's first ``max_events`` events only (the cold-start end; cost)."""
    seed: int = 0


class SASRecModel(nn.Module):
    def __init__(self, n_items: int, cfg: SASRecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.item_emb = nn.Embedding(n_items + 1, cfg.dim, padding_idx=n_items)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(
            cfg.dim,
            cfg.n_heads,
            dim_feedforward=2 * cfg.dim,
            dropout=cfg.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.pad = n_items

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """``[B, L, dim]`` for left-aligned item rows ``idx [B, L]`` (``pad`` after the end)."""
        length = idx.shape[1]
        pos = torch.arange(length, device=idx.device)
        x = self.drop(self.item_emb(idx) * self.cfg.dim**0.5 + self.pos_emb(pos))
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=idx.device), 1)
        h = self.blocks(x, mask=causal, src_key_padding_mask=idx == self.pad)
        return self.norm(h)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.item_emb.weight[: self.pad].T


def _windows(sequences: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    out = []
    for s in sequences:
        s = np.asarray(s, dtype=np.int64)
        for a in range(0, max(len(s) - 1, 0), size - 1):
            w = s[a : a + size]
            if len(w) >= 2:
                out.append(w)
    return out


class SASRec:
    """``learn(sequences, validate=...)`` then ``score(histories)`` -> ``[B, N]``."""

    def __init__(
        self, n_items: int, config: SASRecConfig | None = None, *, progress: bool = False
    ) -> None:
        self.n_items = n_items
        self.cfg = config or SASRecConfig()
        self.progress = progress
        self.model = SASRecModel(n_items, self.cfg)
        self.seen = np.zeros(n_items, dtype=bool)
        self.curve: list[dict] = []

    def learn(
        self,
        sequences: Sequence[np.ndarray],
        *,
        validate: Callable[[SASRec], float] | None = None,
    ) -> SASRec:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        self.model = SASRecModel(self.n_items, cfg)
        for s in sequences:
            self.seen[np.asarray(s, dtype=np.int64)] = True
        wins = _windows([s[: cfg.max_events] for s in sequences], cfg.max_len + 1)
        data = torch.full((len(wins), cfg.max_len + 1), self.n_items, dtype=torch.long)
        for i, w in enumerate(wins):
            data[i, : len(w)] = torch.as_tensor(w)
        unseen = torch.as_tensor(~self.seen)
        opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        best, best_state, bad = -float("inf"), copy.deepcopy(self.model.state_dict()), 0
        from tqdm import tqdm

        epochs = tqdm(
            range(1, cfg.epochs + 1), desc="sasrec", unit="epoch", leave=False,
            disable=not self.progress,
        )  # fmt: skip
        for epoch in epochs:
            self.model.train()
            tot, count = 0.0, 0
            perm = torch.as_tensor(rng.permutation(len(wins)))
            for s in range(0, len(wins), cfg.batch_size):
                b = data[perm[s : s + cfg.batch_size]]
                inp, tgt = b[:, :-1], b[:, 1:]
                valid = tgt != self.n_items
                logits = self.model.logits(self.model.hidden(inp)[valid])
                loss = F.cross_entropy(logits.masked_fill(unseen, float("-inf")), tgt[valid])
                opt.zero_grad()
                loss.backward()
                opt.step()
                tot, count = tot + loss.item() * int(valid.sum()), count + int(valid.sum())
            val = validate(self) if validate is not None else -tot / max(count, 1)
            self.curve.append({"epoch": epoch, "loss": tot / max(count, 1), "val": val})
            epochs.set_postfix(loss=f"{tot / max(count, 1):.3f}", val=f"{val:.4f}")
            if val > best:
                best, best_state, bad = val, copy.deepcopy(self.model.state_dict()), 0
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
        self.model.load_state_dict(best_state)
        self.model.eval()
        return self

    @torch.no_grad()
    def score(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        self.model.eval()
        rows = [[int(i) for i in h if self.seen[int(i)]][-self.cfg.max_len :] for h in histories]
        length = max(1, max((len(r) for r in rows), default=1))
        idx = torch.full((len(rows), length), self.n_items, dtype=torch.long)
        for b, r in enumerate(rows):
            idx[b, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        last = torch.as_tensor([max(len(r) - 1, 0) for r in rows])
        full = torch.as_tensor([len(r) > 0 for r in rows], dtype=torch.bool)
        h = torch.zeros((len(rows), self.cfg.dim))  # no known item: a zero user (all ties)
        if bool(full.any()):
            h[full] = self.model.hidden(idx[full])[torch.arange(int(full.sum())), last[full]]
        out = self.model.logits(h).double().numpy()
        floor = out.min() - 1.0 if out.size else 0.0
        out[:, ~self.seen] = floor
        return out + np.random.default_rng(self.cfg.seed).random(self.n_items) * 1e-6
