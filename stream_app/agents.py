"""Agents and timers of the serving worker (thin: the work is in ``batch.py``).

:func:`wire` builds the :class:`Wiring` and registers, on an app from
:func:`stream_app.app.create_app`, one part per function, in this order:

* the ``sessions`` table (:func:`_sessions_table`: user -> last ``max_history`` events,
  changelog-backed);
* one serving path over ``clicks`` + ``purchases``; each hands every micro-batch to
  :func:`handle_batch` (:class:`~stream_app.batch.BatchProcessor` -> session writes, one per
  user per batch, ``recommendations`` and ``events-dlq`` sends, metrics, DLQ breakers):

  * :func:`_serve_fast_path` (the default): micro-batches from the fast path
    (:mod:`stream_app.fastpath`); a :class:`~stream_app.delivery.Delivery` task acknowledges
    a batch's inputs, and commits, only after all of its outputs were delivered;
  * :func:`_serve_exactly_once` (``processing_guarantee=exactly_once``): the fast path with
    the outputs and the input offsets of each batch and input partition committed in one
    Kafka transaction;
  * :func:`_serve_stock_agent` (``COLDSTREAM_FAST_PATH=false``): a stock Faust agent with
    ``take_events`` that awaits each batch's delivery;

* :func:`_start_session_expiry` (``session_ttl_s > 0``): a timer that deletes idle sessions;
* :func:`_start_gauges`: a timer that exports consumer lag and session counts.

Below them: what the DLQ breaker does when it trips (alert, pause and resume, stop) and the
worker's deliberate exits.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from coldstream.core.errors import ExitCode
from coldstream.core.events import INPUT_TOPICS
from coldstream.core.topics import load_topics, topic_names
from stream_app.batch import BatchProcessor, Incoming, PartitionBreakers
from stream_app.delivery import Delivery
from stream_app.fastpath import FastPath
from stream_app.metrics import Metrics, observe_many
from stream_app.online import OnlineQuality
from stream_app.outputs import send_dlq, send_recommendation
from stream_app.produce import OutputBatch, Single
from stream_app.recommender import Recommender
from stream_app.sessions import (
    expired_sessions,
    persisted_offsets,
    stage_sessions,
    write_sessions,
)
from stream_app.settings import Settings

log = logging.getLogger(__name__)


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
    breakers: PartitionBreakers
    changelog_topic: str = ""
    delivery: Delivery | None = None
    """The fast path's delivery tracker (``None`` on the stock-agent path)."""
    transactions: Any = None
    """``exactly_once``: the :class:`~stream_app.transactions.TransactionalOutputs`."""
    progress: dict[tuple[str, int], tuple[int, float]] = field(default_factory=dict)
    """``(logical topic, partition) -> (last processed offset, monotonic time)``."""
    paused: set[tuple[str, int]] = field(default_factory=set)
    """Input partitions the DLQ breaker paused (``(logical topic, partition)``)."""
    alerting: set[tuple[str, int]] = field(default_factory=set)
    """Input partitions whose DLQ breaker is open under ``dlq_breaker_action=alert``."""
    background: set[asyncio.Task] = field(default_factory=set)
    """Tasks the worker started and must keep a reference to (the breaker's resume)."""
    batches: int = 0
    last_batch_at: float = 0.0
    stop_reason: str | None = None
    """Why the worker asked itself to stop (the DLQ breaker); ``None`` while it runs."""
    exit_code: int = ExitCode.OK
    """The process exit code that goes with ``stop_reason`` (``worker.run`` returns it)."""


def wire(app: Any, settings: Settings, recommender: Recommender, metrics: Metrics) -> Wiring:
    """Register the sessions table, one serving path and the timers on ``app``: the fast
    path (:func:`_serve_fast_path`), its ``exactly_once`` variant
    (:func:`_serve_exactly_once`) or the stock Faust agent (:func:`_serve_stock_agent`); then
    session expiry (:func:`_start_session_expiry`) and the gauges (:func:`_start_gauges`)."""
    specs = load_topics()
    names = topic_names(settings.topic_prefix, specs)
    logical = {v: k for k, v in names.items()}
    partitions = specs["clicks"].partitions
    if any(specs[t].partitions != partitions for t in INPUT_TOPICS):
        raise RuntimeError(
            f"{', '.join(INPUT_TOPICS)} must have the same partition count (co-partitioned)"
        )
    sessions = _sessions_table(app, settings, partitions)
    source = app.topic(
        *(names[t] for t in INPUT_TOPICS), key_serializer="raw", value_serializer="raw"
    )
    # the online hit rate per model version goes with the model followers (control.attach)
    online = (
        OnlineQuality(window_s=settings.online_window_s, metrics=metrics)
        if settings.hot_swap
        else None
    )
    processor = BatchProcessor(
        recommender, settings, get_session=lambda u: sessions.data.get(u), online=online
    )
    breakers = PartitionBreakers(
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
        breakers,
        changelog_topic=sessions.changelog_topic.get_topic_name(),
    )
    metrics.set_model(recommender.model.version, recommender.model.n_items)
    if settings.fast_path and settings.processing_guarantee == "exactly_once":
        _serve_exactly_once(w, source)
    elif settings.fast_path:
        _serve_fast_path(w, source)
    else:
        _serve_stock_agent(w, source)
    if settings.session_ttl_s > 0:
        _start_session_expiry(w)
    _start_gauges(w)
    return w


def _sessions_table(app: Any, settings: Settings, partitions: int) -> Any:
    """The ``sessions`` table: user -> session value (:mod:`stream_app.sessions`),
    changelog-backed, co-partitioned with the input topics."""
    import faust

    return app.Table(
        "sessions",
        default=None,
        partitions=partitions,
        extra_topic_configs={
            "max.compaction.lag.ms": str(settings.changelog_compaction_lag_ms),
            "delete.retention.ms": str(settings.changelog_delete_retention_ms),
        },
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        help="user_id -> last events [item_id, event_type, ts, event_id]",
    )


@dataclass(frozen=True)
class _Outputs:
    """Where :func:`handle_batch` sends a batch's outputs, and the device label of its
    inference timings."""

    rec_topic: str
    dlq_topic: str
    device: str


def _outputs(w: Wiring) -> _Outputs:
    return _Outputs(
        w.names["recommendations"], w.names["events-dlq"], str(w.recommender.model.device.type)
    )


def _incoming(w: Wiring, messages: Iterable[Any]) -> list[Incoming]:
    """Consumed records (Faust's messages) as :class:`~stream_app.batch.Incoming`."""
    return [
        Incoming(
            w.logical.get(m.topic, m.topic), m.partition, m.offset, m.key, m.value, m.timestamp
        )
        for m in messages
    ]


def _subscribe_fast_path(w: Wiring, source: Any) -> FastPath:
    """Subscribe to the input topics through the fast path (no Faust stream: a serving task
    takes the records from the returned buffer)."""
    app, settings = w.app, w.settings
    fast = FastPath(
        [w.names[t] for t in INPUT_TOPICS],
        max_buffered=max(4 * settings.batch_size, settings.fast_path_buffer),
    )
    app.fast_path = fast  # ColdstreamApp.fast_path, read by the transport's fetch loop
    app.topics.add(source)
    return fast


def _serve_fast_path(w: Wiring, source: Any) -> None:
    """The fast path, at-least-once: micro-batches from the fast-path buffer ->
    :func:`handle_batch`; a :class:`~stream_app.delivery.Delivery` task acknowledges a
    batch's inputs, and commits, only after all of its outputs were delivered."""
    app, settings, metrics = w.app, w.settings, w.metrics
    fast = _subscribe_fast_path(w, source)
    out = _outputs(w)
    within = settings.batch_window_ms / 1000.0
    delivery = Delivery(
        ack=lambda m: app.consumer.ack(m),
        commit=lambda: app.consumer.commit(),
        max_uncommitted_batches=settings.max_uncommitted_batches,
        max_uncommitted_events=settings.max_uncommitted_events or settings.batch_size,
        on_send_failure=functools.partial(_exit_delivery_failed, w),
        count_failure=lambda n: metrics.send_failures.inc(n),
    )
    w.delivery = delivery

    @app.task
    async def deliver() -> None:
        await delivery.run()

    @app.task
    async def serve_fast() -> None:
        # On a stop Faust waits until every tracked record is acknowledged: the records
        # already in the fast-path buffer are answered and delivered before this ends.
        while delivery.failure is None:
            if app.should_stop and not fast.messages:
                break
            # no more than the uncommitted-events bound leaves: a kill -9 repeats at most
            # that many events, however many small batches are in flight
            messages = await fast.take(delivery.room(settings.batch_size), within, idle_s=0.2)
            if not messages:
                continue
            try:
                futures = await handle_batch(
                    w, _incoming(w, messages), out.rec_topic, out.dlq_topic, out.device
                )
            except Exception as exc:  # not an event's fault (those go to the DLQ): stop loudly
                log.exception("serving batch failed; stopping the worker")
                await app.crash(exc)
                raise
            await delivery.submit(messages, futures)
            if w.stop_reason is not None:  # the DLQ breaker asked for a stop
                break
        await delivery.drain(settings.drain_timeout_s)
        if w.stop_reason is not None:
            _exit_now(w)


async def _exit_delivery_failed(w: Wiring, exc: BaseException) -> None:
    """The fast path's delivery failed: end the process now (code 5). No graceful drain: it
    would wait for the acknowledgements this batch never gets. Exiting now is what a kill -9
    does, and at-least-once holds: nothing was committed past the failure, the next owner
    answers those events again."""
    _exit_not_delivered(
        w,
        f"an output record could not be delivered ({exc!r}); no offset was committed "
        f"past it. Exiting (code {ExitCode.NOT_DELIVERED}): the events from the last "
        f"committed offset are answered again on restart. Check the broker and the "
        f"output topics.",
    )


def _serve_exactly_once(w: Wiring, source: Any) -> None:
    """The fast path under ``exactly_once`` (:mod:`stream_app.transactions`): each micro-batch
    is split by input partition; each part is processed and sent in its own transaction on
    that partition's producer, with its input offsets; the parts commit concurrently, then the
    inputs are acknowledged (for Faust's rebalance and stop bookkeeping: its own offset
    commits commit nothing under ``exactly_once``, ``stream_app.transport``). Any
    failure aborts the batch's open transactions and ends the process (code 5): the next
    owner reads on from the committed offsets, the session table is rebuilt from the
    committed changelog."""
    from stream_app.transactions import TransactionalOutputs, TransactionSender

    app, settings = w.app, w.settings
    fast = _subscribe_fast_path(w, source)
    out = _outputs(w)
    outputs = TransactionalOutputs(
        app_id=settings.app_id,
        group_id=app.conf.id,
        make_producer=lambda tid: _transactional_producer(settings, tid),
    )
    app.transactional_outputs = outputs  # fenced on assignment (stream_app.recovery)
    w.transactions = outputs
    within = settings.batch_window_ms / 1000.0

    @app.task
    async def serve_exactly_once() -> None:
        while True:
            if app.should_stop and not fast.messages:
                break
            messages = await fast.take(settings.batch_size, within, idle_s=0.2)
            if not messages:
                continue
            parts: dict[int, list[Any]] = {}
            for m in messages:
                parts.setdefault(m.partition, []).append(m)
            if outputs.owned is not None:  # fetched before a rebalance took the partition:
                for partition in set(parts) - outputs.owned:  # its new owner answers them
                    log.warning(
                        "skipping %d records of partition %d (not owned now)",
                        len(parts.pop(partition)),
                        partition,
                    )
            opened: list[Any] = []
            try:
                commits = []
                for partition, part in parts.items():
                    producer = await outputs.producer(partition)
                    await producer.begin_transaction()
                    opened.append(producer)
                    sender = TransactionSender(producer)
                    futures = await handle_batch(
                        w, _incoming(w, part), out.rec_topic, out.dlq_topic, out.device, sender
                    )
                    commits.append(outputs.commit(producer, futures, part, sender))
                results = await asyncio.gather(*commits, return_exceptions=True)
                failed = [r for r in results if isinstance(r, BaseException)]
                if failed:
                    raise failed[0]
            except Exception as exc:  # noqa: BLE001 - any failure: abort, exit, re-read
                await outputs.abort(opened)
                _exit_transaction_failed(w, exc)
            for m in messages:
                app.consumer.ack(m)
            if w.stop_reason is not None:  # the DLQ breaker asked for a stop
                _exit_now(w)


def _transactional_producer(settings: Settings, transactional_id: str) -> Any:
    """An unstarted aiokafka producer for ``transactional_id`` (idempotent, ``acks=all``)."""
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        client_id=transactional_id,
        transactional_id=transactional_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=int(settings.producer_linger_ms),
        max_batch_size=256 * 1024,
        **settings.kafka_client_kwargs(),
    )


def _exit_transaction_failed(w: Wiring, exc: BaseException) -> None:
    """End the process after an aborted transaction (``exactly_once``): nothing of it is
    visible to ``read_committed`` readers and its input offsets were not committed."""
    w.metrics.send_failures.inc()
    _exit_not_delivered(
        w,
        f"exactly_once: a transaction failed ({exc!r}) and was aborted: none of its outputs "
        f"is visible to read_committed readers and its input offsets were not committed. "
        f"Exiting (code {ExitCode.NOT_DELIVERED}): the next owner of the partitions reads on "
        f"from the committed offsets. Check the broker and the output topics.",
    )


def _serve_stock_agent(w: Wiring, source: Any) -> None:
    """``COLDSTREAM_FAST_PATH=false``: a stock Faust agent with ``take_events`` that awaits
    each batch's delivery before taking the next (Faust acknowledges a batch's events when
    the next one is taken)."""
    app, settings = w.app, w.settings
    out = _outputs(w)
    within = settings.batch_window_ms / 1000.0

    @app.agent(source, name="serve")
    async def serve(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_size, within=within):
            batch = _incoming(w, (e.message for e in events))
            futures = await handle_batch(w, batch, out.rec_topic, out.dlq_topic, out.device)
            # Faust acks these events when the next batch is taken: deliver them first
            failed = [
                r
                for r in await asyncio.gather(*futures, return_exceptions=True)
                if isinstance(r, BaseException)
            ]
            if failed:
                w.metrics.send_failures.inc(len(failed))
                await _stop(
                    w,
                    ExitCode.NOT_DELIVERED,
                    f"an output record could not be "
                    f"delivered ({failed[0]!r}); stopping before its offset is "
                    f"committed",
                )
                raise failed[0]


def _start_session_expiry(w: Wiring) -> None:
    """A timer that deletes sessions idle for ``session_ttl_s`` of event time (stream time:
    the newest event timestamp this worker has processed), with changelog tombstones, a
    bounded scan per owned partition and tick."""
    app, settings, processor, sessions = w.app, w.settings, w.processor, w.sessions
    cursors: dict[int, Any] = {}

    @app.timer(interval=settings.session_expiry_interval_s, name="expire-sessions")
    async def expire_sessions() -> None:
        if processor.stream_time is None:
            return
        gone = expired_sessions(
            sessions.data,
            sorted({tp.partition for tp in _input_assignment(w)}),
            cursors,
            older_than=processor.stream_time - settings.session_ttl_s,
            limit=settings.session_expiry_batch,
        )
        if gone:
            futures = await write_sessions(sessions, gone, app.producer)
            await asyncio.gather(*futures)
            w.metrics.sessions_expired.inc(len(gone))
            log.info("expired %d idle sessions", len(gone))


def _start_gauges(w: Wiring) -> None:
    """A timer that exports the session count, the consumer lag of each assigned input
    partition and the fetch loop's rewinds every 5 s."""
    metrics = w.metrics
    exported = {"rewound": 0, "forced": 0, "restarted": 0, "before_seek": 0}

    @w.app.timer(interval=5.0, name="export-gauges")
    async def export_gauges() -> None:
        metrics.active_sessions.set(len(w.sessions.data))
        consumer = w.app.consumer
        order = getattr(consumer, "offset_order", None)  # stream_app.transport.Consumer
        if order is not None:
            for outcome, total in (
                ("rewound", order.rewinds),
                ("forced", order.forced),
                ("restarted", order.restarts),
                ("before_seek", order.unsought_drops),
            ):
                if total > exported[outcome]:
                    metrics.fetch_rewinds.labels(outcome).inc(total - exported[outcome])
                    exported[outcome] = total
        for tp in _input_assignment(w):
            try:
                position = await consumer.position(tp)
                high = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - best effort during rebalances
                continue
            if position is not None and high is not None:
                metrics.consumer_lag.labels(w.logical[tp.topic], str(tp.partition)).set(
                    max(0, high - position)
                )


def _input_assignment(w: Wiring) -> list[Any]:
    """The worker's assigned partitions of the input topics (``clicks``, ``purchases``)."""
    return [
        tp
        for tp in w.app.consumer.assignment()
        if tp.topic in w.logical and w.logical[tp.topic] in INPUT_TOPICS
    ]


async def _send_batched(
    w: Wiring,
    out: Any,
    producer: Any,
    send: Any,
    count: Any,
    rec_topic: str,
    dlq_topic: str,
) -> list[asyncio.Future]:
    """The micro-batch's changelog records, recommendations and DLQ records as one
    :class:`~stream_app.produce.OutputBatch` on the underlying aiokafka producer (the app's,
    or the transaction's); each record keeps its per-record path for a batch refused for
    size. Under ``exactly_once`` a refused batch fails the transaction instead, as a refused
    record does (:class:`~stream_app.transactions.TransactionSender`)."""
    from stream_app.transactions import TransactionSender

    in_txn = isinstance(producer, TransactionSender)
    raw = producer.producer if in_txn else producer._ensure_producer()  # noqa: SLF001
    batch = OutputBatch(raw, on_delivered=persisted_offsets(w.sessions), resend_refused=not in_txn)

    async def send_one(topic: str, key: bytes | None, value: bytes | None, partition: int) -> Any:
        return await producer.send(topic, key, value, partition, None, None)

    stage_sessions(w.sessions, out.sessions, batch, send_one)
    for topic, key, value, single in _output_records(w, out, send, count, rec_topic, dlq_topic):
        batch.add(topic, key, value, single)
    return await batch.flush()


def _output_records(
    w: Wiring, out: Any, send: Any, count: Any, rec_topic: str, dlq_topic: str
) -> Iterator[tuple[str, bytes | None, bytes, Single]]:
    """The micro-batch's recommendations and DLQ records (DLQ records keyed by the
    record's key, the user, when it had one), each with its per-record send
    (:mod:`stream_app.outputs`: no output can stop the worker for its size)."""
    max_dlq = w.settings.dlq_max_bytes
    for (rec_key, value), origin in zip(out.recommendations, out.origins, strict=True):
        yield (
            rec_topic,
            rec_key,
            value,
            functools.partial(
                send_recommendation,
                send,
                rec_topic,
                rec_key,
                value,
                dlq_topic=dlq_topic,
                origin=origin,
                max_dlq_bytes=max_dlq,
                count=count,
            ),
        )
    for key, value in out.dlq:
        yield dlq_topic, key, value, functools.partial(send_dlq, send, dlq_topic, key, value, count)


async def handle_batch(
    w: Wiring,
    batch: list[Incoming],
    rec_topic: str,
    dlq_topic: str,
    device: str,
    producer: Any = None,
) -> list[asyncio.Future]:
    """Process one micro-batch and hand its outputs to the producer (the app's, or the
    given one: a transaction's); returns the futures of every record sent (the caller
    acknowledges the inputs once they are all delivered)."""
    out = w.processor.process(batch)
    producer = producer if producer is not None else w.app.producer

    async def send(topic: str, key: bytes | None, value: bytes) -> Any:
        return await producer.send(topic, key, value, None, None, None)

    def count(topic: str, outcome: str) -> None:
        w.metrics.output_too_large.labels(w.logical.get(topic, topic), outcome).inc()

    if w.settings.produce_batches:
        futures = await _send_batched(w, out, producer, send, count, rec_topic, dlq_topic)
    else:
        # sessions: the table's store and changelog, with the event's input partition (the
        # changelog is co-partitioned with the input topics)
        futures = await write_sessions(w.sessions, out.sessions, producer)
        for _, _, _, single in _output_records(w, out, send, count, rec_topic, dlq_topic):
            futures.append(await single())
    now = time.monotonic()
    for rec in batch:  # per-partition progress (stall detection, /ready)
        w.progress[(rec.topic, rec.partition)] = (rec.offset, now)
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
    for reason, n in out.fallback_reasons.items():
        m.fallback.labels(reason).inc(n)
    if out.model_errors:
        m.model_errors.inc(out.model_errors)
    if out.n_bad_timestamps:
        m.bad_record_timestamps.inc(out.n_bad_timestamps)
    if out.n_empty_rankings:
        m.empty_rankings.inc(out.n_empty_rankings)
    if out.n_cold_start:
        m.cold_start.inc(out.n_cold_start)
    if out.forgotten:
        m.forgotten.inc(len(out.forgotten))
    w.batches += 1
    w.last_batch_at = time.time()
    tripped = w.breakers.record(out.per_partition)
    action = w.settings.dlq_breaker_action
    if action == "alert":
        _alert_breakers(w, out.per_partition, tripped)
    for tp in tripped:
        if action == "stop":
            await _stop(w, ExitCode.DLQ_BREAKER, _breaker_message(w.settings, tp))
        elif action == "pause":
            _pause_partition(w, tp)
    return futures


def _alert_breakers(w: Wiring, seen: Any, tripped: list[tuple[str, int]]) -> None:
    """``dlq_breaker_action=alert``: keep serving; the gauge counts the partitions whose
    breaker is open (one log line when one opens, one when it closes)."""
    now_open = set(tripped)
    for tp in seen:
        if tp in now_open and tp not in w.alerting:
            w.alerting.add(tp)
            log.error(
                "DLQ breaker open on %s[%d]: over %.0f%% of its last %d events were refused; "
                "still serving every record (see events-dlq)",
                tp[0],
                tp[1],
                w.settings.dlq_max_ratio * 100,
                w.settings.dlq_window,
            )
        elif tp not in now_open and tp in w.alerting:
            w.alerting.discard(tp)
            log.warning("DLQ breaker closed on %s[%d]", tp[0], tp[1])
    w.metrics.dlq_breaker_open.set(len(w.alerting))


def _breaker_message(s: Settings, tp: tuple[str, int]) -> str:
    return (
        f"DLQ circuit breaker tripped on {tp[0]}[{tp[1]}]: more than {s.dlq_max_ratio:.0%} of "
        f"its last {s.dlq_window} input events were refused (see events-dlq and "
        f"coldstream_dlq_total{{reason}}). Stopping the worker instead of dead-lettering the "
        f"partition; the unread events stay in the topic. Fix the producer (or raise "
        f"COLDSTREAM_DLQ_MAX_RATIO), then restart."
    )


def _pause_partition(w: Wiring, tp: tuple[str, int]) -> None:
    """Pause one input partition for ``dlq_cooldown_s`` (its backlog waits in the topic; the
    records already fetched are still answered), then resume it with a fresh breaker."""
    from faust.types import TP

    s = w.settings
    if tp in w.paused:
        return
    consumer = w.app.consumer
    real = TP(w.names[tp[0]], tp[1])
    log.error(
        "DLQ circuit breaker open on %s[%d]: over %.0f%% of its last %d events were refused; "
        "pausing that partition for %.1f s (the others keep flowing)",
        tp[0],
        tp[1],
        s.dlq_max_ratio * 100,
        s.dlq_window,
        s.dlq_cooldown_s,
    )
    consumer.pause_partitions([real])
    w.paused.add(tp)
    w.metrics.dlq_breaker_open.set(len(w.paused))

    def later() -> None:
        task = asyncio.ensure_future(_resume_partition(w, tp, real))
        w.background.add(task)
        task.add_done_callback(w.background.discard)

    asyncio.get_running_loop().call_later(s.dlq_cooldown_s, later)


async def _resume_partition(w: Wiring, tp: tuple[str, int], real: Any) -> None:
    """End a breaker pause: the partition is read again from the record after the last one
    processed, with a fresh breaker. Faust's ``getmany`` drops the records of a partition
    paused while a fetch it returned was being handed out, and the client's position has
    already moved past them: without the seek they would never be answered (a record still
    in the fast-path buffer is read twice and answered twice at worst: at-least-once).
    ``tp`` stays in ``w.paused`` until the end, so a trip on records processed meanwhile
    (fetched before the pause) does not start a second pause."""
    consumer = w.app.consumer
    last = w.progress.get(tp)  # keyed by the *logical* topic, like the breakers
    assigned = real in consumer.assignment()
    if assigned and last is not None:
        await consumer.seek(real, last[0] + 1)
    w.breakers.reset(tp)
    # also when the partition moved to another worker meanwhile: Faust keeps it in its
    # paused set across rebalances, and it must not stay paused if it comes back here
    consumer.resume_partitions([real])
    w.paused.discard(tp)
    w.metrics.dlq_breaker_open.set(len(w.paused))
    log.warning(
        "DLQ circuit breaker closed on %s[%d]: partition resumed%s",
        tp[0],
        tp[1],
        f" from offset {last[0] + 1}" if assigned and last is not None else "",
    )


async def _stop(w: Wiring, exit_code: int, reason: str) -> None:
    """Stop the worker on purpose: say why and fetch nothing more. On the fast path the
    serving task stops taking batches, waits until the ones handed in were delivered and
    committed, and exits with ``exit_code`` (:func:`_exit_now`): the records still in the
    fetch buffer are neither answered nor committed, so they wait in the topic for after the
    fix. On the stock-agent path (no fetch buffer) the stop is the graceful SIGTERM path."""
    import os
    import signal

    if w.stop_reason is not None:
        return
    w.stop_reason = reason
    w.exit_code = exit_code
    if exit_code == ExitCode.DLQ_BREAKER:
        w.metrics.dlq_breaker_open.set(1)
    log.critical(reason)
    consumer = w.app.consumer
    consumer.pause_partitions(consumer.assignment())  # fetch nothing more
    if w.delivery is None:
        os.kill(os.getpid(), signal.SIGTERM)


def _exit_not_delivered(w: Wiring, reason: str) -> None:
    """End the process now with code 5 (``ExitCode.NOT_DELIVERED``), ``reason`` logged."""
    w.stop_reason = reason
    w.exit_code = ExitCode.NOT_DELIVERED
    log.critical(reason)
    _exit_now(w)


def _exit_now(w: Wiring) -> None:
    """End the process with ``w.exit_code`` after a deliberate stop. Everything answered was
    delivered and committed first (the caller drained the delivery tracker); what is left
    unanswered was not committed, so nothing is lost (the group notices the member gone
    after its session timeout)."""
    import os
    import sys

    print(f"coldstream worker: {w.stop_reason}", file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(w.exit_code or ExitCode.FAILURE)
