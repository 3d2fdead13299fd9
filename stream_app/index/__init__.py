"""Item indexes: top-K inner-product search over item vectors, exact or approximate (FAISS).

Every index is addressed by **slot**: a non-negative integer the caller gives each item (the
recommender's row of the item in its table; slots of removed items are reused). The float
vectors live in one :class:`VectorStore` (rows by slot, grown geometrically), shared with the
recommender's item table; the index keeps its search structure beside it:

* :class:`FlatIndex` (``flat``): exact, ``faiss.IndexFlatIP`` over compact rows.
* :class:`IvfIndex` (``ivf``): FAISS IVF. A coarse quantizer (``nlist`` k-means centroids
  trained on a sample of the items) routes each query to ``nprobe`` lists. Codes ``pq``
  (the default): 4-bit PQ codes (one sub-quantizer per dimension) read by FAISS fast-scan
  (``IndexIVFPQFastScan``), the best ``refine * k`` candidates re-scored exactly from the
  store; ``flat``: full vectors (``IndexIVFFlat``), exact within the probed lists, 3-4x
  slower to scan.
* :class:`GpuFlatIndex`, :class:`GpuIvfIndex`: the same on a CUDA GPU when FAISS sees one
  (``faiss.get_num_gpus() > 0``).
* :class:`TorchFlatIndex`: exact search with torch on any device, the rows mirrored there (a
  candidate for GPUs where FAISS GPU is not installed; :func:`make_index` does not choose it).

Churn: the CPU indexes are ID-mapped by slot; an upsert of an existing slot replaces its
entry in place and a removal deletes it (``remove_ids`` + ``add_with_ids``), so they hold
exactly as many entries as items whatever the churn. FAISS GPU indexes cannot remove: a
replaced or removed slot leaves a dead entry there (never returned: candidates are mapped
to slots and re-scored from the store) and the GPU structure is refilled from the store
once dead entries pass ``MAX_DEAD_SHARE`` of the live ones (:class:`_Entries`).

Choosing (:func:`make_index`, ``index=auto``): exact below ``exact_below`` items (10,000 by
default), IVF from there on. ``coldstream bench recommend --index flat,ivf`` on 2 shared
cores, 512-user batches: search 32 ms exact vs 28 ms IVF at 5,000 items, 69 vs 34 ms at
10,000, 150 vs 42 ms at 20,000 (IVF recall@10 0.97-0.99). HNSW was measured and left out:
on inner-product item vectors its recall stayed below 0.55 at any ``efSearch`` up to 256
(also with the L2 reduction of MIPS), and FAISS HNSW cannot remove entries.

:meth:`ItemIndex.build` trains the quantizer (blocking: call it off the event loop), adds every
live slot of the store, picks ``nprobe`` as the smallest of a ladder whose recall@10 against
exact search on a sample of queries reaches ``target_recall`` (unless ``nprobe`` is given),
and returns an :class:`IndexReport` (exported as ``coldstream_index_recall`` and
``coldstream_index_info``). Search parameters are per call (:class:`SearchParams` -> a FAISS
``SearchParametersIVF``), never state shared between calls.

Costs: flat search grows with items x queries; IVF search with ``nprobe * items / nlist``
codes scanned plus ``refine * k`` exact re-scores per query; an upsert or removal of a
batch costs O(batch) plus, for IVF, one pass over the list ids (FAISS ``remove_ids``
without a direct map) and the list sizes. Mutations and searches must not run
concurrently (the recommender's lock serialises them).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

IndexKind = Literal["auto", "flat", "ivf"]
IvfCodes = Literal["pq", "flat"]

EXACT_BELOW = 10_000
"""``index=auto``: exact search below this many items, IVF from there on."""
MAX_DEAD_SHARE = 0.1
"""GPU indexes: rebuild from the store once dead entries exceed this share of live ones."""
NPROBE_LADDER = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
"""``nprobe`` values tried at build time, smallest first (then every list)."""
RECALL_K = 10
"""The K of the recall measured at build time (``coldstream_index_recall``)."""
PLATEAU = 0.003
"""``nprobe`` tuning stops when two more ladder steps gain less recall than this."""
GPU_MAX_K = 2048
"""FAISS GPU k-selection limit (results and ``nprobe``)."""
CHUNK = 1 << 18
"""Rows added per FAISS call when filling an index (bounded temporary copies)."""


@dataclass(frozen=True)
class IndexConfig:
    """How a serving index is chosen and tuned (the worker's ``index*`` settings)."""

    kind: IndexKind = "auto"
    """``auto`` (exact below ``exact_below`` items, else IVF), ``flat`` (exact) or ``ivf``."""
    exact_below: int = EXACT_BELOW
    nlist: int = 0
    """IVF lists; 0: ``4 * sqrt(items)`` rounded to a power of two, 16..16384 (at least 39
    training items per list)."""
    nprobe: int = 0
    """Lists probed per query; 0: the smallest of :data:`NPROBE_LADDER` that reaches
    ``target_recall`` on the build sample."""
    target_recall: float = 0.97
    codes: IvfCodes = "pq"
    """IVF list codes: ``pq`` (4-bit fast-scan PQ + exact re-scoring) or ``flat``."""
    refine: int = 8
    """``pq`` codes: candidates re-scored exactly per wanted result."""
    recall_sample: int = 256
    """Queries of the build-time recall measurement (and ``nprobe`` tuning); 0: none."""
    gpu: bool = True
    """Use FAISS on a GPU when it sees one."""
    threads: int = 0
    """FAISS (OpenMP) threads of builds and rebuilds, in whatever thread they run (OpenMP
    settings are per thread); 0: the library default."""
    seed: int = 0

    @classmethod
    def from_settings(cls, s: Any) -> IndexConfig:
        """From the worker settings (``stream_app.settings.Settings``: ``index``, ``index_*``)."""
        return cls(
            kind=s.index,
            exact_below=s.index_exact_below,
            nlist=s.index_nlist,
            nprobe=s.index_nprobe,
            target_recall=s.index_target_recall,
            codes=s.index_codes,
            refine=s.index_refine,
            recall_sample=s.index_recall_sample,
            gpu=s.index_gpu,
            threads=s.threads,
        )

    def resolve_kind(self, n_items: int) -> Literal["flat", "ivf"]:
        if self.kind == "auto":
            return "flat" if n_items < self.exact_below else "ivf"
        return self.kind

    def resolve_nlist(self, n_items: int) -> int:
        if self.nlist:
            return max(1, min(self.nlist, max(1, n_items)))
        if n_items < 39 * 16:
            return 1  # too few items to split: one list, an exhaustive scan
        nlist = 2 ** round(math.log2(4 * math.sqrt(n_items)))
        return int(max(16, min(16384, nlist, 2 ** int(math.log2(n_items // 39)))))


@dataclass(frozen=True)
class SearchParams:
    """Per-call search parameters (``None``: the index's tuned default)."""

    nprobe: int | None = None
    refine: int | None = None


@dataclass(frozen=True)
class IndexReport:
    """What a build produced (logged, exported as ``coldstream_index_info`` / ``_recall``)."""

    kind: str
    device: str
    items: int
    nlist: int = 0
    nprobe: int = 0
    codes: str = ""
    refine: int = 0
    recall_at_10: float | None = None
    """Recall@10 against exact search on ``recall_queries`` sample queries (``None``: none)."""
    recall_queries: int = 0
    build_s: float = 0.0

    def labels(self) -> dict[str, str]:
        """String labels for the info metric (no recall, no timing)."""
        d = asdict(self)
        for k in ("recall_at_10", "recall_queries", "build_s"):
            d.pop(k)
        return {k: str(v) for k, v in d.items()}


# ---------------------------------------------------------------------------- the store


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


# ---------------------------------------------------------------------------- protocol


@runtime_checkable
class ItemIndex(Protocol):
    """What the recommender needs from an item index (slots as ids, see the module doc)."""

    dim: int
    kind: str
    """``flat`` or ``ivf``."""
    device: str
    """``cpu`` or ``gpu``."""
    store: VectorStore
    report: IndexReport

    @property
    def ntotal(self) -> int:
        """Live items (never more than the catalogue)."""

    @property
    def rows_held(self) -> int:
        """Entries the search structure holds, live and dead (at most ``(1 +
        MAX_DEAD_SHARE) x ntotal`` plus what churned during a rebuild)."""

    def build(self, *, sample: np.ndarray | None = None) -> IndexReport:
        """Train if needed and index every live slot of the store (blocking)."""

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Write ``vectors`` to slots ``ids`` (new or replaced)."""

    def remove(self, ids: np.ndarray) -> int:
        """Remove slots ``ids``; returns how many were live."""

    def search(
        self, queries: np.ndarray, k: int, params: SearchParams | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` slots by inner product: ``(scores [B, k] float32, slots [B, k] int64)``,
        best first; ``-1`` (score ``-inf``) where fewer than ``k`` were found."""


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


# ---------------------------------------------------------------------------- exact


class FlatIndex:
    """Exact search: ``faiss.IndexFlatIP`` over compact rows (an upsert overwrites the item's
    row in place, a removal moves a tail row into the hole); row <-> slot maps beside it."""

    kind = "flat"
    device = "cpu"

    def __init__(
        self, dim: int, *, store: VectorStore | None = None, config: IndexConfig | None = None
    ) -> None:
        import faiss

        self.dim = dim
        self.store = store if store is not None else VectorStore(dim)
        self.config = config or IndexConfig(kind="flat")
        self._faiss: Any = faiss
        self._flat: Any = faiss.IndexFlatIP(dim)
        self._slot_of_row = _Growable()
        self._row_of_slot = np.full(0, -1, np.int64)
        self.report = IndexReport(self.kind, self.device, 0)

    @property
    def ntotal(self) -> int:
        return int(self._flat.ntotal)

    @property
    def rows_held(self) -> int:
        return int(self._flat.ntotal)

    def _rows_view(self) -> np.ndarray:
        n = self.ntotal
        return self._faiss.rev_swig_ptr(self._flat.get_xb(), n * self.dim).reshape(n, self.dim)

    def build(self, *, sample: np.ndarray | None = None) -> IndexReport:
        t0 = time.perf_counter()
        self._flat.reset()
        self._slot_of_row = _Growable()
        self._row_of_slot = np.full(0, -1, np.int64)
        slots = self.store.live_slots()
        for c0 in range(0, slots.size, CHUNK):
            part = slots[c0 : c0 + CHUNK]
            self._add_rows(part, self.store.rows(part))
        self.report = _flat_report(self, sample, t0)
        return self.report

    def _add_rows(self, slots: np.ndarray, vecs: np.ndarray) -> None:
        if not slots.size:
            return
        self._row_of_slot = _grow_map(self._row_of_slot, int(slots.max()) + 1)
        base = self.ntotal
        self._flat.add(np.ascontiguousarray(vecs, np.float32))
        self._slot_of_row.extend(slots)
        self._row_of_slot[slots] = np.arange(base, base + slots.size)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        v = _as_f32(vectors, self.dim)
        s = _slots(ids, v.shape[0])
        if not s.size:
            return
        self.store.write(s, v)
        self._row_of_slot = _grow_map(self._row_of_slot, int(s.max()) + 1)
        rows = self._row_of_slot[s]
        old = rows >= 0
        if old.any():
            self._rows_view()[rows[old]] = v[old]  # in place: no new row
        self._add_rows(s[~old], v[~old])

    def remove(self, ids: np.ndarray) -> int:
        s = _slots(ids)
        s = s[s < self._row_of_slot.shape[0]]
        s = s[self._row_of_slot[s] >= 0]
        if s.size:
            n, m = self.ntotal, int(s.size)
            gone = np.zeros(n, bool)
            gone[self._row_of_slot[s]] = True
            holes = np.flatnonzero(gone[: n - m])  # rows to fill ...
            movers = n - m + np.flatnonzero(~gone[n - m :])  # ... from the tail's live rows
            slot_of_row = self._slot_of_row.values
            if holes.size:
                view = self._rows_view()
                view[holes] = view[movers]
                moved = slot_of_row[movers]
                slot_of_row[holes] = moved
                self._row_of_slot[moved] = holes
            self._row_of_slot[s] = -1
            self._flat.remove_ids(self._faiss.IDSelectorRange(n - m, n))  # the tail: O(n)
            self._slot_of_row.truncate(n - m)
        self.store.clear(s)
        return int(s.size)

    def search(
        self, queries: np.ndarray, k: int, params: SearchParams | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        q = _as_f32(queries, self.dim)
        if k <= 0 or q.shape[0] == 0 or self.ntotal == 0:
            return _empty(q.shape[0], max(k, 0))
        scores, rows = self._flat.search(q, k)
        slots = np.where(rows >= 0, self._slot_of_row.values[np.maximum(rows, 0)], -1)
        scores[slots < 0] = -np.inf
        return scores, slots


# ---------------------------------------------------------------------------- IVF


class _Ivf:
    """What every IVF index shares: ``nlist``, the training sample, ``nprobe`` tuning, the
    report."""

    kind = "ivf"
    device = "cpu"
    dim: int
    store: VectorStore
    config: IndexConfig
    report: IndexReport
    max_nprobe = 1 << 30

    def _init_ivf(self) -> None:
        self.nlist = 0
        self.nprobe = 1
        """The tuned default (set once by :meth:`build`, before the index serves)."""

    def _train(self, index: Any, slots: np.ndarray) -> np.ndarray:
        """Train the coarse quantizer, then the codes; returns the centroids.

        The centroids are plain k-means means (``config.threads``), not FAISS's default for
        inner product (spherical k-means: unit-norm centroids), and items are assigned to
        their nearest centroid (L2) while queries probe the lists of the highest inner
        product: balanced lists that keep the norms inner-product search depends on
        (measured on 200,000 clustered items, recall@10 0.98 at ``nprobe`` 32 where the
        default reached 0.89, and 0.97 only at 96). PQ codes encode the residual to the
        list's centroid (``by_residual``): recall on 1M items no longer stops at 0.965 but
        reaches 0.98 at ``nprobe`` 16, and 4 candidates re-scored per result did as well
        as 16 (the default ``refine`` is 8). The codes (PQ: 1-d k-means per
        dimension) train in one thread: on a busy 2-core machine OpenMP's barriers made
        that 17x slower with two."""
        import faiss

        rows = self._training_rows(slots)
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.spherical = False
        clus = faiss.Clustering(self.dim, self.nlist, ivf.cp)
        clus.train(rows, faiss.IndexFlatL2(self.dim))
        centroids = faiss.vector_to_array(clus.centroids).reshape(self.nlist, self.dim)
        ivf.quantizer.reset()
        ivf.quantizer.add(centroids)
        with omp_threads(1):
            index.train(rows)  # the quantizer is trained: this trains the codes only
        return centroids

    def _training_rows(self, slots: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(self.config.seed)
        n = min(slots.size, max(40 * self.nlist, 4096))
        if n == 0:
            return np.zeros((1, self.dim), np.float32)
        return self.store.rows(np.sort(rng.choice(slots, n, replace=False)))

    def search(
        self, queries: np.ndarray, k: int, params: SearchParams | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _tune(self, sample: np.ndarray | None) -> int:
        top = min(self.nlist, self.max_nprobe)
        if self.config.nprobe:
            return min(self.config.nprobe, top)
        if sample is None or len(sample) == 0 or self.store.n_live == 0:
            return min(top, 32)
        _, truth = exact_topk(self.store, sample, RECALL_K)
        tried: list[tuple[int, float]] = []
        for n in [n for n in NPROBE_LADDER if n < top] + [top]:
            _, found = self.search(sample, RECALL_K, SearchParams(nprobe=n))
            recall = recall_at(found, truth)
            if recall >= self.config.target_recall:
                return n
            tried.append((n, recall))
            if len(tried) >= 3 and tried[-1][1] - tried[-3][1] < PLATEAU:
                break  # more lists no longer help (the codes limit recall): stop scanning
        best = max(r for _, r in tried)
        n = next(n for n, r in tried if r >= best - PLATEAU)
        log.warning(
            "index: recall@10 %.3f at nprobe %d is the most the sample reached (target %.3f)",
            best,
            n,
            self.config.target_recall,
        )
        return n

    def _finish(self, t0: float, sample: np.ndarray | None, codes: str, refine: int) -> None:
        self.nprobe = self._tune(sample)
        recall, nq = _measure(self, sample)
        self.report = IndexReport(
            self.kind,
            self.device,
            self.store.n_live,
            nlist=self.nlist,
            nprobe=self.nprobe,
            codes=codes,
            refine=refine,
            recall_at_10=recall,
            recall_queries=nq,
            build_s=round(time.perf_counter() - t0, 3),
        )

    def _nprobe(self, params: SearchParams | None) -> int:
        want = params.nprobe if params is not None and params.nprobe else self.nprobe
        return max(1, min(self.nlist, self.max_nprobe, want))


def _new_ivf(faiss: Any, dim: int, nlist: int, codes: str, seed: int) -> Any:
    ip = faiss.METRIC_INNER_PRODUCT
    if codes == "pq":  # one 4-bit sub-quantizer per dimension, fast-scan layout
        index = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(dim), dim, nlist, dim, 4, ip)
        index.by_residual = True  # codes of residuals to the centroid: finer (see _train)
        index.pq.cp.min_points_per_centroid = 1
        index.pq.cp.seed = seed
    else:
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, ip)
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # O(1) removal by id
    index.cp.seed = seed
    index.cp.min_points_per_centroid = 1  # small catalogues: no "too few points" warnings
    return index


class IvfIndex(_Ivf):
    """FAISS IVF over the store's slots, ID-mapped (slot = FAISS id): an upsert of a live
    slot removes its entry and adds the new one, a removal deletes it, so entries == items.

    ``codes="pq"``: 4-bit PQ codes (one sub-quantizer per dimension) in fast-scan blocks
    (``IndexIVFPQFastScan``), the best ``refine * k`` candidates re-scored exactly from the
    store. FAISS 1.15 leaves the bits of removed entries in the last, partly filled block of
    a list, and the code packer ORs a later entry's bits into them (that entry is then not
    found): after every removal the freed positions of the touched lists are cleared
    (:meth:`_clear_tails`, a precomputed bit mask per position). ``codes="flat"``: full
    vectors (``IndexIVFFlat``, a hash-table direct map: O(1) removal per id), exact within
    the probed lists."""

    def __init__(
        self, dim: int, *, store: VectorStore | None = None, config: IndexConfig | None = None
    ) -> None:
        import faiss

        self.dim = dim
        self.store = store if store is not None else VectorStore(dim)
        self.config = config or IndexConfig(kind="ivf")
        self._faiss: Any = faiss
        self._index: Any = None
        self._probe: Any = None
        self._assign: Any = None
        self._tail_masks: np.ndarray | None = None
        self._init_ivf()
        self.report = IndexReport(self.kind, self.device, 0)

    @property
    def codes(self) -> str:
        return self.config.codes

    @property
    def ntotal(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    @property
    def rows_held(self) -> int:
        return self.ntotal

    def build(self, *, sample: np.ndarray | None = None) -> IndexReport:
        t0 = time.perf_counter()
        slots = self.store.live_slots()
        self.nlist = self.config.resolve_nlist(int(slots.size))
        index = _new_ivf(self._faiss, self.dim, self.nlist, self.codes, self.config.seed)
        centroids = self._train(index, slots)
        self._probe = index.quantizer  # inner product: what queries probe by
        self._assign = self._faiss.IndexFlatL2(self.dim)  # nearest centroid: where items go
        self._assign.add(centroids)
        self._index = index
        for c0 in range(0, slots.size, CHUNK):
            part = slots[c0 : c0 + CHUNK]
            self._add(self.store.rows(part), part)
        self._tail_masks = self._masks() if self.codes == "pq" else None
        self._finish(t0, sample, self.codes, self.config.refine if self.codes == "pq" else 0)
        return self.report

    def _require(self) -> Any:
        if self._index is None:
            raise RuntimeError("the IVF index is not built yet (call build())")
        return self._index

    def _add(self, vecs: np.ndarray, slots: np.ndarray) -> None:
        """``add_with_ids`` with items assigned by L2 (:meth:`_Ivf._train`): FAISS assigns with
        the index's quantizer, so the L2 one stands in for the call (mutations and searches
        never overlap: the recommender's lock)."""
        index = self._require()
        index.quantizer = self._assign
        try:
            index.add_with_ids(vecs, slots)
        finally:
            index.quantizer = self._probe

    # -- removal ---------------------------------------------------------------------
    def _masks(self) -> np.ndarray:
        """``masks[r]``: the bits of block positions ``r ..`` of a fast-scan block."""
        il = self._faiss.downcast_InvertedLists(self._index.invlists)
        packer, nb, bs = il.packer, int(il.n_per_block), int(il.block_size)
        ones = np.full(packer.code_size, 0xFF, np.uint8)
        masks = np.zeros((nb + 1, bs), np.uint8)
        for j in range(nb - 1, -1, -1):
            block = np.zeros((1, bs), np.uint8)
            packer.pack_1(ones, j, block)
            masks[j] = masks[j + 1] | block[0]
        return masks

    def _list_sizes(self) -> np.ndarray:
        il = self._index.invlists
        return np.fromiter((il.list_size(i) for i in range(self.nlist)), np.int64, self.nlist)

    def _clear_tails(self, before: np.ndarray) -> None:
        """Zero the positions freed in the last block of every list that shrank."""
        assert self._tail_masks is not None
        il = self._faiss.downcast_InvertedLists(self._index.invlists)
        nb, bs = int(il.n_per_block), int(il.block_size)
        after = self._list_sizes()
        for lst in np.flatnonzero(after < before).tolist():
            size = int(after[lst])
            if size % nb == 0:
                continue  # no partly filled block (freed blocks were released)
            nblocks = (size + nb - 1) // nb
            codes = self._faiss.rev_swig_ptr(il.get_codes(lst), nblocks * bs)
            codes[(nblocks - 1) * bs :] &= ~self._tail_masks[size % nb]

    def _remove_ids(self, s: np.ndarray) -> None:
        index = self._require()
        if self.codes == "pq":
            before = self._list_sizes()
            index.remove_ids(s)
            self._clear_tails(before)
        else:
            index.remove_ids(s)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._require()
        v = _as_f32(vectors, self.dim)
        s = _slots(ids, v.shape[0])
        if not s.size:
            return
        old = s[self.store.is_live(s)]
        if old.size:
            self._remove_ids(old)  # replaced: the entry goes, the new one comes
        self.store.write(s, v)
        self._add(v, s)

    def remove(self, ids: np.ndarray) -> int:
        s = _slots(ids)
        s = s[self.store.is_live(s)]
        if s.size:
            self._remove_ids(s)
        self.store.clear(s)
        return int(s.size)

    def search(
        self, queries: np.ndarray, k: int, params: SearchParams | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        q = _as_f32(queries, self.dim)
        if k <= 0 or q.shape[0] == 0 or self.ntotal == 0:
            return _empty(q.shape[0], max(k, 0))
        index = self._require()
        fp = self._faiss.SearchParametersIVF(nprobe=self._nprobe(params))
        if self.codes != "pq":
            scores, slots = index.search(q, min(k, self.ntotal), params=fp)
            return _pad(scores, slots, k)
        refine = params.refine if params is not None and params.refine else self.config.refine
        kk = min(self.ntotal, max(k, refine * min(k, RECALL_K) + max(0, k - RECALL_K)))
        _, cand = index.search(q, kk, params=fp)
        return rescore(self.store, q, cand, k)


def _pad(scores: np.ndarray, slots: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.where(slots >= 0, scores, -np.inf).astype(np.float32)
    if slots.shape[1] < k:
        s, i = _empty(slots.shape[0], k - slots.shape[1])
        scores, slots = np.hstack([scores, s]), np.hstack([slots, i])
    return scores, slots


def rescore(
    store: VectorStore, queries: np.ndarray, cand: np.ndarray, k: int, *, dedupe: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner products of candidate slots ``cand [B, C]`` (``-1``: none; dead slots
    dropped, and with ``dedupe`` a slot found twice in a row) from the store; returns the
    best ``k`` per row, best first."""
    cand = np.where(store.is_live(cand), cand, -1)
    if dedupe and cand.shape[1] > 1:
        order = np.argsort(cand, axis=1, kind="stable")
        sc = np.take_along_axis(cand, order, 1)
        dup_sorted = np.zeros_like(sc, bool)
        dup_sorted[:, 1:] = (sc[:, 1:] == sc[:, :-1]) & (sc[:, 1:] >= 0)
        dup = np.zeros_like(cand, bool)
        np.put_along_axis(dup, order, dup_sorted, 1)
        cand = np.where(dup, -1, cand)
    vecs = store.rows(np.maximum(cand, 0))  # [B, C, dim]
    scores = np.einsum("bcd,bd->bc", vecs, queries).astype(np.float32)
    scores[cand < 0] = -np.inf
    kk = min(k, cand.shape[1])
    if kk == 0:
        return _empty(cand.shape[0], k)
    if kk < cand.shape[1]:
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    else:
        part = np.broadcast_to(np.arange(cand.shape[1]), cand.shape).copy()
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    top = np.take_along_axis(part, order, 1)
    out_s = np.take_along_axis(scores, top, 1)
    out_i = np.where(np.isfinite(out_s), np.take_along_axis(cand, top, 1), -1)
    return _pad(out_s, out_i, k)


# ---------------------------------------------------------------------------- GPU


class _Entries:
    """FAISS GPU indexes cannot remove: entries are numbered as added and map to slots; an
    upsert adds a new entry (the slot's previous one turns dead), a removal only kills the
    slot's entry; search results are mapped to slots, dead entries dropped, and re-scored
    exactly from the store. Past ``MAX_DEAD_SHARE`` dead entries (at least 1,024) the GPU
    structure is refilled from the store, in place (a GPU adds 1M vectors in about a
    second; one GPU's resources serve one call at a time)."""

    kind: str
    device = "gpu"
    _max_k = GPU_MAX_K

    def __init__(
        self,
        dim: int,
        *,
        store: VectorStore | None = None,
        config: IndexConfig | None = None,
        device: int = 0,
    ) -> None:
        """The set-up both FAISS GPU indexes share: FAISS with a GPU (else ``RuntimeError``),
        one ``StandardGpuResources`` on GPU ``device``, no entries, an empty report."""
        import faiss

        if not gpu_available():
            raise RuntimeError("this faiss build sees no GPU")
        self.dim = dim
        self.store = store if store is not None else VectorStore(dim)
        self.config = config or IndexConfig(kind="flat" if self.kind == "flat" else "ivf")
        self._faiss: Any = faiss
        self._res = faiss.StandardGpuResources()
        self._device = device
        self._slot_of_entry = _Growable()
        self._entry_of_slot = np.full(0, -1, np.int64)
        self._index: Any = None
        self.rebuilds = 0
        self.report = IndexReport(self.kind, self.device, 0)

    def _fresh(self) -> Any:
        """An empty, trained structure."""
        raise NotImplementedError

    def _add(self, index: Any, entries: np.ndarray, vecs: np.ndarray) -> None:
        raise NotImplementedError

    def _search_entries(
        self, index: Any, q: np.ndarray, k: int, params: SearchParams | None
    ) -> np.ndarray:
        raise NotImplementedError

    @property
    def ntotal(self) -> int:
        return self.store.n_live

    @property
    def rows_held(self) -> int:
        return self._slot_of_entry.n

    def _require(self) -> Any:
        if self._index is None:
            raise RuntimeError("the index is not built yet (call build())")
        return self._index

    def _fill_all(self, index: Any | None = None) -> None:
        index = index if index is not None else self._fresh()
        slots = self.store.live_slots()
        for c0 in range(0, slots.size, CHUNK):
            part = slots[c0 : c0 + CHUNK]
            self._add(index, np.arange(c0, c0 + part.size, dtype=np.int64), self.store.rows(part))
        self._index = index
        self._slot_of_entry = _Growable(slots)
        self._entry_of_slot = np.full(max(self.store.capacity, 1), -1, np.int64)
        self._entry_of_slot[slots] = np.arange(slots.size)

    def _append(self, slots: np.ndarray, vecs: np.ndarray) -> None:
        if not slots.size:
            return
        self._entry_of_slot = _grow_map(self._entry_of_slot, int(slots.max()) + 1)
        base = self._slot_of_entry.n
        entries = np.arange(base, base + slots.size, dtype=np.int64)
        self._add(self._require(), entries, np.ascontiguousarray(vecs, np.float32))
        self._slot_of_entry.extend(slots)
        self._entry_of_slot[slots] = entries

    def _maybe_rebuild(self) -> None:
        dead = self.rows_held - self.ntotal
        if dead > max(1024, MAX_DEAD_SHARE * self.ntotal):
            self._fill_all()
            self.rebuilds += 1

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._require()
        v = _as_f32(vectors, self.dim)
        s = _slots(ids, v.shape[0])
        self.store.write(s, v)
        self._append(s, v)  # the slot's previous entry (if any) is now dead
        self._maybe_rebuild()

    def remove(self, ids: np.ndarray) -> int:
        self._require()
        gone = self.store.clear(_slots(ids))
        inside = gone[gone < self._entry_of_slot.shape[0]]
        self._entry_of_slot[inside] = -1
        self._maybe_rebuild()
        return int(gone.size)

    def search(
        self, queries: np.ndarray, k: int, params: SearchParams | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        q = _as_f32(queries, self.dim)
        if k <= 0 or q.shape[0] == 0 or self.ntotal == 0:
            return _empty(q.shape[0], max(k, 0))
        index = self._require()
        refine = params.refine if params is not None and params.refine else self.config.refine
        want = refine * min(k, RECALL_K) + max(0, k - RECALL_K)
        dead_share = (self.rows_held - self.ntotal) / max(1, self.ntotal)
        kk = min(self.rows_held, self._max_k, max(k, math.ceil(want * (1 + dead_share))))
        entries = self._search_entries(index, q, kk, params)
        ok = entries >= 0
        slots = np.where(ok, self._slot_of_entry.values[np.maximum(entries, 0)], -1)
        inside = (slots >= 0) & (slots < self._entry_of_slot.shape[0])
        current = np.zeros_like(ok)
        current[inside] = self._entry_of_slot[slots[inside]] == entries[inside]
        return rescore(self.store, q, np.where(current, slots, -1), k)


class GpuFlatIndex(_Entries):
    """Exact search on a GPU (``faiss.GpuIndexFlatIP``; needs a FAISS build with GPU
    support); dead entries and an in-place refill (:class:`_Entries`)."""

    kind = "flat"

    def _fresh(self) -> Any:
        cfg = self._faiss.GpuIndexFlatConfig()
        cfg.device = self._device
        return self._faiss.GpuIndexFlatIP(self._res, self.dim, cfg)

    def _add(self, index: Any, entries: np.ndarray, vecs: np.ndarray) -> None:
        if int(index.ntotal) != int(entries[0]):  # flat GPU ids are the add order
            raise RuntimeError("GPU flat index out of step with its entries")
        index.add(vecs)

    def _search_entries(
        self, index: Any, q: np.ndarray, k: int, params: SearchParams | None
    ) -> np.ndarray:
        return index.search(q, k)[1]

    def build(self, *, sample: np.ndarray | None = None) -> IndexReport:
        t0 = time.perf_counter()
        self._fill_all()
        self.report = _flat_report(self, sample, t0)
        return self.report


class GpuIvfIndex(_Entries, _Ivf):
    """IVF on a GPU (``faiss.GpuIndexIVFFlat``, quantizer trained on the GPU; ``nprobe`` per
    call through ``SearchParametersIVF``), candidates re-scored from the store; dead entries
    and an in-place refill (:class:`_Entries`)."""

    device = "gpu"
    max_nprobe = GPU_MAX_K

    def __init__(
        self,
        dim: int,
        *,
        store: VectorStore | None = None,
        config: IndexConfig | None = None,
        device: int = 0,
    ) -> None:
        super().__init__(dim, store=store, config=config, device=device)
        self._template: Any = None
        self._init_ivf()

    def _fresh(self) -> Any:
        return self._faiss.index_cpu_to_gpu(self._res, self._device, self._template)

    def _add(self, index: Any, entries: np.ndarray, vecs: np.ndarray) -> None:
        index.add_with_ids(vecs, entries)

    def _search_entries(
        self, index: Any, q: np.ndarray, k: int, params: SearchParams | None
    ) -> np.ndarray:
        fp = self._faiss.SearchParametersIVF(nprobe=self._nprobe(params))
        return index.search(q, k, params=fp)[1]

    def build(self, *, sample: np.ndarray | None = None) -> IndexReport:
        faiss = self._faiss
        t0 = time.perf_counter()
        slots = self.store.live_slots()
        self.nlist = self.config.resolve_nlist(int(slots.size))
        cfg = faiss.GpuIndexIVFFlatConfig()
        cfg.device = self._device
        gpu = faiss.GpuIndexIVFFlat(
            self._res, self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT, cfg
        )
        gpu.train(self._training_rows(slots))
        self._template = faiss.index_gpu_to_cpu(gpu)  # trained and empty, kept on the host
        self._fill_all(gpu)
        self._finish(t0, sample, "flat", self.config.refine)
        return self.report


# ---------------------------------------------------------------------------- torch


TORCH_BLOCK_ELEMENTS = 1 << 26
""":class:`TorchFlatIndex`: scores computed per block of items (queries x items elements)."""


class TorchFlatIndex:
    """Exact search with torch on any device: inner products and top-``k`` per block of items
    (at most :data:`TORCH_BLOCK_ELEMENTS` scores at a time), merged block by block; the
    store's rows are mirrored on ``device`` (grown with the store), free slots masked, so an
    upsert or a removal writes rows in place (no dead entries, no refill).

    A candidate GPU implementation beside :class:`GpuFlatIndex`: it needs only torch (FAISS
    GPU wheels need their own CUDA libraries); :func:`make_index` does not choose it.
    ``device``: a torch device (``cuda``, ``cuda:1``, ``cpu``); ``None``: ``cuda`` when torch
    sees a GPU, else ``cpu`` (the CPU path is what the unit tests run)."""

    kind = "flat"

    def __init__(
        self,
        dim: int,
        *,
        store: VectorStore | None = None,
        config: IndexConfig | None = None,
        device: Any = None,
        block_elements: int = TORCH_BLOCK_ELEMENTS,
    ) -> None:
        import torch

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.torch_device = torch.device(device)
        self.device = "cpu" if self.torch_device.type == "cpu" else "gpu"
        self.dim = dim
        self.store = store if store is not None else VectorStore(dim)
        self.config = config or IndexConfig(kind="flat")
        self.block_elements = block_elements
        self._rows = torch.zeros((0, dim), dtype=torch.float32, device=self.torch_device)
        self._live = torch.zeros(0, dtype=torch.bool, device=self.torch_device)
        self._built = False
        self.report = IndexReport(self.kind, self.device, 0)

    @property
    def ntotal(self) -> int:
        return self.store.n_live

    @property
    def rows_held(self) -> int:
        return self.store.n_live

    def _mirror(self) -> None:
        """The device rows and mask, as long as the store (new rows copied from it)."""
        import torch

        have, cap = int(self._rows.shape[0]), self.store.capacity
        if cap <= have:
            return
        rows = torch.empty((cap, self.dim), dtype=torch.float32, device=self.torch_device)
        live = torch.zeros(cap, dtype=torch.bool, device=self.torch_device)
        rows[:have] = self._rows
        live[:have] = self._live
        for c0 in range(have, cap, CHUNK):
            c1 = min(cap, c0 + CHUNK)
            rows[c0:c1] = torch.from_numpy(self.store.array[c0:c1]).to(self.torch_device)
            live[c0:c1] = torch.from_numpy(np.array(self.store.live[c0:c1])).to(self.torch_device)
        self._rows, self._live = rows, live

    def build(self, *, sample: np.ndarray | None = None) -> IndexReport:
        import torch

        t0 = time.perf_counter()
        self._rows = torch.zeros((0, self.dim), dtype=torch.float32, device=self.torch_device)
        self._live = torch.zeros(0, dtype=torch.bool, device=self.torch_device)
        self._mirror()
        self._built = True
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize(self.torch_device)
        self.report = _flat_report(self, sample, t0)
        return self.report

    def _require(self) -> None:
        if not self._built:
            raise RuntimeError("the index is not built yet (call build())")

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        import torch

        self._require()
        v = _as_f32(vectors, self.dim)
        s = _slots(ids, v.shape[0])
        if not s.size:
            return
        self.store.write(s, v)
        self._mirror()
        at = torch.from_numpy(s).to(self.torch_device)
        self._rows[at] = torch.from_numpy(v).to(self.torch_device)
        self._live[at] = True

    def remove(self, ids: np.ndarray) -> int:
        import torch

        self._require()
        gone = self.store.clear(_slots(ids))
        if gone.size:
            self._live[torch.from_numpy(gone).to(self.torch_device)] = False
        return int(gone.size)

    def search(
        self, queries: np.ndarray, k: int, params: SearchParams | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact: ``params`` change nothing."""
        import torch

        q_host = _as_f32(queries, self.dim)
        nq = q_host.shape[0]
        if k <= 0 or nq == 0 or self.ntotal == 0:
            return _empty(nq, max(k, 0))
        self._require()
        dev = self.torch_device
        q = torch.from_numpy(q_host).to(dev)
        block = max(1024, self.block_elements // nq)
        best_s = torch.full((nq, 0), -math.inf, device=dev)
        best_i = torch.full((nq, 0), -1, dtype=torch.int64, device=dev)
        with torch.no_grad():
            for c0 in range(0, int(self._rows.shape[0]), block):
                c1 = min(int(self._rows.shape[0]), c0 + block)
                s = q @ self._rows[c0:c1].T
                s.masked_fill_(~self._live[c0:c1], -math.inf)
                top = torch.topk(s, min(k, c1 - c0), dim=1)
                cand_s = torch.cat([best_s, top.values], 1)
                cand_i = torch.cat([best_i, top.indices + c0], 1)
                merged = torch.topk(cand_s, min(k, cand_s.shape[1]), dim=1)
                best_s, best_i = merged.values, torch.gather(cand_i, 1, merged.indices)
        scores = best_s.cpu().numpy().astype(np.float32)
        slots = np.where(np.isfinite(scores), best_i.cpu().numpy(), -1).astype(np.int64)
        return _pad(scores, slots, k)


# ---------------------------------------------------------------------------- choosing


def gpu_available() -> bool:
    try:
        import faiss

        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # pragma: no cover - broken faiss install
        return False


IMPLEMENTATIONS: Mapping[tuple[str, str], Any] = {
    ("flat", "cpu"): FlatIndex,
    ("ivf", "cpu"): IvfIndex,
    ("flat", "gpu"): GpuFlatIndex,
    ("ivf", "gpu"): GpuIvfIndex,
}
"""``(kind, device)`` -> class (GPU IVF always holds full vectors)."""


def make_index(
    dim: int,
    *,
    n_items: int = 0,
    config: IndexConfig | None = None,
    store: VectorStore | None = None,
    prefer_gpu: bool = True,
) -> ItemIndex:
    """The index ``config`` asks for at ``n_items`` items (``auto``: exact below
    ``exact_below``), on a GPU when FAISS sees one (and ``prefer_gpu`` and ``config.gpu``),
    else on the CPU. Not built yet: call :meth:`ItemIndex.build`."""
    cfg = config or IndexConfig()
    kind = cfg.resolve_kind(n_items)
    device = "gpu" if prefer_gpu and cfg.gpu and gpu_available() else "cpu"
    cls = IMPLEMENTATIONS[(kind, device)]
    index: ItemIndex = cls(dim, store=store, config=replace(cfg, kind=kind))
    return index
