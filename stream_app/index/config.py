"""What an index is asked for and what it reports: :class:`IndexConfig` (the worker's
``index*`` settings), :class:`SearchParams` (per call), :class:`IndexReport` (per build), and
the numbers every index shares (the ``nprobe`` ladder, the recall K, the FAISS GPU limit, the
rows per FAISS call). Imports nothing of the package: every other module builds on it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

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

TORCH_BLOCK_ELEMENTS = 1 << 26
""":class:`~stream_app.index.gpu.TorchFlatIndex`: scores computed per block of items (queries x items elements)."""


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
