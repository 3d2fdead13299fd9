"""Build and run one serving worker: ``python -m stream_app.worker`` (or ``coldstream worker``).

Settings come from the environment (``COLDSTREAM_*``) plus command-line overrides.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from typing import Any

from coldstream.core.errors import ExitCode, NoModelError, UsageError
from stream_app.settings import Settings

log = logging.getLogger(__name__)


def select_model(settings: Settings, device: Any = "cpu") -> Any:
    """The start-up choice of the model (:func:`coldstream.core.pointer.select_checkpoint`):
    the checkpoint the store's signed ``CURRENT.json`` names, else the newest *verified* one
    (said in the log and ``coldstream_model_start_fallback{reason}``); an unsigned one only
    with ``allow_unsigned_checkpoints`` (dev only: refused in the ``prod`` profile).
    :class:`NoModelError` when nothing may be served."""
    from coldstream.core.pointer import NoServableModel, select_checkpoint

    if settings.allow_unsigned_checkpoints and settings.profile == "prod":
        raise NoModelError(
            f"{Settings.env_var('allow_unsigned_checkpoints')}=true is refused in the prod "
            f"profile: serve signed checkpoints only"
        )
    try:
        sel = select_checkpoint(
            settings.model_store,
            keyring=settings.verify_keyring(),
            device=device,
            allow_unsigned=settings.allow_unsigned_checkpoints,
        )
    except NoServableModel as e:
        raise NoModelError(str(e)) from None
    if sel.source != "pointer":
        log.warning("model store: no usable pointer; serving %s", sel.describe())
    return sel


def cap_threads(n: int) -> None:
    """At most ``n`` threads for each compute library of the worker: torch, FAISS (OpenMP)
    and numpy's own BLAS (the student's encoder on CPU,
    :class:`~coldstream.core.student.NumpyEncoder`)."""
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    threadpool_limits(n, user_api="blas")


def build(settings: Settings, *, registry: Any = None) -> Any:
    """Create the app, load the model the store's pointer names (:func:`select_model`), wire
    agents and views; returns the Wiring."""

    from coldstream.core.device import resolve_device
    from stream_app.agents import wire
    from stream_app.app import create_app
    from stream_app.metrics import Metrics
    from stream_app.recommender import Recommender
    from stream_app.web import register_views

    if settings.threads:
        cap_threads(settings.threads)
    device = resolve_device(settings.device)
    t_load = time.perf_counter()
    sel = select_model(settings, device)
    # index trained, filled and tuned here, before the loop runs (settings index*, popular_*)
    recommender = Recommender.from_settings(sel.checkpoint, settings)
    load_s = time.perf_counter() - t_load
    log.warning(
        "serving model %s (%d items) on %s from %s (%s)",
        recommender.model.version,
        recommender.model.n_items,
        device,
        sel.checkpoint.path,
        sel.describe(),
    )
    app = create_app(settings)
    metrics = Metrics(registry)
    metrics.model_load_seconds.set(load_s)
    metrics.model_seq.set(sel.seq)
    metrics.set_index(recommender.model.index_report)
    if sel.source != "pointer":
        metrics.model_start_fallback.labels(sel.reason or sel.source).set(1)
    w = wire(app, settings, recommender, metrics)
    if settings.hot_swap:  # model-updates + item-vectors followers (issue 4)
        from stream_app.control import attach

        attach(w, served_seq=sel.seq)
    register_views(w)
    watch_partitions(w)
    return w


def watch_partitions(w: Any) -> None:
    """Assigned input partitions and rebalances (Faust's ``on_partitions_assigned`` signal:
    the whole new assignment), and per-partition progress exported every second from
    ``Wiring.progress``."""
    from collections import Counter

    m = w.metrics
    inputs = {w.names["clicks"]: "clicks", w.names["purchases"]: "purchases"}

    @w.app.on_partitions_assigned.connect
    async def _assigned(app: Any, assigned: Any, **kwargs: Any) -> None:
        m.rebalances.inc()
        counts = Counter(inputs[tp.topic] for tp in assigned if tp.topic in inputs)
        for logical in inputs.values():
            m.assigned_partitions.labels(logical).set(counts.get(logical, 0))

    @w.app.timer(1.0)
    async def _export_progress() -> None:
        for (topic, partition), (offset, _) in list(w.progress.items()):
            m.processed_offset.labels(inputs.get(topic, topic), str(partition)).set(offset)


def run(settings: Settings) -> int:
    """Run a Faust worker until it is stopped (SIGINT/SIGTERM)."""
    import faust

    preflight(settings)
    check_guarantee(settings)
    settings = settle_idempotence(settings)
    w = build(settings)  # NoModelError: one line, exit 2: coldstream worker: error: ...
    announce(settings, w)
    level = settings.log_level.upper()
    worker = _draining_worker_class(faust.Worker)(
        w.app, loglevel=level, quiet=True, redirect_stdouts=False
    )
    worker.drain_timeout_s = settings.drain_timeout_s
    if not sys.stdout.isatty():  # Faust's start-up spinner writes cursor codes into log files
        worker.spinner = None

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
        code = (
            e.code
            if isinstance(e.code, int)
            else (ExitCode.OK if e.code is None else ExitCode.FAILURE)
        )
    else:  # pragma: no cover - execute_from_commandline never returns
        code = ExitCode.OK
    if w.stop_reason:
        print(f"coldstream worker: {w.stop_reason}", file=sys.stderr, flush=True)
        return w.exit_code or ExitCode.FAILURE
    return code


def preflight(settings: Settings) -> None:
    """Before the model load, each a one-line error (``coldstream.core.preflight``): the web
    port, the device, the broker and the topics this worker reads and writes (waiting up to
    ``broker_wait_s`` for these two)."""
    from coldstream.core.preflight import check_broker, check_device, check_port
    from coldstream.core.topics import topic_names

    check_port(
        settings.web_bind,
        settings.web_port,
        what="web",
        env=Settings.env_var("web_port"),
        flag="--web-port",
    )
    check_device(settings.device)
    names = topic_names(settings.topic_prefix)
    unused = {"items"} | (set() if settings.hot_swap else {"model-updates", "item-vectors"})
    check_broker(
        settings.bootstrap,
        [name for logical, name in names.items() if logical not in unused],
        client_kwargs=settings.kafka_client_kwargs(),
        wait_s=settings.broker_wait_s,
        prefix=settings.topic_prefix,
    )


def check_guarantee(settings: Settings) -> None:
    """``processing_guarantee=exactly_once`` refused at start, one line naming the setting
    (:class:`UsageError`, exit 2), where it could only half-work: without the fast path (the
    transactions are the fast path's), with the RocksDB session store (its local files would
    keep the session writes of an aborted transaction across a crash; the memory store is
    rebuilt from the committed changelog), or on a broker without transactions (the
    embedded Tansu)."""
    from coldstream.core.preflight import transactions_unsupported

    if settings.processing_guarantee != "exactly_once":
        return
    env = f"{Settings.env_var('processing_guarantee')}=exactly_once"
    if not settings.fast_path:
        raise UsageError(
            f"{env} needs the fast path ({Settings.env_var('fast_path')}=true): its "
            f"transactions are the fast path's"
        )
    if settings.effective_session_store != "memory":
        raise UsageError(
            f"{env} needs the memory session store ({Settings.env_var('session_store')}="
            f"memory): the RocksDB store would keep the session writes of an aborted "
            f"transaction across a crash"
        )
    why = transactions_unsupported(
        settings.bootstrap,
        transactional_id=f"{settings.app_id}-eos-preflight",
        client_kwargs=settings.kafka_client_kwargs(),
    )
    if why is not None:
        raise UsageError(
            f"{env} refused: the broker at {settings.bootstrap} does not run Kafka "
            f"transactions ({why}); use Apache Kafka (or another broker with transactions) "
            f"or {Settings.env_var('processing_guarantee')}=at_least_once"
        )


def settle_idempotence(settings: Settings) -> Settings:
    """The settings to serve with, as far as Kafka's idempotent producer goes: when it is on
    and the broker cannot give out producer ids (the embedded Tansu), the ``dev`` profile
    turns it off and says so in one line; ``prod`` refuses to start (one line, exit 6)."""
    from coldstream.core.errors import Unavailable
    from coldstream.core.preflight import idempotence_unsupported

    if not settings.idempotent_producer:
        return settings
    why = idempotence_unsupported(settings.bootstrap, client_kwargs=settings.kafka_client_kwargs())
    if why is None:
        return settings
    env = f"{Settings.env_var('idempotent_producer')}=false"
    if settings.profile == "prod":
        raise Unavailable(
            f"the broker at {settings.bootstrap} cannot do idempotent production ({why}); "
            f"use a Kafka broker, or accept possible duplicate outputs on retries: {env}"
        )
    print(
        f"coldstream worker: the broker at {settings.bootstrap} cannot do idempotent production "
        f"({why}): serving without it ({env}; at-least-once holds, a retried send may be "
        f"written twice)",
        file=sys.stderr,
        flush=True,
    )
    return settings.model_copy(update={"idempotent_producer": False})


def announce(settings: Settings, w: Any) -> None:
    """What a user needs at start: the web URL, and a warning when no verification key is set
    (every model update would be refused)."""
    host = "127.0.0.1" if settings.web_bind in ("0.0.0.0", "::", "") else settings.web_bind
    base = f"http://{host}:{settings.web_port}"
    print(
        f"coldstream worker: model v{w.recommender.model.version}; web {base} "
        f"(/metrics, /ready, /recommend/<user_id>)",
        file=sys.stderr,
        flush=True,
    )
    if settings.hot_swap and settings.verify_keys is None and settings.verify_keys_file is None:
        print(
            f"coldstream worker: warning: no model-update verification keys "
            f"({Settings.env_var('verify_keys')} / {Settings.env_var('verify_keys_file')} unset): "
            f"every hot swap will be refused",
            file=sys.stderr,
            flush=True,
        )


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
                    os._exit(ExitCode.DRAIN_TIMEOUT)

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
