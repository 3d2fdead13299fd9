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

Where things live (each module imports only those above it; every name is re-exported here,
so callers import from ``stream_app.index``):

* :mod:`~stream_app.index.config`: :class:`IndexConfig`, :class:`SearchParams`,
  :class:`IndexReport` and the shared numbers (:data:`EXACT_BELOW`, :data:`NPROBE_LADDER`,
  :data:`RECALL_K`, :data:`MAX_DEAD_SHARE`, ...).
* :mod:`~stream_app.index.store`: :class:`VectorStore`, :func:`exact_topk`,
  :func:`recall_at`, :func:`omp_threads`, :func:`faiss_module` (FAISS with its BLAS
  switch set) and the array helpers the indexes share.
* :mod:`~stream_app.index.cpu`: :class:`FlatIndex`, :class:`IvfIndex` (and ``_Ivf``, what
  every IVF index shares), :func:`rescore`.
* :mod:`~stream_app.index.gpu`: :class:`GpuFlatIndex`, :class:`GpuIvfIndex` (one shared
  set-up, ``_Entries``), :class:`TorchFlatIndex`, :func:`gpu_available`.
* here: the :class:`ItemIndex` protocol and the choice, :func:`make_index`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from stream_app.index.config import (
    CHUNK,
    EXACT_BELOW,
    GPU_MAX_K,
    MAX_DEAD_SHARE,
    NPROBE_LADDER,
    PLATEAU,
    RECALL_K,
    TORCH_BLOCK_ELEMENTS,
    IndexConfig,
    IndexKind,
    IndexReport,
    IvfCodes,
    SearchParams,
)
from stream_app.index.cpu import FlatIndex, IvfIndex, rescore
from stream_app.index.gpu import GpuFlatIndex, GpuIvfIndex, TorchFlatIndex, gpu_available
from stream_app.index.store import VectorStore, exact_topk, faiss_module, omp_threads, recall_at

__all__ = [
    "CHUNK",
    "EXACT_BELOW",
    "GPU_MAX_K",
    "IMPLEMENTATIONS",
    "MAX_DEAD_SHARE",
    "NPROBE_LADDER",
    "PLATEAU",
    "RECALL_K",
    "TORCH_BLOCK_ELEMENTS",
    "FlatIndex",
    "GpuFlatIndex",
    "GpuIvfIndex",
    "IndexConfig",
    "IndexKind",
    "IndexReport",
    "ItemIndex",
    "IvfCodes",
    "IvfIndex",
    "SearchParams",
    "TorchFlatIndex",
    "VectorStore",
    "exact_topk",
    "faiss_module",
    "gpu_available",
    "make_index",
    "omp_threads",
    "recall_at",
    "rescore",
]


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


# ---------------------------------------------------------------------------- choosing


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
