"""Training side of coldstream, in rooms: :mod:`trainer.data`, :mod:`trainer.teacher` (the
language model and its adaptation), :mod:`trainer.student` (distillation into the student),
:mod:`trainer.service` (the long-running trainer) and :mod:`trainer.evaluation` (the research
harness), with :mod:`trainer.commands`, :mod:`trainer.settings` and :mod:`trainer.ranking` at
the top (docs/architecture.md).

``import trainer``, ``coldstream.core.student`` and ``coldstream.core.checkpoint`` stay light (no
``transformers``); ``fit``, ``train_bootstrap`` and ``load_checkpoint`` are exported
lazily.
"""

from __future__ import annotations

__all__ = ["fit", "train_bootstrap", "load_checkpoint", "FitConfig"]


def __getattr__(name: str):
    if name in ("fit", "train_bootstrap", "FitConfig"):
        from trainer.student import fitting as _fit

        return getattr(_fit, name)
    if name == "load_checkpoint":
        from coldstream.core.checkpoint import load_checkpoint

        return load_checkpoint
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
