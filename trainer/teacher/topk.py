"""The teacher's top-K per prefix, found without a dense ``[prefixes x items]`` matrix.

:class:`TopK` holds, for ``P`` rows (training prefixes), the ids and logits of the ``K``
highest-scoring items, best first: ``O(P x K)`` memory, what the catalogue-scale losses of
:mod:`trainer.student.distill` read. :func:`chunked_topk` scores a ``[row_chunk x item_chunk]`` block
at a time and merges each block's top-K into a running top-K, so its memory is
``O(P x K + row_chunk x item_chunk)`` whatever the catalogue size, and its time
``O(P x N x D)`` (the scoring itself). Helpers build the blocks for an adapted teacher head
(:func:`head_topk`), an inner product (:func:`inner_product_topk`) and any scorer of the
trainer service (:func:`scorer_topk`).

Ties are broken by ``torch.topk`` (not by item row): with distinct scores the result equals
the dense top-K exactly (tests/unit/trainer/test_topk.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = [
    "PairScorer",
    "TopK",
    "chunked_topk",
    "head_pair_scorer",
    "head_topk",
    "inner_product_pair_scorer",
    "inner_product_topk",
    "scorer_topk",
]

BLOCK_ELEMENTS = 1 << 24
"""Scores held at once by the chunked helpers (16M floats = 64 MB)."""


@dataclass
class TopK:
    """The ``K`` best items of ``P`` rows, best first. Rows with fewer than ``K`` items
    (a catalogue smaller than ``K``) are padded with id ``-1`` and logit ``-inf``.

    ``tails`` keeps, per distillation temperature ``T``, what the shortlist leaves out: the
    log of ``sum_{j not in the row's top-K} exp(logit_j / T)`` (``-inf``: nothing left out).
    With it the KD loss gives the student's items outside the shortlist the teacher's mass
    outside it (:func:`trainer.student.distill.topk_kd_kl`) instead of pushing that mass onto the
    shortlist: at catalogue scale the top-K holds a minority of the teacher's mass."""

    ids: torch.Tensor
    """``[P, K]`` int64 item rows."""
    logits: torch.Tensor
    """``[P, K]`` float32, descending per row."""
    tails: dict[float, torch.Tensor] = field(default_factory=dict)
    """``T -> [P]`` float32 log-sum-exp of ``logit / T`` over the items outside the top-K."""
    scorer: PairScorer | None = None
    """The same teacher's logits of *any* items for these rows (``None``: only the top-K is
    known). With it the sampled KD reads the teacher on the sampled negatives too."""

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])

    def tail(self, temperature: float) -> torch.Tensor | None:
        """The ``[P]`` tail at ``temperature`` (``None``: not computed for it)."""
        return self.tails.get(float(temperature))

    def rows(self, idx: torch.Tensor | np.ndarray | slice) -> TopK:
        idx = torch.as_tensor(idx) if not isinstance(idx, slice) else idx
        scorer = None if self.scorer is None else self.scorer.rows(idx, len(self))
        return TopK(
            self.ids[idx], self.logits[idx], {t: v[idx] for t, v in self.tails.items()}, scorer
        )

    def to(self, device: torch.device | str) -> TopK:
        """On ``device`` (the scorer computes where it is and hands results to the caller's
        device)."""
        return TopK(
            self.ids.to(device),
            self.logits.to(device),
            {t: v.to(device) for t, v in self.tails.items()},
            self.scorer,
        )

    def truncate(self, k: int) -> TopK:
        """The best ``k``; the items cut off join each tail."""
        cut = self.logits[:, k:]
        tails = {
            t: torch.logaddexp(v, torch.logsumexp(cut / t, dim=1)) if cut.shape[1] else v
            for t, v in self.tails.items()
        }
        return TopK(self.ids[:, :k], self.logits[:, :k], tails, self.scorer)

    @staticmethod
    def concat(parts: Sequence[TopK]) -> TopK:
        """Rows of ``parts`` in order (tails: the temperatures every part has; no scorer)."""
        temps = set.intersection(*(set(p.tails) for p in parts)) if parts else set()
        return TopK(
            torch.cat([p.ids for p in parts]),
            torch.cat([p.logits for p in parts]),
            {t: torch.cat([p.tails[t] for p in parts]) for t in sorted(temps)},
        )

    def dense(self, n_items: int) -> torch.Tensor:
        """``[P, N]`` logits, ``-inf`` outside the top-K (small catalogues: the full path)."""
        out = torch.full(
            (len(self), n_items), float("-inf"), dtype=self.logits.dtype, device=self.ids.device
        )
        valid = self.ids >= 0
        rows = torch.arange(len(self), device=self.ids.device).unsqueeze(1).expand_as(self.ids)
        out[rows[valid], self.ids[valid]] = self.logits[valid]
        return out

    @classmethod
    def from_dense(
        cls, logits: torch.Tensor | np.ndarray, k: int, *, temperatures: Sequence[float] = ()
    ) -> TopK:
        """The top-``k`` of a dense ``[P, N]`` matrix, in row chunks (with the tails at
        ``temperatures``)."""
        x = torch.as_tensor(logits)
        return chunked_topk(
            lambda r, c: x[r, c].float(),
            len(x),
            x.shape[1],
            k,
            item_chunk=x.shape[1],
            temperatures=temperatures,
        )


class PairScorer:
    """A teacher's logits for any ``(row, item)`` pairs, without the dense matrix:
    ``fn(rows, items) -> [R, M]`` (CPU index tensors or slices into the rows it was made for
    and into the catalogue), e.g. a training batch's negatives. Runs on the CPU, returns on
    the device of ``rows``."""

    def __init__(
        self, fn: Callable[[Any, Any], torch.Tensor], *, index: torch.Tensor | None = None
    ) -> None:
        self.fn, self.index = fn, index

    @torch.no_grad()
    def __call__(self, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        r = rows.cpu()
        if self.index is not None:
            r = self.index[r]
        return self.fn(r, items.cpu()).to(rows.device)

    def rows(self, idx: torch.Tensor | slice, n: int) -> PairScorer:
        """The scorer of a subset of the rows (``idx`` into ``0..n-1``)."""
        base = torch.arange(n) if self.index is None else self.index
        return PairScorer(self.fn, index=base[idx])


def head_pair_scorer(
    head: Any, feats: np.ndarray | torch.Tensor, item_vecs: np.ndarray | torch.Tensor, tau: float
) -> PairScorer:
    """:class:`PairScorer` of an adapted teacher head (:class:`trainer.teacher.adapt.TeacherHead`):
    ``head(feats[rows], item_vecs[items]) / tau`` through the head's own forward, on a frozen
    eval-mode copy (training the head later does not change these targets)."""
    frozen = copy.deepcopy(head).eval().cpu()
    f = torch.as_tensor(feats, dtype=torch.float32)
    x = torch.as_tensor(item_vecs, dtype=torch.float32)
    return PairScorer(lambda r, c: frozen(f[r], x[c]) / tau)


def _inner(
    users: torch.Tensor | np.ndarray,
    items: torch.Tensor | np.ndarray,
    scale: float,
    bias: torch.Tensor | np.ndarray | None = None,
) -> Callable[[Any, Any], torch.Tensor]:
    """``(rows, items) -> scale * users[rows] @ items[items].T (+ bias[items])``."""
    u = torch.as_tensor(users, dtype=torch.float32)
    x = torch.as_tensor(items, dtype=torch.float32)
    b = None if bias is None else torch.as_tensor(bias, dtype=torch.float32)

    def score(rows: Any, cols: Any) -> torch.Tensor:
        s = (u[rows] @ x[cols].T) * scale
        return s if b is None else s + b[cols]

    return score


def inner_product_pair_scorer(
    users: np.ndarray | torch.Tensor, items: np.ndarray | torch.Tensor, *, scale: float = 1.0
) -> PairScorer:
    """:class:`PairScorer` of ``scale * users @ items.T``."""
    return PairScorer(_inner(users, items, scale))


def _merge(
    vals: torch.Tensor,
    ids: torch.Tensor,
    block: torch.Tensor,
    offset: int,
    k: int,
    tails: dict[float, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge a block into the running top-``k``; every score that is left out of it (the
    block's own rest, and the ones it evicts) is added to each tail, exactly once."""
    kb = min(k, block.shape[1])
    bv, bi = block.topk(kb, dim=1)
    neg_inf = float("-inf")
    if tails and kb < block.shape[1]:
        rest = block.scatter(1, bi, neg_inf)
        for t in tails:
            tails[t] = torch.logaddexp(tails[t], torch.logsumexp(rest / t, dim=1))
    v = torch.cat([vals, bv], dim=1)
    i = torch.cat([ids, bi + offset], dim=1)
    top = v.topk(min(k, v.shape[1]), dim=1)
    if tails and top.indices.shape[1] < v.shape[1]:
        evicted = v.scatter(1, top.indices, neg_inf)
        for t in tails:
            tails[t] = torch.logaddexp(tails[t], torch.logsumexp(evicted / t, dim=1))
    return top.values, i.gather(1, top.indices)


@torch.no_grad()
def chunked_topk(
    score_block: Callable[[slice, slice], torch.Tensor],
    n_rows: int,
    n_items: int,
    k: int,
    *,
    row_chunk: int | None = None,
    item_chunk: int | None = None,
    progress: bool = False,
    desc: str = "teacher top-K",
    temperatures: Sequence[float] = (),
) -> TopK:
    """Top-``k`` items of every row, where ``score_block(rows, items)`` returns the
    ``[len(rows), len(items)]`` scores of a block (``rows``, ``items``: slices). Blocks are
    ``row_chunk x item_chunk`` (default: :data:`BLOCK_ELEMENTS` scores, at most 16384 items
    wide); for each row chunk every item chunk is scored and merged into a running top-K.
    ``temperatures``: also the tail of every row at each (:class:`TopK`), for one
    ``exp`` per score more."""
    k = max(0, min(int(k), n_items))
    item_chunk = int(item_chunk or min(n_items, 16384)) or 1
    row_chunk = int(row_chunk or max(1, BLOCK_ELEMENTS // item_chunk))
    ids = torch.empty((n_rows, k), dtype=torch.long)
    logits = torch.empty((n_rows, k), dtype=torch.float32)
    temps = sorted({float(t) for t in temperatures})
    if any(t <= 0 for t in temps):
        raise ValueError(f"temperatures must be positive, got {temps}")
    tails = {t: torch.empty(n_rows, dtype=torch.float32) for t in temps}
    starts = range(0, n_rows, row_chunk)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=desc, unit="chunk", leave=False)
    for r0 in starts:
        rows = slice(r0, min(n_rows, r0 + row_chunk))
        nr = rows.stop - rows.start
        vals = torch.full((nr, 0), float("-inf"))
        top = torch.full((nr, 0), -1, dtype=torch.long)
        run = {t: torch.full((nr,), float("-inf")) for t in temps}
        for c0 in range(0, n_items, item_chunk):
            cols = slice(c0, min(n_items, c0 + item_chunk))
            block = score_block(rows, cols).float()
            vals, top = _merge(vals, top, block, c0, k, run)
        ids[rows], logits[rows] = top, vals
        for t in temps:
            tails[t][rows] = run[t]
    return TopK(ids, logits, tails)


def inner_product_topk(
    users: torch.Tensor | np.ndarray,
    items: torch.Tensor | np.ndarray,
    k: int,
    *,
    scale: float = 1.0,
    bias: torch.Tensor | np.ndarray | None = None,
    progress: bool = False,
    temperatures: Sequence[float] = (),
) -> TopK:
    """Top-``k`` of ``scale * users @ items.T + bias`` (``bias`` ``[N]``), in blocks."""
    return chunked_topk(
        _inner(users, items, scale, bias),
        len(users),
        len(items),
        k,
        progress=progress,
        temperatures=temperatures,
    )


def head_topk(
    head: Any,
    feats: np.ndarray | torch.Tensor,
    item_vecs: np.ndarray | torch.Tensor,
    k: int,
    *,
    tau: float = 1.0,
    progress: bool = False,
    temperatures: Sequence[float] = (),
) -> TopK:
    """Top-``k`` of an adapted teacher head's logits ``head(feats, item_vecs) / tau``
    (:class:`trainer.teacher.adapt.TeacherHead`, in eval mode), block by block through the head's
    own forward: equal to ``TopK.from_dense(head.score(feats, item_vecs) / tau, k)``
    (``temperatures``: with the tails at each, see :class:`TopK`), with the head's
    :class:`PairScorer` attached (its scores are the ones the top-K was found with)."""
    scorer = head_pair_scorer(head, feats, item_vecs, tau)
    # wide row chunks: the head's item transform is recomputed once per row chunk
    top = chunked_topk(
        scorer.fn,
        len(feats),
        len(item_vecs),
        k,
        row_chunk=4096,
        item_chunk=4096,
        progress=progress,
        temperatures=temperatures,
    )
    top.scorer = scorer
    return top


def scorer_topk(
    scorer: Any,
    histories: Sequence[np.ndarray],
    k: int,
    *,
    feats: np.ndarray | None = None,
    n_items: int | None = None,
    temperatures: Sequence[float] = (),
) -> TopK:
    """The top-``k`` of a trainer-service scorer for ``histories`` (rows of its item table),
    with the tails at ``temperatures`` (:class:`TopK`).

    A :class:`trainer.teacher.heads.TeacherScorer` (``head``, ``item_vecs``, ``tau``,
    ``features``) is scored block by block: through its head, or zero-shot (cosine of the
    history text and the item texts) without one. Any other scorer (a callable returning
    dense ``[B, N]`` logits) is called on row chunks small enough that one chunk holds
    :data:`BLOCK_ELEMENTS` scores (``n_items``: its catalogue size, for the chunk size)."""
    if hasattr(scorer, "item_vecs") and hasattr(scorer, "features"):
        f = scorer.features(list(histories)) if feats is None else feats
        vecs = scorer.item_vecs
        if scorer.head is not None:
            return head_topk(scorer.head, f, vecs, k, tau=scorer.tau, temperatures=temperatures)
        top = inner_product_topk(
            f[:, : vecs.shape[1]], vecs, k, scale=1.0 / scorer.tau, temperatures=temperatures
        )
        top.scorer = inner_product_pair_scorer(f[:, : vecs.shape[1]], vecs, scale=1.0 / scorer.tau)
        return top
    hs = list(histories)
    n = int(n_items) if n_items else 1
    step = max(1, BLOCK_ELEMENTS // max(n, 1))
    parts = [
        TopK.from_dense(
            np.asarray(scorer(hs[s : s + step]), dtype=np.float32), k, temperatures=temperatures
        )
        for s in range(0, len(hs), step)
    ]
    if not parts:
        return TopK(
            torch.zeros((0, k), dtype=torch.long),
            torch.zeros((0, k)),
            {float(t): torch.zeros(0) for t in temperatures},
        )
    return TopK.concat(parts)
