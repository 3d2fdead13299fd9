"""The serving recommender: student + item index + popularity fallback, batched.

Everything a recommendation depends on (checkpoint, item table, index, row mapping) is
held in one immutable :class:`ServingModel`; the :class:`Recommender` keeps a single
reference to it. A hot swap or an item upsert builds a new bundle beside the old one and
replaces that one reference between micro-batches, so a batch never sees half a model.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from coldstream.core.checkpoint import Checkpoint, load_checkpoint
from coldstream.core.events import EVENT_TYPES
from coldstream.core.student import pack_histories
from stream_app.index import ItemIndex, make_index

History = Sequence[Any]
"""A user's events, oldest first: ``item_id`` or ``(item_id, event_type[, ts...])`` entries."""


@dataclass(frozen=True)
class ServingModel:
    """One immutable bundle: the checkpoint, the item rows (ids, vectors, index), dead rows."""

    version: str
    checkpoint: Checkpoint
    item_ids: tuple[str, ...]
    index_of: Mapping[str, int]
    table: torch.Tensor
    """Item vectors ``[N, dim]`` on the model's device (rows as in ``item_ids``)."""
    index: ItemIndex
    dead: frozenset[int] = frozenset()
    """Rows superseded by an upsert (still in the append-only index, never returned)."""
    popular_seed: tuple[str, ...] = ()
    """Fallback items before any popularity has been observed (checkpoint order or metrics)."""

    @property
    def device(self) -> torch.device:
        return self.checkpoint.device

    @property
    def n_items(self) -> int:
        return len(self.item_ids) - len(self.dead)

    @classmethod
    def from_checkpoint(cls, ck: Checkpoint, *, prefer_gpu_index: bool = True) -> ServingModel:
        index = make_index(ck.config.dim, prefer_gpu=prefer_gpu_index)
        index.add(ck.item_vectors)
        seed = ck.metrics.get("popular_items") if isinstance(ck.metrics, dict) else None
        if not (isinstance(seed, list) and all(isinstance(s, str | int) for s in seed)):
            seed = ck.item_ids[:200]
        table = ck.table
        return cls(
            version=str(ck.version),
            checkpoint=ck,
            item_ids=tuple(ck.item_ids),
            index_of=MappingProxyType(dict(ck.index_of)),
            table=table,
            index=index,
            popular_seed=tuple(str(s) for s in seed),
        )


@dataclass
class Ranked:
    """Result of one batch: per history the ``(item_id, score)`` list and the fallback used."""

    items: list[list[tuple[str, float]]]
    fallback: list[str | None]
    inference_s: float = 0.0
    search_s: float = 0.0
    n_known_users: int = 0


def _entry(ev: Any) -> tuple[str, int]:
    if isinstance(ev, str | int):
        return str(ev), 0
    iid = str(ev[0])
    et = ev[1] if len(ev) > 1 else 0
    return iid, (EVENT_TYPES.get(et, 0) if isinstance(et, str) else int(et))


@dataclass
class Recommender:
    """Batched top-K with seen items excluded; unknown items tolerated; popularity fallback."""

    model: ServingModel
    max_history: int = 50
    popularity: Counter = field(default_factory=Counter)
    """Event counts per item behind the popularity fallback (a ``WindowedCounter`` in a worker)."""
    _popular_cache: list[str] = field(default_factory=list)
    _popular_at: float = 0.0
    _popular_dirty: bool = True

    # -- loading / swapping ----------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        path: Path | str,
        *,
        device: str | torch.device = "cpu",
        max_history: int = 50,
        prefer_gpu_index: bool = True,
    ) -> Recommender:
        ck = load_checkpoint(path, device=device)
        return cls(
            ServingModel.from_checkpoint(ck, prefer_gpu_index=prefer_gpu_index),
            max_history=max_history,
        )

    def swap(self, new: ServingModel) -> ServingModel:
        """Replace the served bundle (one reference); returns the old one."""
        old, self.model = self.model, new
        return old

    # -- popularity ----------------------------------------------------------------------
    def observe(self, item_ids: Iterable[str]) -> None:
        """Count events per item for the popularity fallback (call once per batch)."""
        self.popularity.update(item_ids)
        self._popular_dirty = True

    def _popular(self, n: int) -> list[str]:
        now = time.monotonic()
        if self._popular_dirty and (now - self._popular_at > 1.0 or not self._popular_cache):
            top = [iid for iid, _ in self.popularity.most_common(n)]
            seen = set(top)
            self._popular_cache = top + [s for s in self.model.popular_seed if s not in seen]
            self._popular_at, self._popular_dirty = now, False
        return self._popular_cache

    def popular(self, k: int, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        m = self.model
        excl = set(exclude)
        total = max(1, sum(self.popularity.values()))
        out = []
        for iid in self._popular(k + self.max_history + 50):
            row = m.index_of.get(iid)
            if row is None or row in m.dead or iid in excl:
                continue
            out.append((iid, self.popularity.get(iid, 0) / total))
            if len(out) == k:
                break
        return out

    # -- ranking ---------------------------------------------------------------------------
    def recommend_batch(
        self, histories: Sequence[History], k: int
    ) -> list[list[tuple[str, float]]]:
        """Top-``k`` ``(item_id, score)`` per history, items of the history excluded."""
        return self.rank_batch(histories, k).items

    @torch.inference_mode()
    def rank_batch(self, histories: Sequence[History], k: int) -> Ranked:
        m = self.model  # one read: the whole batch uses one bundle
        n = len(histories)
        items: list[list[tuple[str, float]]] = [[] for _ in range(n)]
        fallback: list[str | None] = [None] * n
        rows_l, types_l, seen_ids, known = [], [], [], []
        for i, h in enumerate(histories):
            recent = list(h)[-self.max_history :]
            rows, types, ids = [], [], []
            for ev in recent:
                iid, et = _entry(ev)
                ids.append(iid)
                r = m.index_of.get(iid)
                if r is not None:
                    rows.append(r)
                    types.append(et)
            seen_ids.append(ids)
            if rows:
                known.append(i)
                rows_l.append(rows)
                types_l.append(types)
        inference_s = search_s = 0.0
        if known:
            t0 = time.perf_counter()
            idx, typ, mask = pack_histories(rows_l, types_l, m.checkpoint.config.max_len, m.device)
            users = m.checkpoint.model.encode_indexed(m.table, idx, typ, mask).float().cpu().numpy()
            t1 = time.perf_counter()
            inference_s = t1 - t0
            max_seen = max(len(set(r)) for r in rows_l)
            ntotal = m.index.ntotal
            kk = min(ntotal, k + max_seen + len(m.dead))
            scores, found = m.index.search(users, kk)
            limit = len(m.item_ids)
            # drop seen, dead and foreign rows for the whole batch at once, keep the first k
            seen = np.full((len(known), max(1, max(len(r) for r in rows_l))), -2, dtype=np.int64)
            for j, user_rows in enumerate(rows_l):
                seen[j, : len(user_rows)] = user_rows
            bad = (
                (found[:, :, None] == seen[:, None, :]).any(axis=2) | (found < 0) | (found >= limit)
            )
            if m.dead:
                bad |= np.isin(found, np.fromiter(m.dead, dtype=np.int64))
            good = ~bad
            keep = good & (np.cumsum(good, axis=1) <= k)
            item_ids = m.item_ids
            for j, i in enumerate(known):
                sel = keep[j]
                items[i] = [
                    (item_ids[r], s)
                    for r, s in zip(found[j][sel].tolist(), scores[j][sel].tolist(), strict=True)
                ]
                if len(items[i]) < k and kk < ntotal:  # rare: too many excluded, search wider
                    s2, f2 = m.index.search(users[j : j + 1], ntotal)
                    items[i] = self._take(s2[0], f2[0], set(rows_l[j]) | m.dead, limit, k, m)
            search_s = time.perf_counter() - t1
        known_set = set(known)
        for i in range(n):
            if i not in known_set:  # no event of this user is known to the model
                fallback[i] = "popular"
                items[i] = self.popular(k, exclude=seen_ids[i])
        return Ranked(items, fallback, inference_s, search_s, len(known))

    @staticmethod
    def _take(
        scores: np.ndarray, rows: np.ndarray, excl: set[int], limit: int, k: int, m: ServingModel
    ) -> list[tuple[str, float]]:
        out = []
        ids = m.item_ids
        for s, r in zip(scores.tolist(), rows.tolist(), strict=True):
            if r < 0 or r >= limit or r in excl:
                continue
            out.append((ids[r], s))
            if len(out) == k:
                break
        return out

    # -- item cold start -------------------------------------------------------------------
    def upsert_items(self, ids: Sequence[str], vectors: np.ndarray) -> ServingModel:
        """Add (or replace) items by their vectors; builds and swaps in a new bundle."""
        m = self.model
        vecs = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        ids = [str(i) for i in ids]
        if vecs.shape != (len(ids), m.table.shape[1]):
            raise ValueError(f"vectors shape {vecs.shape} != ({len(ids)}, {m.table.shape[1]})")
        if not np.isfinite(vecs).all():
            raise ValueError("item vectors must be finite")
        if m.index.ntotal != len(m.item_ids):
            raise RuntimeError("index and item table are out of step")
        index_of = dict(m.index_of)
        dead = set(m.dead)
        base = len(m.item_ids)
        for j, iid in enumerate(ids):
            old = index_of.get(iid)
            if old is not None:
                dead.add(old)
            index_of[iid] = base + j
        m.index.add(vecs)  # append-only: rows >= len(old item_ids) are invisible to the old bundle
        table = torch.cat([m.table, torch.from_numpy(vecs).to(m.table.device)])
        new = ServingModel(
            version=m.version,
            checkpoint=m.checkpoint,
            item_ids=m.item_ids + tuple(ids),
            index_of=MappingProxyType(index_of),
            table=table,
            index=m.index,
            dead=frozenset(dead),
            popular_seed=m.popular_seed,
        )
        self.swap(new)
        return new
