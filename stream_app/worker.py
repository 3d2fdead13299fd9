"""Build and run one serving worker: ``python -m stream_app.worker`` (or ``coldstream worker``).

Settings come from the environment (``COLDSTREAM_*``) plus command-line overrides.
"""

from __future__ import annotations

import gc
import logging
import sys
from typing import Any

from stream_app.settings import Settings

log = logging.getLogger(__name__)


class NoModelError(RuntimeError):
    pass


def build(settings: Settings, *, registry: Any = None) -> Any:
    """Create the app, load the newest checkpoint, wire agents and views; returns the Wiring."""
    import faiss
    import torch

    from stream_app.agents import wire
    from stream_app.app import create_app
    from stream_app.metrics import Metrics
    from stream_app.recommender import Recommender
    from stream_app.web import register_views
    from trainer.device import resolve_device
    from trainer.store import latest_checkpoint

    if settings.threads:
        torch.set_num_threads(settings.threads)
        faiss.omp_set_num_threads(settings.threads)
    path = latest_checkpoint(settings.model_store)
    if path is None:
        raise NoModelError(f"no checkpoint in model store {settings.model_store}: "
                           f"train one (coldstream train, or coldstream demo does it)")
    device = resolve_device(settings.device)
    recommender = Recommender.from_checkpoint(path, device=device, max_history=settings.max_history)
    log.warning("serving model %s (%d items) on %s from %s", recommender.model.version,
                recommender.model.n_items, device, path)
    app = create_app(settings)
    w = wire(app, settings, recommender, Metrics(registry))
    if settings.hot_swap:  # model-updates + item-vectors followers (issue 4)
        from stream_app.control import attach

        attach(w)
    register_views(w)
    return w


def run(settings: Settings) -> int:
    """Run a Faust worker until it is stopped (SIGINT/SIGTERM)."""
    import faust

    try:
        w = build(settings)
    except NoModelError as e:
        print(f"coldstream worker: {e}", file=sys.stderr)
        return 2
    level = settings.log_level.upper()
    worker = faust.Worker(w.app, loglevel=level, quiet=True, redirect_stdouts=False)

    @w.app.task
    async def _tune_process() -> None:
        # mode leaves the root logger at DEBUG and filters in the handler, so every
        # logger.debug() on the hot path built a LogRecord: set the level on the loggers.
        logging.getLogger().setLevel(level)
        # long-lived session state: keep the cyclic GC from rescanning it on every batch
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)

    worker.execute_from_commandline()  # exits the process through sys.exit
    return 0


if __name__ == "__main__":
    sys.exit(run(Settings()))
