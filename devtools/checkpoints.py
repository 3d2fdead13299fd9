"""Small random models for tests, benchmarks and the demo.

A randomly initialised :class:`~coldstream.core.student.Student` saved with
:func:`coldstream.core.checkpoint.save_checkpoint` is a valid model for everything serving
does (:func:`make_checkpoint`); :func:`random_serving_model` builds a serving model in
memory, without a checkpoint on disk (large indexes for the micro-benchmarks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["make_checkpoint", "random_serving_model"]


def make_checkpoint(
    root: Path | str,
    *,
    n_items: int = 200,
    dim: int = 32,
    text_dim: int = 32,
    seed: int = 0,
    encoder: str = "gru",
    n_text_only: int = 0,
    titles: list[str] | None = None,
    max_len: int = 50,
) -> Path:
    """Save a random student over items ``"1" .. str(n_items + n_text_only)`` and return its path.

    The last ``n_text_only`` items have no id embedding (placed by text alone)."""
    import torch

    from coldstream.core.checkpoint import save_checkpoint
    from coldstream.core.student import Student, StudentConfig

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    total = n_items + n_text_only
    model = Student(
        StudentConfig(
            n_items=n_items,
            text_dim=text_dim,
            dim=dim,
            max_len=max_len,
            encoder=encoder,
            dropout=0.0,
        )
    )
    ids = [str(i + 1) for i in range(total)]
    return save_checkpoint(
        root,
        model=model,
        item_ids=ids,
        item_text_vecs=rng.standard_normal((total, text_dim)).astype(np.float32),
        item_titles=titles or [f"Item {i}" for i in ids],
        metrics={"note": "random test model"},
        teacher={"name": "none"},
    )


def random_serving_model(n_items: int, dim: int, seed: int = 0) -> Any:
    """A ``stream_app.recommender.ServingModel`` over ``n_items`` random unit vectors (exact
    CPU FAISS index) without writing a checkpoint."""
    import torch

    from coldstream.core.checkpoint import Checkpoint
    from coldstream.core.student import Student, StudentConfig
    from stream_app.index import FaissCpuIndex
    from stream_app.recommender import ServingModel

    torch.manual_seed(seed)
    cfg = StudentConfig(n_items=1, text_dim=8, dim=dim, dropout=0.0)  # ids unused: vectors given
    model = Student(cfg).eval()
    vecs = np.random.default_rng(seed).standard_normal((n_items, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [str(i) for i in range(n_items)]
    ck = Checkpoint(
        path=Path("."),
        version=0,
        config=cfg,
        model=model,
        item_ids=ids,
        item_titles=[""] * n_items,
        item_text_vecs=np.zeros((n_items, 0), np.float32),
        item_vectors=vecs,
        metrics={},
        teacher={},
        manifest={},
        device=torch.device("cpu"),
    )
    index = FaissCpuIndex(dim)
    index.add(vecs)
    return ServingModel(
        version="0",
        checkpoint=ck,
        item_ids=tuple(ids),
        index_of=ck.index_of,
        table=ck.table,
        index=index,
        popular_seed=tuple(ids[:100]),
    )
