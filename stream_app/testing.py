"""Helpers for tests, benchmarks and the demo: small checkpoints and synthetic events.

A randomly initialised :class:`~trainer.student.Student` saved with
:func:`trainer.store.save_checkpoint` is a valid model for everything serving does.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np


def make_checkpoint(root: Path | str, *, n_items: int = 200, dim: int = 32, text_dim: int = 32,
                    seed: int = 0, encoder: str = "gru", n_text_only: int = 0,
                    titles: list[str] | None = None, max_len: int = 50) -> Path:
    """Save a random student over items ``"1" .. str(n_items + n_text_only)`` and return its path.

    The last ``n_text_only`` items have no id embedding (placed by text alone)."""
    import torch

    from trainer.store import save_checkpoint
    from trainer.student import Student, StudentConfig

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    total = n_items + n_text_only
    model = Student(StudentConfig(n_items=n_items, text_dim=text_dim, dim=dim, max_len=max_len,
                                  encoder=encoder, dropout=0.0))
    ids = [str(i + 1) for i in range(total)]
    return save_checkpoint(
        root, model=model, item_ids=ids,
        item_text_vecs=rng.standard_normal((total, text_dim)).astype(np.float32),
        item_titles=titles or [f"Item {i}" for i in ids],
        metrics={"note": "random test model"}, teacher={"name": "none"},
    )


def event_bytes(user_id: str, item_id: str, *, event_id: str | None = None, ts: float | None = None,
                **extra: object) -> tuple[str, bytes]:
    """``(event_id, JSON bytes)`` of a valid click/purchase event."""
    eid = event_id or uuid.uuid4().hex
    body = {"event_id": eid, "user_id": user_id, "item_id": item_id,
            "ts": time.time() if ts is None else ts, **extra}
    return eid, json.dumps(body).encode()
