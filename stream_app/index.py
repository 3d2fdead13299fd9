"""Item indexes: exact inner-product top-K over item vectors (FAISS on CPU or GPU).

Rows are numbered in insertion order (``0 .. ntotal-1``); the caller maps rows to item ids.
The index only grows (``add``); a replaced item's old row is filtered out by the caller.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class ItemIndex(Protocol):
    """What the recommender needs from an item index."""

    dim: int
    kind: str
    """``faiss-cpu`` or ``faiss-gpu`` (for logs and metrics)."""

    @property
    def ntotal(self) -> int: ...

    def add(self, vectors: np.ndarray) -> None:
        """Append rows ``[n, dim]`` (float32)."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows by inner product: ``(scores [B, k] float32, rows [B, k] int64)``,
        best first; rows are ``-1`` (score ``-inf``) where fewer than ``k`` exist."""


def _as_f32(x: np.ndarray, dim: int) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected vectors of shape [n, {dim}], got {x.shape}")
    return x


class FaissCpuIndex:
    """``faiss.IndexFlatIP`` on the CPU (exact)."""

    kind = "faiss-cpu"

    def __init__(self, dim: int) -> None:
        import faiss

        self.dim = dim
        self._index: Any = faiss.IndexFlatIP(dim)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        self._index.add(_as_f32(vectors, self.dim))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = _as_f32(queries, self.dim)
        if k <= 0 or q.shape[0] == 0:
            k = max(k, 0)
            return (
                np.full((q.shape[0], k), -np.inf, np.float32),
                np.full((q.shape[0], k), -1, np.int64),
            )
        scores, rows = self._index.search(q, k)
        scores[rows < 0] = -np.inf
        return scores, rows


class FaissGpuIndex(FaissCpuIndex):
    """``faiss.GpuIndexFlatIP`` on a CUDA GPU (exact; needs a faiss build with GPU support)."""

    kind = "faiss-gpu"
    MAX_K = 2048  # FAISS GPU k-selection limit

    def __init__(self, dim: int, device: int = 0) -> None:
        import faiss

        if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
            raise RuntimeError("this faiss build sees no GPU")
        self.dim = dim
        self._res = faiss.StandardGpuResources()
        cfg = faiss.GpuIndexFlatConfig()
        cfg.device = device
        self._index: Any = faiss.GpuIndexFlatIP(self._res, dim, cfg)  # the IndexFlatIP API

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return super().search(queries, min(k, self.MAX_K))


def gpu_available() -> bool:
    try:
        import faiss

        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # pragma: no cover - broken faiss install
        return False


def make_index(dim: int, *, prefer_gpu: bool = True) -> ItemIndex:
    """FAISS GPU when ``faiss.get_num_gpus() > 0`` (and wanted), else FAISS CPU."""
    if prefer_gpu and gpu_available():
        return FaissGpuIndex(dim)
    return FaissCpuIndex(dim)
