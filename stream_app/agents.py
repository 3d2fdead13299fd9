"""Agents and timers of the serving worker (thin: the work is in ``batch.py``).

:func:`wire` registers, on an app from :func:`stream_app.app.create_app`:

* the ``sessions`` table (user -> last ``max_history`` events, changelog-backed);
* one agent over ``clicks`` + ``purchases``: ``take_events`` micro-batches ->
  :class:`~stream_app.batch.BatchProcessor` -> table writes (one per user per batch),
  ``recommendations`` and ``events-dlq`` sends (awaited once per batch);
* a timer that exports consumer lag and session counts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from coldstream.core.topics import load_topics, topic_names
from stream_app.batch import BatchProcessor, DlqBreaker, Incoming
from stream_app.fastpath import FastPath
from stream_app.metrics import Metrics, observe_many
from stream_app.recommender import Recommender
from stream_app.sessions import STORE_URL as SESSION_STORE
from stream_app.sessions import write_sessions
from stream_app.settings import Settings

log = logging.getLogger(__name__)
INPUT_TOPICS = ("clicks", "purchases")
MAX_INFLIGHT = 20_000


@dataclass
class Wiring:
    """What :func:`wire` created (the web views and tests use it)."""

    app: Any
    settings: Settings
    recommender: Recommender
    metrics: Metrics
    sessions: Any
    processor: BatchProcessor
    names: dict[str, str]
    logical: dict[str, str]
    breaker: DlqBreaker
    changelog_topic: str = ""
    inflight: deque = field(default_factory=deque)
    send_failures: int = 0
    batches: int = 0
    last_batch_at: float = 0.0
    stop_reason: str | None = None
    """Why the worker asked itself to stop (the DLQ breaker); ``None`` while it runs."""
    exit_code: int = 0
    """The process exit code that goes with ``stop_reason`` (``worker.run`` returns it)."""


def wire(app: Any, settings: Settings, recommender: Recommender, metrics: Metrics) -> Wiring:
    specs = load_topics()
    names = topic_names(settings.topic_prefix, specs)
    logical = {v: k for k, v in names.items()}
    partitions = specs["clicks"].partitions
    if specs["purchases"].partitions != partitions:
        raise RuntimeError(
            "clicks and purchases must have the same partition count (co-partitioned)"
        )

    import faust

    sessions = app.Table(
        "sessions",
        default=None,
        partitions=partitions,
        store=SESSION_STORE,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        help="user_id -> last events [item_id, event_type, ts, event_id]",
    )
    source = app.topic(
        names["clicks"], names["purchases"], key_serializer="raw", value_serializer="raw"
    )
    processor = BatchProcessor(recommender, settings, get_session=lambda u: sessions.data.get(u))
    breaker = DlqBreaker(
        window=settings.dlq_window,
        max_ratio=settings.dlq_max_ratio,
        min_events=settings.dlq_min_events,
    )
    w = Wiring(
        app,
        settings,
        recommender,
        metrics,
        sessions,
        processor,
        names,
        logical,
        breaker,
        changelog_topic=sessions.changelog_topic.get_topic_name(),
    )
    device = str(recommender.model.device.type)
    rec_topic, dlq_topic = names["recommendations"], names["events-dlq"]
    metrics.set_model(recommender.model.version, recommender.model.n_items)

    within = settings.batch_window_ms / 1000.0
    if settings.fast_path:
        fast = FastPath(
            [names["clicks"], names["purchases"]], max_buffered=max(4 * settings.batch_size, 10_000)
        )
        app.fast_path = fast  # ColdstreamApp.fast_path, read by the transport's fetch loop
        app.topics.add(source)  # subscribe (no Faust stream: the task below consumes them)

        @app.task
        async def serve_fast() -> None:
            consumer = app.consumer
            while not app.should_stop:
                messages = await fast.take(settings.batch_size, within)
                batch = [
                    Incoming(
                        logical.get(m.topic, m.topic),
                        m.partition,
                        m.offset,
                        m.key,
                        m.value,
                        m.timestamp,
                    )
                    for m in messages
                ]
                try:
                    await handle_batch(w, batch, rec_topic, dlq_topic, device)
                except Exception as exc:  # not an event's fault (those go to the DLQ): stop loudly
                    log.exception("serving batch failed; stopping the worker")
                    await app.crash(exc)
                    raise
                for m in messages:
                    consumer.ack(m)
    else:

        @app.agent(source, name="serve")
        async def serve(stream: Any) -> None:
            async for events in stream.take_events(settings.batch_size, within=within):
                batch = [
                    Incoming(
                        logical.get(e.message.topic, e.message.topic),
                        e.message.partition,
                        e.message.offset,
                        e.message.key,
                        e.message.value,
                        e.message.timestamp,
                    )
                    for e in events
                ]
                await handle_batch(w, batch, rec_topic, dlq_topic, device)

    @app.timer(interval=5.0, name="export-gauges")
    async def export_gauges() -> None:
        metrics.active_sessions.set(len(sessions.data))
        consumer = app.consumer
        for tp in consumer.assignment():
            if tp.topic not in logical or logical[tp.topic] not in INPUT_TOPICS:
                continue
            try:
                position = await consumer.position(tp)
                high = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - best effort during rebalances
                continue
            if position is not None and high is not None:
                metrics.consumer_lag.labels(logical[tp.topic], str(tp.partition)).set(
                    max(0, high - position)
                )

    return w


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


async def handle_batch(
    w: Wiring, batch: list[Incoming], rec_topic: str, dlq_topic: str, device: str
) -> None:
    """Process one micro-batch and hand its outputs to the producer."""
    out = w.processor.process(batch)
    producer = w.app.producer
    # sessions: the table's store and its own changelog API, with the event's input
    # partition (the changelog is co-partitioned with clicks/purchases)
    futures = await write_sessions(w.sessions, out.sessions, producer)
    for key, value in out.recommendations:
        futures.append(await producer.send(rec_topic, key, value, None, None, None))
    for value in out.dlq:
        futures.append(await producer.send(dlq_topic, None, value, None, None, None))
    # Delivery is not awaited per batch (that would stall the stream for a broker round
    # trip per batch); Faust flushes the producer before it commits offsets, so an offset
    # is committed only after the outputs of its event were delivered (at-least-once).
    # Backpressure: at most MAX_INFLIGHT undelivered records.
    inflight = w.inflight
    inflight.extend(futures)
    while inflight and (inflight[0].done() or len(inflight) > MAX_INFLIGHT):
        fut = inflight.popleft()
        try:
            await fut
        except Exception as e:  # noqa: BLE001 - a lost output must be loud
            w.send_failures += 1
            log.error("delivery of an output record failed: %r", e)
    m = w.metrics
    m.batch_size.observe(len(batch))
    for (topic, outcome), n in out.outcomes.items():
        m.events.labels(topic, outcome).inc(n)
    for reason, n in out.dlq_reasons.items():
        m.dlq.labels(reason).inc(n)
    if out.latencies_s:
        observe_many(m.event_latency, out.latencies_s)
    if out.ranked is not None and out.ranked.n_known_users:
        m.inference.labels(device).observe(out.ranked.inference_s)
        m.search.observe(out.ranked.search_s)
    if out.n_fallback:
        m.fallback.labels("popular").inc(out.n_fallback)
    w.batches += 1
    w.last_batch_at = time.time()
    n_dlq = len(out.dlq)
    if w.breaker.record(len(batch), n_dlq):
        s = w.settings
        if s.dlq_breaker_action == "stop":
            await _stop_for_bad_input(w)
            return
        log.error(
            "DLQ circuit breaker open: over %.0f%% of the last %d events were refused; "
            "pausing consumption for %.1f s",
            s.dlq_max_ratio * 100,
            s.dlq_window,
            s.dlq_cooldown_s,
        )
        m.dlq_breaker_open.set(1)
        await asyncio.sleep(s.dlq_cooldown_s)
        w.breaker.reset()
        m.dlq_breaker_open.set(0)


EXIT_DLQ_BREAKER = 3
"""Exit code of a worker stopped by the DLQ circuit breaker."""


async def _stop_for_bad_input(w: Wiring) -> None:
    """Breaker tripped with ``dlq_breaker_action=stop``: say why, pause fetching, and stop the
    worker through the graceful path (SIGTERM to itself: outputs flushed, answered offsets
    committed, group left); ``worker.run`` then exits with :data:`EXIT_DLQ_BREAKER`."""
    import os
    import signal

    s = w.settings
    w.metrics.dlq_breaker_open.set(1)
    if w.stop_reason is None:
        w.stop_reason = (
            f"DLQ circuit breaker tripped: more than {s.dlq_max_ratio:.0%} of the last "
            f"{s.dlq_window} input events were refused (see events-dlq and "
            f"coldstream_dlq_total{{reason}}). Stopping the worker instead of dead-lettering the "
            f"whole topic; the unread events stay in the topic. Fix the producer (or raise "
            f"COLDSTREAM_DLQ_MAX_RATIO), then restart."
        )
        w.exit_code = EXIT_DLQ_BREAKER
        log.critical(w.stop_reason)
        consumer = w.app.consumer
        consumer.pause_partitions(consumer.assignment())  # fetch nothing more
        os.kill(os.getpid(), signal.SIGTERM)
    # Events already fetched are still answered (DLQ or recommendation) before the drain
    # commits them: nothing consumed is left without an output.
