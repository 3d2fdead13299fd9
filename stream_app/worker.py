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

    from coldstream.core.checkpoint import latest_checkpoint
    from coldstream.core.device import resolve_device
    from stream_app.agents import wire
    from stream_app.app import create_app
    from stream_app.metrics import Metrics
    from stream_app.recommender import Recommender
    from stream_app.web import register_views

    if settings.threads:
        torch.set_num_threads(settings.threads)
        faiss.omp_set_num_threads(settings.threads)
    path = latest_checkpoint(settings.model_store)
    if path is None:
        raise NoModelError(
            f"no checkpoint in model store {settings.model_store}: "
            f"train one (coldstream train, or coldstream demo does it)"
        )
    device = resolve_device(settings.device)
    recommender = Recommender.from_checkpoint(path, device=device, max_history=settings.max_history)
    log.warning(
        "serving model %s (%d items) on %s from %s",
        recommender.model.version,
        recommender.model.n_items,
        device,
        path,
    )
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
    worker = _draining_worker_class(faust.Worker)(
        w.app, loglevel=level, quiet=True, redirect_stdouts=False
    )
    worker.drain_timeout_s = settings.drain_timeout_s

    @w.app.task
    async def _tune_process() -> None:
        # mode leaves the root logger at DEBUG and filters in the handler, so every
        # logger.debug() on the hot path built a LogRecord: set the level on the loggers.
        logging.getLogger().setLevel(level)
        # long-lived session state: keep the cyclic GC from rescanning it on every batch
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)

    try:
        worker.execute_from_commandline()  # ends with SystemExit
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    else:  # pragma: no cover - execute_from_commandline never returns
        code = 0
    if w.stop_reason:
        print(f"coldstream worker: {w.stop_reason}", file=sys.stderr, flush=True)
        return w.exit_code or 1
    return code


EXIT_DRAIN_TIMEOUT = 4
"""Exit code when a graceful stop overran ``drain_timeout_s`` (the process is ended anyway)."""


def _draining_worker_class(base: type) -> type:
    """A Faust worker whose SIGTERM/SIGINT stop is bounded by ``drain_timeout_s``.

    Faust's own stop path drains: agents finish the micro-batch in hand, the consumer
    commits the offsets of answered events (after the producer flushed their outputs), the
    producer is flushed and stopped, the consumer leaves the group. A stop that hangs (a
    broker that went away, a stuck agent) would otherwise hold the pod until the kubelet's
    SIGKILL; a watchdog thread ends the process at the budget instead."""
    import os
    import threading

    class DrainingWorker(base):
        drain_timeout_s: float = 30.0
        _watchdog: threading.Timer | None = None

        def _arm_drain_deadline(self) -> None:
            if self._watchdog is None:
                log.warning("stopping: draining (budget %.0f s)", self.drain_timeout_s)

                def overrun() -> None:
                    sys.stderr.write(
                        f"coldstream worker: drain exceeded {self.drain_timeout_s:.0f} s; "
                        f"exiting (uncommitted events will be answered again)\n"
                    )
                    sys.stderr.flush()
                    os._exit(EXIT_DRAIN_TIMEOUT)

                self._watchdog = threading.Timer(self.drain_timeout_s, overrun)
                self._watchdog.daemon = True
                self._watchdog.start()

        def _on_sigterm(self) -> None:
            self._arm_drain_deadline()
            super()._on_sigterm()

        def _on_sigint(self) -> None:
            self._arm_drain_deadline()
            super()._on_sigint()

    return DrainingWorker


if __name__ == "__main__":
    sys.exit(run(Settings()))
