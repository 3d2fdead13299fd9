"""The vectors and the ground truth every index shares: :class:`VectorStore` (float32 rows by
slot, the recommender's item table), the argument checks and array helpers of the indexes,
exact search (:func:`exact_topk`) and :func:`recall_at` (what a build's recall is measured
against), :func:`omp_threads`, :func:`faiss_module`. Nothing here needs FAISS at import time
(``faiss`` and ``torch`` are imported where used, so the package imports on machines without
them)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from stream_app.index.config import RECALL_K, IndexReport


class VectorStore:
    """Float32 item vectors addressed by slot: rows ``[capacity, dim]``, a live mask, grown
    by x1.5 (appending n rows costs O(n) amortised; nothing is copied per upsert).

    ``array`` is the whole buffer (its rows are the recommender's item table; rows of free
    slots are zero). A buffer handed to :meth:`adopt` is used as is (no copy) until growth."""

    GROWTH = 1.5

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._array = np.zeros((0, dim), np.float32)
        self._live = np.zeros(0, bool)
        self.n_live = 0

    @classmethod
    def adopt(cls, vectors: np.ndarray) -> VectorStore:
        """A store whose slots ``0..n-1`` are the rows of ``vectors`` (no copy when it is a
        writable C-contiguous float32 array: the store then owns that buffer)."""
        v = np.asarray(vectors)
        if v.ndim != 2:
            raise ValueError(f"expected vectors [n, dim], got {v.shape}")
        if not (v.dtype == np.float32 and v.flags.c_contiguous and v.flags.writeable):
            v = np.array(v, dtype=np.float32, order="C")
        store = cls(v.shape[1])
        store._array = v
        store._live = np.ones(v.shape[0], bool)
        store.n_live = v.shape[0]
        return store

    @property
    def array(self) -> np.ndarray:
        return self._array

    @property
    def capacity(self) -> int:
        return int(self._array.shape[0])

    @property
    def live(self) -> np.ndarray:
        """Live mask by slot (read-only view)."""
        view = self._live.view()
        view.flags.writeable = False
        return view

    def is_live(self, slots: np.ndarray) -> np.ndarray:
        s = np.asarray(slots, np.int64)
        ok = (s >= 0) & (s < self._live.shape[0])
        out = np.zeros(s.shape, bool)
        out[ok] = self._live[s[ok]]
        return out

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self._live).astype(np.int64)

    def reserve(self, capacity: int) -> None:
        if capacity <= self.capacity:
            return
        new_cap = max(capacity, int(self.capacity * self.GROWTH) + 16)
        arr = np.zeros((new_cap, self.dim), np.float32)
        arr[: self.capacity] = self._array
        live = np.zeros(new_cap, bool)
        live[: self._live.shape[0]] = self._live
        self._array, self._live = arr, live

    def write(self, slots: np.ndarray, vectors: np.ndarray) -> None:
        s = np.asarray(slots, np.int64)
        if s.size and int(s.min()) < 0:
            raise ValueError("slots must be non-negative")
        if s.size:
            self.reserve(int(s.max()) + 1)
        self.n_live += int(np.unique(s).size - np.count_nonzero(self._live[np.unique(s)]))
        self._array[s] = vectors
        self._live[s] = True

    def clear(self, slots: np.ndarray) -> np.ndarray:
        """Free ``slots`` (zero rows); returns those that were live."""
        s = np.unique(np.asarray(slots, np.int64))
        s = s[self.is_live(s)]
        self._live[s] = False
        self._array[s] = 0.0
        self.n_live -= int(s.size)
        return s

    def rows(self, slots: np.ndarray) -> np.ndarray:
        return self._array[np.asarray(slots, np.int64)]


def _as_f32(x: np.ndarray, dim: int) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected vectors of shape [n, {dim}], got {x.shape}")
    return x


def _slots(ids: Any, n: int | None = None) -> np.ndarray:
    s = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
    if n is not None and s.shape[0] != n:
        raise ValueError(f"{s.shape[0]} ids for {n} vectors")
    if s.size and int(s.min()) < 0:
        raise ValueError("ids must be non-negative")
    if np.unique(s).size != s.size:
        raise ValueError("ids must be unique within one call")
    return s


def _empty(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)


BLAS_WORK_PER_THREAD = 512
"""Query work (``queries x dim``) per FAISS thread from which an exact search scores by one
matrix product (BLAS) instead of one scan per query. FAISS 1.14+ switches at
``queries x dim >= 128,000`` (tuned for many OpenMP threads: the scans run in parallel per
query); on one thread the product wins from 8 queries of 64 dimensions: ``coldstream bench
blas`` (``reports/bench-blas.json``; dim 64, k 26, one thread): 64-query batches 11.0 against
21.5 us per query at 1,682 items, 34.7 against 81.1 at 10,000; 1 query 49.1 against 19.0. The
IVF coarse quantizer (an exact search over the ``nlist`` centroids) gains the same."""

_FAISS_DEFAULT_BLAS_THRESHOLD: int | None = None


def faiss_module() -> Any:
    """``faiss``, with its BLAS switch set for this process's FAISS threads (see
    :data:`BLAS_WORK_PER_THREAD`; call it where an index is built: it reads the threads at
    that time). A FAISS whose threshold counts queries only (before 1.14: default 20, already
    BLAS from 20 queries) is left as it is."""
    import faiss

    global _FAISS_DEFAULT_BLAS_THRESHOLD  # noqa: PLW0603 - the library's own default, read once
    if _FAISS_DEFAULT_BLAS_THRESHOLD is None:
        _FAISS_DEFAULT_BLAS_THRESHOLD = int(faiss.cvar.distance_compute_blas_threshold)
    if _FAISS_DEFAULT_BLAS_THRESHOLD >= 1000:  # counts queries x dim
        faiss.cvar.distance_compute_blas_threshold = BLAS_WORK_PER_THREAD * max(
            1, faiss.omp_get_max_threads()
        )
    return faiss


@contextlib.contextmanager
def omp_threads(n: int) -> Iterator[None]:
    """FAISS OpenMP threads ``n`` for parallel regions started from this thread (OpenMP keeps
    the setting per thread), restored after; ``n`` = 0: unchanged."""
    import faiss

    if n <= 0:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def exact_topk(store: VectorStore, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` live slots by inner product (chunked over the store: memory
    O(queries x chunk)); the ground truth of the recall measurement."""
    import torch

    q = torch.from_numpy(_as_f32(queries, store.dim))
    nq = q.shape[0]
    best_s = torch.full((nq, 0), -math.inf)
    best_i = torch.full((nq, 0), -1, dtype=torch.int64)
    chunk = 1 << 16
    live = torch.from_numpy(np.array(store.live))  # a copy: the store's mask is read-only
    for c0 in range(0, store.capacity, chunk):
        c1 = min(store.capacity, c0 + chunk)
        s = q @ torch.from_numpy(store.array[c0:c1]).T
        s[:, ~live[c0:c1]] = -math.inf
        s = torch.cat([best_s, s], 1)
        i = torch.cat([best_i, torch.arange(c0, c1).expand(nq, -1)], 1)
        top = torch.topk(s, min(k, s.shape[1]), dim=1)
        best_s, best_i = top.values, torch.gather(i, 1, top.indices)
    best_i[~torch.isfinite(best_s)] = -1
    return best_s.numpy(), best_i.numpy()


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row's true (non ``-1``) slots that ``found`` contains."""
    hits = total = 0
    for f, t in zip(found, truth, strict=True):
        t = t[t >= 0]
        hits += len(np.intersect1d(f[f >= 0], t))
        total += len(t)
    return hits / total if total else 1.0


def _pad(scores: np.ndarray, slots: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.where(slots >= 0, scores, -np.inf).astype(np.float32)
    if slots.shape[1] < k:
        s, i = _empty(slots.shape[0], k - slots.shape[1])
        scores, slots = np.hstack([scores, s]), np.hstack([slots, i])
    return scores, slots


def _flat_report(index: Any, sample: np.ndarray | None, t0: float) -> IndexReport:
    """The build report of an exact index: its recall@10 on ``sample`` and build time."""
    recall, nq = _measure(index, sample)
    return IndexReport(
        index.kind,
        index.device,
        index.ntotal,
        recall_at_10=recall,
        recall_queries=nq,
        build_s=round(time.perf_counter() - t0, 3),
    )


def _measure(index: Any, sample: np.ndarray | None) -> tuple[float | None, int]:
    if sample is None or len(sample) == 0 or index.ntotal == 0:
        return None, 0
    _, truth = exact_topk(index.store, sample, RECALL_K)
    _, found = index.search(sample, RECALL_K)
    return recall_at(found, truth), len(sample)


class _Growable:
    """An int64 array appended to in amortised O(1) (x1.5 growth)."""

    def __init__(self, values: np.ndarray | None = None) -> None:
        v = np.zeros(0, np.int64) if values is None else np.asarray(values, np.int64)
        self._buf = v.copy()
        self.n = v.shape[0]

    @property
    def values(self) -> np.ndarray:
        return self._buf[: self.n]

    def extend(self, values: np.ndarray) -> None:
        need = self.n + values.shape[0]
        if need > self._buf.shape[0]:
            grown = np.zeros(max(need, int(self._buf.shape[0] * 1.5) + 16), np.int64)
            grown[: self.n] = self._buf[: self.n]
            self._buf = grown
        self._buf[self.n : need] = values
        self.n = need

    def truncate(self, n: int) -> None:
        self.n = n


def _grow_map(arr: np.ndarray, size: int) -> np.ndarray:
    """``arr`` (slot -> value, ``-1`` = none) long enough for ``size`` slots (x1.5)."""
    if size <= arr.shape[0]:
        return arr
    grown = np.full(max(size, int(arr.shape[0] * 1.5) + 16), -1, np.int64)
    grown[: arr.shape[0]] = arr
    return grown
