"""The CPU indexes (FAISS): :class:`FlatIndex` (exact) and :class:`IvfIndex` (IVF), with what
every IVF index shares (:class:`_Ivf`: ``nlist``, the training sample, ``nprobe`` tuning, the
report; :mod:`stream_app.index.gpu`'s IVF builds on it too) and :func:`rescore` (candidates
re-scored exactly from the store). Both are ID-mapped by slot: an upsert replaces the slot's
entry, a removal deletes it, so they hold exactly as many entries as items."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from stream_app.index.config import (
    CHUNK,
    NPROBE_LADDER,
    PLATEAU,
    RECALL_K,
    IndexConfig,
    IndexReport,
    SearchParams,
)
from stream_app.index.store import (
    VectorStore,
    _as_f32,
    _empty,
    _flat_report,
    _grow_map,
    _Growable,
    _measure,
    _pad,
    _slots,
    exact_topk,
    faiss_module,
    omp_threads,
    recall_at,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- exact


class FlatIndex:
    """Exact search: ``faiss.IndexFlatIP`` over compact rows (an upsert overwrites the item's
    row in place, a removal moves a tail row into the hole); row <-> slot maps beside it."""

    kind = "flat"
    device = "cpu"

    def __init__(
        self, dim: int, *, store: VectorStore | None = None, config: IndexConfig | None = None
    ) -> None:
        faiss = faiss_module()

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
        faiss = faiss_module()

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
