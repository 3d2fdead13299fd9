"""The student: a small sequence encoder that runs on every event.

The whole model lives in this file, with its ``@dataclass`` config (nanoGPT style).

* **Items** are placed by their text: ``item = proj(teacher_text_vector) + id_embedding``.
  A brand-new item has no id embedding (index ``-1``) and is placed by its text alone,
  which is what makes item cold start work.
* **Users** are encoded from their recent items (the item vectors above), the event
  type (click / purchase) and the position counted from the most recent event, by a
  GRU (default) or a mean-pool encoder.
* **Scores** are inner products ``user . item``, so a FAISS inner-product index serves
  them exactly.

Only ``torch`` is imported here: the serving path loads this file, never ``transformers``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from itertools import chain

import numpy as np
import torch
from torch import nn

from coldstream.core.events import EVENT_TYPES

# Sanity bounds checked before any allocation when a config comes from disk
# (a hostile or corrupt checkpoint must not make us allocate terabytes).
CONFIG_LIMITS: dict[str, tuple[int, int]] = {
    "n_items": (1, 50_000_000),
    "text_dim": (1, 8192),
    "dim": (1, 4096),
    "max_len": (1, 4096),
    "n_event_types": (1, 64),
    "n_layers": (1, 16),
}
MAX_PARAMETERS = 2_000_000_000


@dataclass
class StudentConfig:
    """Everything needed to rebuild a :class:`Student` (stored in ``config.json``)."""

    n_items: int
    """Size of the item-id embedding table (items known at training time)."""
    text_dim: int = 384
    """Width of the teacher's item text vectors."""
    dim: int = 64
    """Width of user and item vectors (the FAISS index dimension)."""
    max_len: int = 50
    """Most recent events used to encode a user."""
    n_event_types: int = len(EVENT_TYPES)
    encoder: str = "gru"
    """``gru`` or ``mean``."""
    n_layers: int = 1
    dropout: float = 0.2
    id_embeddings: bool = True
    """Learn a per-item correction on top of the text projection."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> StudentConfig:
        """Build a config from untrusted data: unknown keys, wrong types and absurd
        sizes raise ``ValueError`` before anything is allocated."""
        if not isinstance(data, dict):
            raise ValueError("student config must be a JSON object")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown student config keys: {unknown}")
        if "n_items" not in data:
            raise ValueError("student config lacks n_items")
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for name, (lo, hi) in CONFIG_LIMITS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"student config {name} must be an integer, got {value!r}")
            if not lo <= value <= hi:
                raise ValueError(f"student config {name}={value} outside [{lo}, {hi}]")
        if self.encoder not in ("gru", "mean"):
            raise ValueError(
                f"student config encoder must be 'gru' or 'mean', got {self.encoder!r}"
            )
        if not isinstance(self.dropout, int | float) or not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"student config dropout must be in [0, 1), got {self.dropout!r}")
        if self.parameter_count() > MAX_PARAMETERS:
            raise ValueError(f"student config asks for {self.parameter_count():,} parameters")

    def parameter_count(self) -> int:
        """Number of parameters the config implies (computed without allocating)."""
        d = self.dim
        n = self.text_dim * d + d  # text projection
        n += self.n_items * d if self.id_embeddings else 0
        n += self.n_event_types * d + self.max_len * d + d  # type, position, empty user
        if self.encoder == "gru":
            n += self.n_layers * 2 * (3 * d * d + 3 * d)
        n += d * d + d  # output layer
        return n


class Student(nn.Module):
    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        d = config.dim
        self.text_proj = nn.Linear(config.text_dim, d)
        self.id_emb = nn.Embedding(config.n_items, d) if config.id_embeddings else None
        if self.id_emb is not None:
            nn.init.normal_(self.id_emb.weight, std=0.01)
        self.type_emb = nn.Embedding(config.n_event_types, d)
        self.pos_emb = nn.Embedding(config.max_len, d)
        nn.init.normal_(self.type_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        self.empty_user = nn.Parameter(torch.zeros(d))
        self.gru = (
            nn.GRU(
                d,
                d,
                num_layers=config.n_layers,
                batch_first=True,
                dropout=config.dropout if config.n_layers > 1 else 0.0,
            )
            if config.encoder == "gru"
            else None
        )
        self.out = nn.Linear(d, d)
        self.drop = nn.Dropout(config.dropout)

    # -- items ---------------------------------------------------------------------------
    def item_vectors(
        self, text_vecs: torch.Tensor, item_idx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Item vectors ``[N, dim]`` from teacher text vectors ``[N, text_dim]``.

        ``item_idx[i]`` is the row of item ``i`` in the id-embedding table, or ``-1``
        for an item the model has never seen (placed by its text alone)."""
        v = self.text_proj(text_vecs)
        if self.id_emb is not None and item_idx is not None:
            known = (item_idx >= 0).unsqueeze(-1).to(v.dtype)
            v = v + self.id_emb(item_idx.clamp(min=0)) * known
        return v

    # -- users ---------------------------------------------------------------------------
    def encode(
        self, hist_vecs: torch.Tensor, hist_types: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """User vectors ``[B, dim]``.

        ``hist_vecs [B, L, dim]`` are item vectors of each user's events, oldest first,
        left-aligned (valid positions first, padding after); ``mask [B, L]`` is True on
        valid positions. A user with no valid event gets the learned ``empty_user``."""
        b, length, _ = hist_vecs.shape
        lengths = mask.sum(dim=1)
        # position counted from the most recent event: 0 = latest
        ar = torch.arange(length, device=hist_vecs.device).unsqueeze(0)
        pos = (lengths.unsqueeze(1) - 1 - ar).clamp(min=0, max=self.config.max_len - 1)
        x = (
            hist_vecs
            + self.type_emb(hist_types.clamp(0, self.config.n_event_types - 1))
            + self.pos_emb(pos)
        )
        x = self.drop(x) * mask.unsqueeze(-1).to(x.dtype)
        if self.gru is not None and not self.training and b > 1 and length > 1:
            # Inference: the GRU runs each history for its own length (a packed sequence),
            # not the batch's longest: the cost grows with the sum of the lengths, not with
            # B x the longest (one 50-event user in a batch of 3-event users cost ~10x).
            # Padding follows the valid steps, so the last valid state is the same.
            packed = nn.utils.rnn.pack_padded_sequence(
                x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
            )
            h = self.gru(packed)[1][-1]
        elif self.gru is not None:
            out, _ = self.gru(x)
            last = (lengths - 1).clamp(min=0)
            h = out[torch.arange(b, device=x.device), last]
        else:
            h = x.sum(dim=1) / lengths.clamp(min=1).unsqueeze(-1).to(x.dtype)
        u = self.out(self.drop(h))
        empty = (lengths == 0).unsqueeze(-1)
        return torch.where(empty, self.empty_user.expand_as(u), u)

    def encode_indexed(
        self, table: torch.Tensor, idx: torch.Tensor, types: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Like :meth:`encode`, with histories given as rows ``idx [B, L]`` of an item
        vector ``table [N, dim]`` (padding rows are ignored through ``mask``)."""
        return self.encode(table[idx], types, mask)


def pack_histories(
    rows: Sequence[Sequence[int]],
    types: Sequence[Sequence[int]],
    max_len: int,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pack variable-length histories (oldest first) into left-aligned tensors, keeping the
    ``max_len`` most recent events: ``(idx, types, mask)``, each ``[B, L]`` with
    ``L = max(1, min(max_len, longest history))``. Vectorised with numpy: training, the
    checkpoint API and every serving micro-batch share it."""
    b = len(rows)
    lens = np.fromiter((min(len(r), max_len) for r in rows), dtype=np.int64, count=b)
    length = max(1, int(lens.max(initial=0)))
    lens = np.minimum(lens, length)
    mask = np.arange(length)[None, :] < lens[:, None]
    idx = np.zeros((b, length), dtype=np.int64)
    typ = np.zeros((b, length), dtype=np.int64)
    if b:
        idx[mask] = np.fromiter(
            chain.from_iterable(r[len(r) - n :] for r, n in zip(rows, lens.tolist(), strict=True)),
            dtype=np.int64,
        )
        typ[mask] = np.fromiter(
            chain.from_iterable(t[len(t) - n :] for t, n in zip(types, lens.tolist(), strict=True)),
            dtype=np.int64,
        )
    return (
        torch.from_numpy(idx).to(device),
        torch.from_numpy(typ).to(device),
        torch.from_numpy(mask).to(device),
    )
