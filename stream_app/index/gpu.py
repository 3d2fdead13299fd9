"""The GPU indexes: :class:`GpuFlatIndex` and :class:`GpuIvfIndex` (FAISS GPU, when FAISS sees
a GPU: :func:`gpu_available`) on one shared base, :class:`_Entries` (FAISS GPU indexes cannot
remove entries: dead entries, never returned, and an in-place refill), and
:class:`TorchFlatIndex` (exact search with torch on any device, a candidate where FAISS GPU is
not installed; :func:`stream_app.index.make_index` does not choose it). No CPU test reaches
the FAISS GPU branches: ``make gpu-check`` runs them where FAISS sees a GPU
(docs/architecture.md)."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from stream_app.index.config import (
    CHUNK,
    GPU_MAX_K,
    MAX_DEAD_SHARE,
    RECALL_K,
    TORCH_BLOCK_ELEMENTS,
    IndexConfig,
    IndexReport,
    SearchParams,
)
from stream_app.index.cpu import _Ivf, rescore
from stream_app.index.store import (
    VectorStore,
    _as_f32,
    _empty,
    _flat_report,
    _grow_map,
    _Growable,
    _pad,
    _slots,
)

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


class TorchFlatIndex:
    """Exact search with torch on any device: inner products and top-``k`` per block of items
    (at most :data:`~stream_app.index.config.TORCH_BLOCK_ELEMENTS` scores at a time), merged
    block by block; the store's rows are mirrored on ``device`` (grown with the store), free
    slots masked, so an upsert or a removal writes rows in place (no dead entries, no refill).

    A candidate GPU implementation beside :class:`GpuFlatIndex`: it needs only torch (FAISS
    GPU wheels need their own CUDA libraries); :func:`~stream_app.index.make_index` does not
    choose it. ``device``: a torch device (``cuda``, ``cuda:1``, ``cpu``); ``None``: ``cuda``
    when torch sees a GPU, else ``cpu`` (the CPU path is what the unit tests run)."""

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


def gpu_available() -> bool:
    try:
        import faiss

        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # pragma: no cover - broken faiss install
        return False
