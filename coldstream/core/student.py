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


class NumpyEncoder:
    """:meth:`Student.encode` in eval mode, for inference on CPU, in numpy: the same function
    (to float32 rounding), from ragged histories of item rows (no padded tensors).

    Serving ranks micro-batches of a few users with a few events each; there torch's cost
    per operator (a packed GRU is ~60 of them) is most of the student's time. This runs the
    GRU step by step over the users still inside their history (sorted longest first, so
    they are a prefix of the batch): the cost grows with the sum of the history lengths,
    as the packed GRU's does, and the fixed cost per call is about a third of torch's
    (``coldstream bench encoder``). The weights are copied when it is built: build one per
    model. Its matrix products use numpy's BLAS, whose threads the caller limits where cores
    are counted (the worker caps them at ``COLDSTREAM_THREADS``)."""

    def __init__(self, student: Student) -> None:
        cfg = student.config

        def arr(t: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(t.detach().float().cpu().numpy())

        self.dim, self.max_len = cfg.dim, cfg.max_len
        self.n_types = cfg.n_event_types
        self.type_emb = arr(student.type_emb.weight)
        self.pos_emb = arr(student.pos_emb.weight)
        self.empty_user = arr(student.empty_user)
        self.out_w = arr(student.out.weight).T.copy()
        self.out_b = arr(student.out.bias)
        self.layers: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        if student.gru is not None:
            for n in range(cfg.n_layers):
                w_ih, w_hh = (
                    getattr(student.gru, f"weight_ih_l{n}"),
                    getattr(student.gru, f"weight_hh_l{n}"),
                )
                b_ih, b_hh = (
                    getattr(student.gru, f"bias_ih_l{n}"),
                    getattr(student.gru, f"bias_hh_l{n}"),
                )
                self.layers.append((arr(w_ih).T.copy(), arr(b_ih), arr(w_hh).T.copy(), arr(b_hh)))

    def encode(
        self,
        table: np.ndarray,
        rows: Sequence[Sequence[int]],
        types: Sequence[Sequence[int]],
    ) -> np.ndarray:
        """User vectors ``[B, dim]`` (float32) for histories given as rows of the item
        vector ``table [N, dim]`` with their event types, oldest first; the ``max_len``
        most recent events count (as :func:`pack_histories`)."""
        b, d = len(rows), self.dim
        lens = np.fromiter((min(len(r), self.max_len) for r in rows), dtype=np.int64, count=b)
        order = np.argsort(-lens, kind="stable")  # longest first: the active users, a prefix
        ls = lens[order]
        ol, lsl = order.tolist(), ls.tolist()
        total = int(ls.sum())
        starts = np.zeros(b, dtype=np.int64)
        if b > 1:
            np.cumsum(ls[:-1], out=starts[1:])
        idx = np.fromiter(
            chain.from_iterable(rows[u][len(rows[u]) - n :] for u, n in zip(ol, lsl, strict=True)),
            dtype=np.int64,
            count=total,
        )
        typ = np.fromiter(
            chain.from_iterable(
                types[u][len(types[u]) - n :] for u, n in zip(ol, lsl, strict=True)
            ),
            dtype=np.int64,
            count=total,
        )
        # position counted from the most recent event (0 = latest), as Student.encode
        pos = np.repeat(starts + ls - 1, ls) - np.arange(total)
        longest = int(ls[0]) if b else 0
        # users whose history is longer than t: the first active[t] of the sorted batch
        active = b - np.cumsum(np.bincount(ls, minlength=longest + 1))[:longest]
        # time-major: step t's inputs are rows first[t] .. first[t] + active[t] (slices, no
        # gathers in the loop)
        first = np.zeros(longest, dtype=np.int64)
        np.cumsum(active[:-1], out=first[1:])
        user = np.repeat(np.arange(b), ls)
        step = np.arange(total) - np.repeat(starts, ls)
        where = first[step] + user
        tm = np.empty((3, total), dtype=np.int64)
        tm[:, where] = (idx, np.clip(typ, 0, self.n_types - 1), pos)
        x = table[tm[0]].astype(np.float32, copy=False)
        x = x + self.type_emb[tm[1]]
        x += self.pos_emb[tm[2]]
        h = np.zeros((b, d), dtype=np.float32)
        if not self.layers:  # mean encoder
            np.add.at(h, user, x[where])
            h /= np.maximum(ls, 1)[:, None].astype(np.float32)
        gh_all = np.empty((b, 3 * d), dtype=np.float32)
        for n, (w_ih, b_ih, w_hh, b_hh) in enumerate(self.layers):
            gi = x @ w_ih
            gi += b_ih
            last = n == len(self.layers) - 1
            y = None if last else np.empty((total, d), dtype=np.float32)
            h[:] = 0.0
            for s0, c in zip(first.tolist(), active.tolist(), strict=True):
                hc, g, gh = h[:c], gi[s0 : s0 + c], gh_all[:c]
                np.matmul(hc, w_hh, out=gh)
                gh += b_hh
                rz = g[:, : 2 * d]
                rz += gh[:, : 2 * d]
                np.negative(rz, out=rz)
                np.exp(rz, out=rz)
                rz += 1.0
                np.reciprocal(rz, out=rz)  # sigmoid: r, z
                new = gh[:, 2 * d :]
                new *= rz[:, :d]
                new += g[:, 2 * d :]
                np.tanh(new, out=new)
                hc -= new  # h' = (1 - z) * n + z * h = n + z * (h - n)
                hc *= rz[:, d:]
                hc += new
                if y is not None:
                    y[s0 : s0 + c] = hc
            if y is not None:
                x = y
        u = h @ self.out_w
        u += self.out_b
        u[ls == 0] = self.empty_user
        out = np.empty_like(u)
        out[order] = u
        return out


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
