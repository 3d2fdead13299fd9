"""The student's training loop (CE + optional KD). The public ``fit()`` API is :mod:`trainer.student.fitting`.

Training examples are ``(prefix, next item)`` pairs of the training users: every prefix
of length ``1..max_prefix`` (cold-start users are what we serve) plus
``extra_per_user`` random longer prefixes, each truncated to the student's ``max_len``
most recent events. :class:`Examples` keeps them as offsets into one flat array of the
users' events, so their memory is ``O(events + examples)``, not ``O(examples x max_len)``;
a batch's padded histories are cut from it on the fly. A random ``id_dropout`` share of the
id embeddings is switched off per batch so the text projection alone can place an item
(item cold start).

Loss per batch (:mod:`trainer.student.distill`)::

    CE(next item, over the training catalogue)
      + alpha * T^2 * KL(teacher^T || student^T)   on examples that have teacher targets
      + rank_weight * rank(teacher's top-k)         BPR or DLLM2Rec (``rank_kind``)

Two paths compute it (``softmax``; ``auto`` picks by catalogue size, threshold
:data:`FULL_SOFTMAX_MAX_ITEMS`):

* **full** -- the exact reference: every batch recomputes all ``N`` item vectors and the
  ``[B, N]`` logits; dense teacher logits ``[P, N]`` (a :class:`~trainer.teacher.topk.TopK` is
  written densely, ``-inf`` outside its top-K). Cost per batch ``O(B x N x dim + N x
  text_dim x dim)``.
* **sampled** -- catalogue scale: item vectors only for the batch's items (histories,
  targets, negatives, teacher top-K); CE by sampled softmax with logQ correction over
  ``negatives`` uniform items plus the batch's own targets (mixed negatives,
  :func:`~trainer.student.distill.sampled_softmax_ce`); KD over the teacher's top-``teacher_topk``
  plus the same negatives, which the teacher scores too when its top-K carries a
  :class:`~trainer.teacher.topk.PairScorer` (``kd_outside``; :func:`~trainer.student.distill.topk_kd_kl`),
  the ranking term against the uniform negatives
  (:func:`~trainer.student.distill.rank_distill_loss`). Cost per batch ``O(B x (L + K + M) x dim)``
  plus the teacher's ``O(M x d_t^2 + B x M x d_t)`` for the negatives, independent of
  ``N``; teacher targets ``O(P x K)``.

Above the threshold the id embeddings also get sparse gradients and a lazy Adam
(``SparseAdam``: only the rows a batch touched are updated, no weight decay on them): a
dense AdamW step over a 1M x 64 table reads and writes ~1.8 GB per batch. AdamW for every
other parameter. The teacher is ``none`` (CE only), ``model`` (teacher targets given:
dense logits or a :class:`~trainer.teacher.topk.TopK`) or ``uniform`` (the label-smoothing
control: equal logits; in the sampled path over ``teacher_topk`` random items per row).
Early stopping on a validation callback, fixed seeds, tqdm.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from coldstream.core.student import Student, StudentConfig, pack_histories
from trainer.student.distill import (
    dllm2rec_rank_loss,
    kd_kl,
    next_item_ce,
    rank_distill_loss,
    sampled_softmax_ce,
    topk_kd_kl,
    topk_rank_loss,
)
from trainer.teacher.topk import TopK

Seq = tuple[np.ndarray, np.ndarray]  # (item rows, event types), oldest first

FULL_SOFTMAX_MAX_ITEMS = 20_000
"""``softmax="auto"`` trains with the exact full softmax up to this many items, sampled above.
The full path's cost per batch grows with the catalogue; the sampled one's is bounded by the
items a batch touches (``B x (L + K) + M``): per
256-example batch with KD on every row, 1 CPU thread (``coldstream bench train-scale --part
paths``, reports/bench-train-scale.json), 0.28 s full vs 0.41 s sampled at 10k items, 4.5 s
vs 0.38 s at 50k, 16.8 s vs 0.93 s at 200k. MovieLens (1.7k items) stays exact."""

SOFTMAX_MODES = ("auto", "full", "sampled")
RANK_KINDS = ("bpr", "dllm2rec")


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
    rank_kind: str = "bpr"
    """The ranking term: ``bpr`` (teacher's top-k vs random items, :func:`trainer.student.distill.topk_rank_loss`)
    or ``dllm2rec`` (top-k weighted by position, confidence and consistency,
    :func:`trainer.student.distill.dllm2rec_rank_loss`)."""
    max_seconds: float = 600.0
    """Hard wall-time budget for one training run."""
    device: str = "auto"
    """Where the student trains: ``auto`` (cuda when visible, else cpu), ``cpu``, ``cuda[:N]``
    (:func:`coldstream.core.device.resolve_device`). The returned model is always on the CPU."""
    softmax: str = "auto"
    """``full`` (exact, ``O(N)`` per example), ``sampled`` (catalogue scale) or ``auto``: full up
    to ``full_softmax_max_items`` items, sampled above."""
    full_softmax_max_items: int = FULL_SOFTMAX_MAX_ITEMS
    """The ``auto`` threshold (also where the id embeddings switch to lazy sparse updates)."""
    negatives: int = 1024
    """Sampled path: uniform negatives per batch, shared by its rows, plus the batch's own
    targets (mixed negatives); ``-1``: every item once (exact, for checks)."""
    teacher_topk: int = 100
    """Sampled path: the teacher's items per prefix that KD reads (top-K)."""
    kd_outside: str = "auto"
    """Sampled path: how KD treats the teacher's mass outside its top-K
    (:func:`~trainer.student.distill.topk_kd_kl`). ``scored``: the teacher scores the batch's
    negatives too (needs :attr:`TopK.scorer <trainer.teacher.topk.TopK.scorer>`); ``tail``: one
    bucket for it (needs the top-K's tail at ``temperature``); ``renorm``: the teacher
    renormalised over its top-K; ``auto``: ``scored`` when the top-K has a scorer, else
    ``renorm``."""

    def mode(self, n_items: int) -> str:
        """``full`` or ``sampled`` for a catalogue of ``n_items``."""
        if self.softmax not in SOFTMAX_MODES:
            raise ValueError(f"softmax must be one of {SOFTMAX_MODES}, got {self.softmax!r}")
        if self.softmax != "auto":
            return self.softmax
        return "full" if n_items <= self.full_softmax_max_items else "sampled"


@dataclass
class Examples:
    """Training examples ``(prefix, next item)`` as offsets into the flat event arrays of the
    users' sequences: memory ``O(events + examples)``. :meth:`batch` cuts the left-aligned
    padded histories of some examples (what :func:`coldstream.core.student.pack_histories`
    gives); ``idx``/``types``/``mask`` are those of every example (small sets only)."""

    tokens: torch.Tensor
    """``[T]`` item rows of every sequence, concatenated."""
    token_types: torch.Tensor
    """``[T]`` their event types."""
    start: torch.Tensor
    """``[E]`` where example ``e``'s (truncated) history starts in :attr:`tokens`."""
    hist_len: torch.Tensor
    """``[E]`` its number of events (``min(prefix length, max_len)``)."""
    target: torch.Tensor  # [E]
    user: np.ndarray  # [E] position of the user in the sequence list
    length: np.ndarray  # [E] prefix length
    width: int = 1
    """Padded history width of every batch: ``max(1, max(hist_len))`` (as ``pack_histories``)."""
    kd_row: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    """[E] row in the teacher targets (logits or top-K), -1 where the example has none."""

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def batch(self, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(idx, types, mask)`` ``[len(b), width]`` of examples ``b`` (on their device)."""
        ar = torch.arange(self.width, device=self.tokens.device)
        n = self.hist_len[b]
        mask = ar.unsqueeze(0) < n.unsqueeze(1)
        pos = (self.start[b].unsqueeze(1) + ar).clamp(max=max(len(self.tokens) - 1, 0))
        idx = torch.where(mask, self.tokens[pos], 0) if len(self.tokens) else pos * 0
        typ = torch.where(mask, self.token_types[pos], 0) if len(self.tokens) else pos * 0
        return idx, typ, mask

    def to(self, device: torch.device | str) -> Examples:
        return Examples(
            self.tokens.to(device),
            self.token_types.to(device),
            self.start.to(device),
            self.hist_len.to(device),
            self.target.to(device),
            self.user,
            self.length,
            self.width,
            self.kd_row.to(device),
        )

    @property
    def idx(self) -> torch.Tensor:
        return self.batch(torch.arange(len(self), device=self.tokens.device))[0]

    @property
    def types(self) -> torch.Tensor:
        return self.batch(torch.arange(len(self), device=self.tokens.device))[1]

    @property
    def mask(self) -> torch.Tensor:
        return self.batch(torch.arange(len(self), device=self.tokens.device))[2]


Positions = Sequence[tuple[int, int]] | tuple[np.ndarray, np.ndarray]
"""Training prefixes: ``(user, t)`` pairs, or the two arrays ``(users, ts)``."""


def position_arrays(positions: Positions) -> tuple[np.ndarray, np.ndarray]:
    """``(users, ts)`` int64 arrays of ``positions`` (pairs or arrays)."""
    if (
        isinstance(positions, tuple)
        and len(positions) == 2
        and isinstance(positions[0], np.ndarray)
    ):
        return positions[0].astype(np.int64), positions[1].astype(np.int64)
    arr = np.asarray(list(positions), dtype=np.int64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def prefix_position_arrays(
    seqs: Sequence[Seq], *, max_prefix: int, extra_per_user: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The prefixes of :func:`prefix_positions` as two int64 arrays ``(users, ts)``, in the
    same order (by user, then ``t``), drawn with the same random numbers; ``O(examples)``
    memory without Python tuples."""
    rng = np.random.default_rng(seed)
    lengths = np.fromiter((len(s[0]) for s in seqs), dtype=np.int64, count=len(seqs))
    first = np.clip(np.minimum(max_prefix, lengths - 1), 0, None)
    users = [np.repeat(np.arange(len(seqs), dtype=np.int64), first)]
    offsets = np.cumsum(first) - first
    ts = [np.arange(int(first.sum()), dtype=np.int64) - np.repeat(offsets, first) + 1]
    if extra_per_user > 0:
        eu, et = [], []
        for u in np.flatnonzero(lengths - 1 > max_prefix):
            n = int(lengths[u])
            more = rng.choice(
                np.arange(max_prefix + 1, n),
                size=min(extra_per_user, n - 1 - max_prefix),
                replace=False,
            )
            et.append(np.sort(more))
            eu.append(np.full(len(more), u, dtype=np.int64))
        if eu:
            users.append(np.concatenate(eu))
            ts.append(np.concatenate(et).astype(np.int64))
    return sorted_positions(users, ts)


def sorted_positions(
    users: list[np.ndarray], ts: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The ``(user row, position)`` pairs of the chunks ``users`` / ``ts``, concatenated and
    sorted by user, then position."""
    u_all, t_all = np.concatenate(users), np.concatenate(ts)
    order = np.lexsort((t_all, u_all))
    return u_all[order], t_all[order]


def prefix_positions(
    seqs: Sequence[Seq], *, max_prefix: int, extra_per_user: int, seed: int
) -> list[tuple[int, int]]:
    """``(user, t)`` pairs: the prefix ``seq[:t]`` predicts ``seq[t]``: every ``t`` in
    ``1..min(max_prefix, len - 1)`` and ``extra_per_user`` random longer ones per user (large
    sets: :func:`prefix_position_arrays`)."""
    u, t = prefix_position_arrays(
        seqs, max_prefix=max_prefix, extra_per_user=extra_per_user, seed=seed
    )
    return list(zip(u.tolist(), t.tolist(), strict=True))


def build_examples(seqs: Sequence[Seq], positions: Positions, max_len: int) -> Examples:
    """The examples of ``positions`` (``(user, t)`` pairs or arrays) over ``seqs``, histories
    truncated to the ``max_len`` most recent events."""
    users, ts = position_arrays(positions)
    lengths = np.fromiter((len(s[0]) for s in seqs), dtype=np.int64, count=len(seqs))
    offsets = np.cumsum(lengths) - lengths
    tokens = np.concatenate([np.asarray(s[0], np.int64) for s in seqs]) if seqs else np.zeros(0)
    types = np.concatenate([np.asarray(s[1], np.int64) for s in seqs]) if seqs else np.zeros(0)
    n = np.minimum(ts, max_len)
    start = offsets[users] + ts - n if len(users) else np.zeros(0, np.int64)
    target = tokens[offsets[users] + ts] if len(users) else np.zeros(0, np.int64)
    return Examples(
        tokens=torch.as_tensor(tokens, dtype=torch.long),
        token_types=torch.as_tensor(types, dtype=torch.long),
        start=torch.as_tensor(start, dtype=torch.long),
        hist_len=torch.as_tensor(n, dtype=torch.long),
        target=torch.as_tensor(target, dtype=torch.long),
        user=users,
        length=ts,
        width=max(1, int(n.max(initial=0))),
        kd_row=torch.full((len(users),), -1, dtype=torch.long),
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


@torch.no_grad()
def student_item_vectors(
    model: Student,
    text_vecs: np.ndarray | torch.Tensor,
    id_index: np.ndarray | torch.Tensor,
    chunk: int = 65536,
) -> torch.Tensor:
    """The student's item vectors ``[N, dim]`` (eval mode), computed ``chunk`` items at a time."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    text = torch.as_tensor(text_vecs, dtype=torch.float32)
    ids = torch.as_tensor(id_index, dtype=torch.long)
    out = (
        torch.cat(
            [
                model.item_vectors(text[s : s + chunk].to(dev), ids[s : s + chunk].to(dev))
                for s in range(0, len(text), chunk)
            ]
        )
        if len(text)
        else torch.zeros((0, model.config.dim), device=dev)
    )
    model.train(was)
    return out


@torch.no_grad()
def encode_users(model: Student, table: torch.Tensor, histories: Sequence[Seq]) -> torch.Tensor:
    """User vectors ``[B, dim]`` of ``(rows, types)`` histories over an item ``table``."""
    was = model.training
    model.eval()
    dev = table.device
    idx, typ, mask = pack_histories(
        [h[0] for h in histories], [h[1] for h in histories], model.config.max_len
    )
    u = model.encode_indexed(table, idx.to(dev), typ.to(dev), mask.to(dev))
    model.train(was)
    return u


def clip_grad_norm(params: Sequence[torch.nn.Parameter], max_norm: float) -> float:
    """``torch.nn.utils.clip_grad_norm_`` for a mix of dense and sparse (COO) gradients."""
    sq = []
    for p in params:
        if p.grad is None:
            continue
        g = p.grad.coalesce() if p.grad.is_sparse else p.grad
        if p.grad.is_sparse:
            p.grad = g
        sq.append((g.values() if g.is_sparse else g).float().pow(2).sum())
    if not sq:
        return 0.0
    total = float(torch.stack(sq).sum().sqrt())
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for p in params:
            if p.grad is not None:
                p.grad.mul_(scale)
    return total


@dataclass
class _Batch:
    """The per-batch loss terms of one path."""

    ce: torch.Tensor
    kd: torch.Tensor | None = None
    rank: torch.Tensor | None = None


class _FullPath:
    """Exact full-softmax losses (see the module doc)."""

    def __init__(self, trainer: _Trainer) -> None:
        self.t = trainer
        if isinstance(trainer.teacher, TopK):
            trainer.teacher = trainer.teacher.dense(trainer.n_items).to(trainer.dev)

    def __call__(self, b: torch.Tensor) -> _Batch:
        t, cfg, model, dev = self.t, self.t.cfg, self.t.model, self.t.dev
        drop = t.has_id & (torch.rand(t.ids.shape, device=dev) < cfg.id_dropout)
        table = model.item_vectors(t.text, torch.where(drop, torch.full_like(t.ids, -1), t.ids))
        idx, typ, mask = t.ex.batch(b)
        u = model.encode_indexed(table, idx, typ, mask)
        logits = u @ table.T
        out = _Batch(next_item_ce(logits, t.ex.target[b], t.cat))
        rows = t.ex.kd_row[b]
        sel = rows >= 0
        if t.use_kd and bool(sel.any()):
            if cfg.teacher == "model":
                tl = t.teacher[rows[sel]]
            else:
                tl = torch.zeros((int(sel.sum()), logits.shape[1]), device=dev)
            out.kd = kd_kl(logits[sel], tl, cfg.temperature)
            if cfg.rank_weight > 0 and cfg.teacher == "model":
                rank = dllm2rec_rank_loss if cfg.rank_kind == "dllm2rec" else topk_rank_loss
                out.rank = rank(logits[sel], tl, cfg.rank_k)
        return out


KD_OUTSIDE = ("auto", "scored", "tail", "renorm")


def _kd_outside(cfg: TrainConfig, top: TopK) -> str:
    """The sampled KD's treatment of the teacher's mass outside its top-K (``kd_outside``)."""
    if cfg.kd_outside not in KD_OUTSIDE:
        raise ValueError(f"kd_outside must be one of {KD_OUTSIDE}, got {cfg.kd_outside!r}")
    if cfg.kd_outside == "auto":
        return "scored" if top.scorer is not None else "renorm"
    if cfg.kd_outside == "scored" and top.scorer is None:
        raise ValueError(
            "kd_outside='scored' needs a teacher top-K with a scorer (head_topk and the "
            "trainer's scorer_topk attach one); use 'tail' or 'renorm' otherwise"
        )
    return cfg.kd_outside


def _in_sorted(sorted_rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Bool ``[R, M]``: ``values[r, m]`` (or ``values[m]``) is in row ``r`` of ``sorted_rows``."""
    v = values if values.dim() == 2 else values.unsqueeze(0).expand(len(sorted_rows), -1)
    pos = torch.searchsorted(sorted_rows, v.contiguous()).clamp(max=sorted_rows.shape[1] - 1)
    return sorted_rows.gather(1, pos) == v


class _SampledPath:
    """Catalogue-scale losses: mixed negatives, logQ, teacher top-K (see the module doc)."""

    def __init__(self, trainer: _Trainer) -> None:
        self.t = trainer
        cfg, dev, n = trainer.cfg, trainer.dev, trainer.n_items
        if trainer.teacher is not None and not isinstance(trainer.teacher, TopK):
            trainer.teacher = TopK.from_dense(
                trainer.teacher.cpu(), cfg.teacher_topk, temperatures=(cfg.temperature,)
            )
        self.outside = "renorm"
        self.tail: torch.Tensor | None = None
        if isinstance(trainer.teacher, TopK):
            trainer.teacher = trainer.teacher.truncate(cfg.teacher_topk).to(dev)
            self.outside = _kd_outside(cfg, trainer.teacher)
            if self.outside == "tail" and trainer.use_kd and cfg.teacher == "model":
                self.tail = trainer.teacher.tail(cfg.temperature)
                if self.tail is None:
                    raise ValueError(
                        f"kd_outside='tail' needs the teacher top-K's tail at "
                        f"T={cfg.temperature} (made with temperatures="
                        f"{sorted(trainer.teacher.tails) or '()'}): pass temperatures="
                        f"({cfg.temperature},) where the top-K is computed"
                    )
        elif cfg.kd_outside in ("tail", "scored") and cfg.teacher == "uniform":
            self.outside = cfg.kd_outside
        counts = torch.bincount(trainer.ex.target, minlength=n).to(torch.float32)
        self.target_prob = (counts / counts.sum().clamp_min(1.0)).to(dev)
        self.all_items = torch.arange(n, device=dev) if cfg.negatives < 0 else None
        self.k = min(cfg.teacher_topk, n)
        # the uniform control: every item outside its K random ones has logit 0
        self.uniform_tail = math.log(n - self.k) if n > self.k else -math.inf

    def negatives(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float, int]:
        """``(items [M'], log expected count, uniform part size)`` of one batch."""
        t, cfg = self.t, self.t.cfg
        if self.all_items is not None:
            return self.all_items, 0.0, len(self.all_items)
        m = cfg.negatives
        uni = torch.randint(0, t.n_items, (m,), device=t.dev)
        neg = torch.cat([uni, target])
        lc = torch.log(m / t.n_items + len(target) * self.target_prob[neg])
        return neg, lc, m

    def __call__(self, b: torch.Tensor) -> _Batch:
        t, cfg, model, dev = self.t, self.t.cfg, self.t.model, self.t.dev
        idx, typ, mask = t.ex.batch(b)
        target = t.ex.target[b]
        neg, lc, n_uni = self.negatives(target)
        rows = t.ex.kd_row[b]
        sel = rows >= 0 if t.use_kd else torch.zeros_like(rows, dtype=torch.bool)
        n_kd = int(sel.sum())
        if n_kd and cfg.teacher == "model":
            top_ids, top_t = t.teacher.ids[rows[sel]], t.teacher.logits[rows[sel]]
        elif n_kd:  # uniform control: equal logits on random items
            top_ids = torch.randint(0, t.n_items, (n_kd, self.k), device=dev)
            top_t = torch.zeros((n_kd, self.k), device=dev)
        else:
            top_ids = torch.zeros((0, self.k), dtype=torch.long, device=dev)
            top_t = torch.zeros((0, self.k), device=dev)
        need = torch.cat([idx[mask], target, neg, top_ids.clamp_min(0).flatten()])
        uniq, inv = torch.unique(need, return_inverse=True)
        ids = t.ids[uniq]
        drop = (ids >= 0) & (torch.rand(ids.shape, device=dev) < cfg.id_dropout)
        table = model.item_vectors(t.text[uniq], torch.where(drop, torch.full_like(ids, -1), ids))
        sizes = [int(mask.sum()), len(target), len(neg), top_ids.numel()]
        h_r, tgt_r, neg_r, top_r = torch.split(inv, sizes)
        local = torch.zeros_like(idx)
        local[mask] = h_r
        u = model.encode_indexed(table, local, typ, mask)
        pos = (u * table[tgt_r]).sum(-1)
        neg_s = u @ table[neg_r].T  # [B, M']
        hits = neg.unsqueeze(0) == target.unsqueeze(1)
        ce_mask = hits | ~t.cat[neg].unsqueeze(0)
        out = _Batch(sampled_softmax_ce(pos, neg_s, lc, neg_mask=ce_mask))
        if n_kd:
            top_r = top_r.view(n_kd, -1)
            st = (u[sel].unsqueeze(1) * table[top_r]).sum(-1)  # [n_kd, K]
            st = st.masked_fill(top_ids < 0, float("-inf"))  # padding: not an item
            in_top = _in_sorted(top_ids.sort(1).values, neg)
            nsel = neg_s[sel]
            lcs = lc if isinstance(lc, float) else lc.unsqueeze(0)
            tail = tneg = None
            if self.outside == "scored":
                tneg = (
                    t.teacher.scorer(rows[sel], neg)
                    if cfg.teacher == "model"
                    else torch.zeros_like(nsel)  # uniform: logit 0 everywhere
                )
            elif self.outside == "tail":
                tail = (
                    self.tail[rows[sel]]
                    if cfg.teacher == "model" and self.tail is not None
                    else torch.full((n_kd,), self.uniform_tail, device=dev)
                )
            out.kd = topk_kd_kl(
                st,
                top_t,
                nsel,
                lcs,
                neg_mask=in_top,
                teacher_tail=tail,
                teacher_neg=tneg,
                temperature=cfg.temperature,
            )
            if cfg.rank_weight > 0 and cfg.teacher == "model":
                k = min(cfg.rank_k, st.shape[1])
                kw: dict[str, Any] = (
                    {}
                    if cfg.rank_kind == "dllm2rec"
                    else {"beta": math.inf, "mix": (1.0, 0.0, 0.0)}  # BPR: uniform weights
                )
                out.rank = rank_distill_loss(
                    st[:, :k], top_t[:, :k], nsel[:, :n_uni], neg_mask=in_top[:, :n_uni], **kw
                )
        return out


class _Trainer:
    """What both paths read: the model, item tables and examples on the device."""

    def __init__(self, ex, text_vecs, id_index, catalogue, model, cfg, teacher, dev) -> None:
        self.cfg, self.dev, self.model = cfg, dev, model
        self.text = torch.as_tensor(text_vecs, dtype=torch.float32).to(dev)
        self.ids = torch.as_tensor(id_index, dtype=torch.long).to(dev)
        self.cat = torch.as_tensor(catalogue, dtype=torch.bool).to(dev)
        self.has_id = self.ids >= 0
        self.n_items = len(self.ids)
        self.ex = ex.to(dev)
        self.teacher = teacher.to(dev) if teacher is not None else None
        self.use_kd = cfg.teacher in ("model", "uniform") and (cfg.alpha > 0 or cfg.rank_weight > 0)
        if cfg.teacher == "model" and self.use_kd and teacher is None:
            raise ValueError("teacher='model' needs teacher_logits")


def train_student(
    ex: Examples,
    *,
    text_vecs: np.ndarray,
    id_index: np.ndarray,
    catalogue: np.ndarray,
    student_config: StudentConfig,
    config: TrainConfig,
    teacher_logits: torch.Tensor | TopK | None = None,
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
    ``teacher_logits``: dense ``[P, N]`` logits or a :class:`~trainer.teacher.topk.TopK` (either
    path accepts either: the full path writes a top-K densely, the sampled one takes the
    top-``teacher_topk`` of dense logits). The path: ``config.mode(N)``; each epoch's curve
    row records it with its ``seconds``.

    Runs on ``device`` (default: ``config.device``, ``auto`` = cuda when visible, else cpu):
    the model, item tables, examples and teacher targets move there once; batches are cut
    there. ``validate`` gets the model on that device. The returned model is on the CPU."""
    from coldstream.core.device import resolve_device

    cfg = config
    dev = resolve_device(str(device if device is not None else cfg.device))
    if cfg.rank_kind not in RANK_KINDS:
        raise ValueError(f"rank_kind must be one of {RANK_KINDS}, got {cfg.rank_kind!r}")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    # ``init``: warm start (a copy of that student; the trainer service re-distils from it)
    model = (copy.deepcopy(init).cpu() if init is not None else Student(student_config)).to(dev)
    n_items = len(id_index)
    mode = cfg.mode(n_items)
    lazy = model.id_emb is not None and n_items > cfg.full_softmax_max_items
    if lazy:
        model.id_emb.sparse = True
        dense = [p for n_, p in model.named_parameters() if n_ != "id_emb.weight"]
        opts: list[torch.optim.Optimizer] = [
            torch.optim.AdamW(dense, lr=cfg.lr, weight_decay=cfg.weight_decay),
            torch.optim.SparseAdam([model.id_emb.weight], lr=cfg.lr),
        ]
    else:
        opts = [torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)]
    t = _Trainer(ex, text_vecs, id_index, catalogue, model, cfg, teacher_logits, dev)
    step = _FullPath(t) if mode == "full" else _SampledPath(t)
    params = list(model.parameters())
    t0 = time.perf_counter()
    best, best_state, bad, curve = -float("inf"), copy.deepcopy(model.state_dict()), 0, []
    n = len(ex.target)
    from tqdm import tqdm

    epochs = tqdm(
        range(1, cfg.epochs + 1), desc=desc, unit="epoch", leave=False, disable=not progress
    )
    try:
        for epoch in epochs:
            model.train()
            te = time.perf_counter()
            perm = torch.as_tensor(rng.permutation(n)).to(dev)
            sums = {"loss": 0.0, "ce": 0.0, "kd": 0.0}
            for s in range(0, n, cfg.batch_size):
                b = perm[s : s + cfg.batch_size]
                terms = step(b)
                loss = terms.ce
                if terms.kd is not None:
                    loss = loss + cfg.alpha * terms.kd
                if terms.rank is not None:
                    loss = loss + cfg.rank_weight * terms.rank
                for o in opts:
                    o.zero_grad()
                loss.backward()
                if lazy:
                    clip_grad_norm(params, 5.0)
                else:
                    torch.nn.utils.clip_grad_norm_(params, 5.0)
                for o in opts:
                    o.step()
                sums["loss"] += loss.item() * len(b)
                sums["ce"] += terms.ce.item() * len(b)
                sums["kd"] += (terms.kd.item() if terms.kd is not None else 0.0) * len(b)
            row: dict[str, Any] = {k: v / n for k, v in sums.items()}
            row["epoch"] = epoch
            row["seconds"] = round(time.perf_counter() - t0, 2)
            row["train_seconds"] = round(time.perf_counter() - te, 2)
            row["softmax"] = mode
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
    finally:
        if lazy:
            model.id_emb.sparse = False
    model.load_state_dict(best_state)
    model.cpu().eval()
    return model, curve
