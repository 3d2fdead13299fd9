"""Training side of coldstream: data, teacher, student, distillation, evaluation, model store.

``import trainer``, ``coldstream.core.student`` and ``coldstream.core.checkpoint`` stay light (no
``transformers``); ``fit``, ``train_bootstrap`` and ``load_checkpoint`` are exported
lazily.
"""

from __future__ import annotations

__all__ = ["fit", "train_bootstrap", "load_checkpoint", "FitConfig"]


def __getattr__(name: str):
    if name in ("fit", "train_bootstrap", "FitConfig"):
        from trainer import fitting as _fit

        return getattr(_fit, name)
    if name == "load_checkpoint":
        from coldstream.core.checkpoint import load_checkpoint

        return load_checkpoint
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
