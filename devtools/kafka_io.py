"""Kafka client helpers of the dev tooling: the one paced producer, the one read-until
consumer, input-event records, and a few admin calls.

* :func:`produce` sends ``(topic, key, value)`` records in order, at a rate (events/s, or
  a rate per record index) or flat out, with any producer arguments (the security ones of
  ``Settings.kafka_client_kwargs()`` included); callbacks see each send and each
  acknowledgement. The pacing arithmetic is :class:`Pacer` (pure).
* :func:`read_until` reads topics (from the beginning, or from the current end) until a
  number of records arrived, a predicate holds, the current end was reached, or a
  timeout; then optionally lingers ``idle_s`` for extras.
* :func:`new_event` is an input event with a fresh id and the current time, built by the
  kernel's one builder :func:`coldstream.core.records.event_payload`.
* :func:`run_coro` runs one of these coroutines from synchronous code, even inside a
  running event loop (on a private loop in a helper thread).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from coldstream.core.records import event_payload

__all__ = [
    "Pacer",
    "Produced",
    "Record",
    "bootstrap_fails",
    "committed_offsets",
    "create_compacted_topic",
    "delete_topics",
    "new_event",
    "produce",
    "read_until",
    "run_coro",
]

PRODUCER_DEFAULTS: dict[str, Any] = {"linger_ms": 2, "acks": "all", "request_timeout_ms": 10_000}
"""Producer arguments unless the caller gives others."""


class Record(NamedTuple):
    """One record to send: physical topic, key, value."""

    topic: str
    key: bytes | None
    value: bytes | None


def new_event(
    user_id: str,
    item_id: str,
    *,
    event_id: str | None = None,
    ts: float | None = None,
    event_type: str | None = None,
    **extra: object,
) -> tuple[str, bytes]:
    """``(event_id, value)`` of a valid click/purchase event: a fresh uuid id and the current
    time unless given; the JSON is :func:`~coldstream.core.records.event_payload`'s."""
    eid = event_id or uuid.uuid4().hex
    value = event_payload(
        user_id,
        item_id,
        event_id=eid,
        ts=time.time() if ts is None else ts,
        event_type=event_type,
        **extra,
    )
    return eid, value


# ------------------------------------------------------------------------------ producing


class Pacer:
    """When each record is due: ``rate`` events/s (``0``: flat out), or a callable giving the
    rate for record ``i`` (``0`` for that record: no wait). Record 0 is due at once; record
    ``i`` is due ``sum(1 / rate(j) for j < i)`` seconds after the start (``i / rate`` for a
    constant rate). :meth:`delay` must be asked for ``i = 0, 1, 2, ...`` in order."""

    def __init__(self, rate: float | Callable[[int], float], *, min_sleep_s: float = 0.0) -> None:
        self.rate = rate
        self.min_sleep_s = min_sleep_s
        self._next = 0
        self._due = 0.0

    def due(self, i: int) -> float:
        """Seconds after the start at which record ``i`` is due."""
        if not callable(self.rate):
            return i / self.rate if self.rate > 0 else 0.0
        if i != self._next:
            raise ValueError(f"Pacer with a rate per record: asked for {i}, expected {self._next}")
        due = self._due
        r = self.rate(i)
        self._due += 1.0 / r if r > 0 else 0.0
        self._next += 1
        return due

    def delay(self, i: int, elapsed: float) -> float:
        """How long to sleep before sending record ``i``, ``elapsed`` seconds after the start:
        the time until it is due, or 0 when that is at most ``min_sleep_s``."""
        lag = self.due(i) - elapsed
        return lag if lag > self.min_sleep_s and lag > 0 else 0.0


@dataclass
class Produced:
    """What :func:`produce` did."""

    sent: int
    """Records sent (and acknowledged)."""
    seconds: float
    """From the first send to the last acknowledgement (after the final flush)."""
    metadata: list[Any] = field(default_factory=list)
    """``RecordMetadata`` per record in order (with ``keep_metadata=True``)."""


async def produce(
    bootstrap: str,
    records: Iterable[Sequence[Any]],
    *,
    rate: float | Callable[[int], float] = 0.0,
    min_sleep_s: float = 0.0,
    stop: Callable[[int], bool] | None = None,
    on_sent: Callable[[int, Any, float], None] | None = None,
    on_acked: Callable[[int, Any, Any], None] | None = None,
    settle_every: int = 2000,
    settle_s: float | None = None,
    keep_metadata: bool = False,
    send_kwargs: Callable[[Any], dict[str, Any]] | None = None,
    on_failed: Callable[[int, Any, BaseException], None] | None = None,
    **producer_kwargs: Any,
) -> Produced:
    """Send ``records`` in order: each is ``(topic, key, value, *anything)`` (a :class:`Record`,
    or a longer tuple whose extra fields the callbacks get back); ``records`` may be a lazy
    iterator.

    ``rate``/``min_sleep_s``: pacing (:class:`Pacer`). ``stop(i)`` is asked before record
    ``i`` is sent; true ends the stream there. ``on_sent(i, record, time.time())`` runs right
    after each send is handed to the producer; ``on_acked(i, record, metadata)`` once the
    broker acknowledged it. Acknowledgements are awaited every ``settle_every`` records (and
    every ``settle_s`` seconds, if given) and at the end. ``producer_kwargs`` are
    ``AIOKafkaProducer`` arguments (defaults :data:`PRODUCER_DEFAULTS`), security included.
    ``send_kwargs(record)``: more ``send`` arguments per record (``headers``,
    ``timestamp_ms``). ``on_failed(i, record, exc)``: a record the producer or the broker
    refused is reported there and the stream goes on (without it, the refusal is raised).
    """
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, **{**PRODUCER_DEFAULTS, **producer_kwargs}
    )
    await producer.start()
    pacer = Pacer(rate, min_sleep_s=min_sleep_s)
    metadata: list[Any] = []
    pending: list[tuple[int, Any, Any]] = []
    sent = 0

    async def settle() -> None:
        mds = await asyncio.gather(*(f for _, _, f in pending), return_exceptions=True)
        for (i, rec, _), md in zip(pending, mds, strict=True):
            if isinstance(md, BaseException):
                if on_failed is None:
                    raise md
                on_failed(i, rec, md)
            elif on_acked is not None:
                on_acked(i, rec, md)
        if keep_metadata:
            metadata.extend(mds)
        pending.clear()

    t0 = last_settle = time.perf_counter()
    try:
        for i, rec in enumerate(records):
            if stop is not None and stop(i):
                break
            delay = pacer.delay(i, time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            extra = send_kwargs(rec) if send_kwargs is not None else {}
            try:
                fut = await producer.send(rec[0], value=rec[2], key=rec[1], **extra)
            except Exception as e:
                if on_failed is None:
                    raise
                on_failed(i, rec, e)
                continue
            if on_sent is not None:
                on_sent(i, rec, time.time())
            pending.append((i, rec, fut))
            sent += 1
            if len(pending) >= settle_every or (
                settle_s is not None and time.perf_counter() - last_settle > settle_s
            ):
                await settle()
                last_settle = time.perf_counter()
        await settle()
        await producer.flush()
    finally:
        await producer.stop()
    return Produced(sent, time.perf_counter() - t0, metadata)


# ------------------------------------------------------------------------------ consuming


async def read_until(
    bootstrap: str,
    topics: Sequence[str],
    *,
    count: int | None = None,
    until: Callable[[], bool] | None = None,
    timeout_s: float | None = 60.0,
    idle_s: float = 0.0,
    to_end: bool = False,
    partitions: Mapping[str, int] | None = None,
    from_end: bool = False,
    positioned: asyncio.Event | None = None,
    on_records: Callable[[list[Any], float], None] | None = None,
    keep: bool = True,
    group_id: str | None = None,
    fetch_max_wait_ms: int = 50,
    poll_ms: int = 200,
    max_records: int | None = None,
    **consumer_kwargs: Any,
) -> list[Any]:
    """Read ``topics`` and return the ``ConsumerRecord``s (with ``keep``).

    Stops when ``count`` records arrived, or ``until()`` holds (asked after every poll,
    empty ones included), or -- with ``to_end`` -- every assigned partition reached the end
    offset it had when first assigned; after that it reads on for ``idle_s`` (extras that
    should not be there). It also stops after ``timeout_s`` (``None``: never) and then
    returns what it has. ``on_records(records, time.time())`` gets every non-empty poll.

    From the beginning (``auto_offset_reset="earliest"``, subscribed, no group unless
    ``group_id``), or with ``partitions`` (topic -> partition count) on exactly those
    partitions; ``from_end`` (with ``partitions``) starts at their current end and sets
    ``positioned`` once there. ``consumer_kwargs``: more ``AIOKafkaConsumer`` arguments
    (security, ``max_poll_records``, ...).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    if from_end and partitions is None:
        raise ValueError("from_end needs partitions (topic -> partition count)")
    kwargs: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "group_id": group_id,
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        "fetch_max_wait_ms": fetch_max_wait_ms,
        **consumer_kwargs,
    }
    consumer = (
        AIOKafkaConsumer(**kwargs)
        if partitions is not None
        else AIOKafkaConsumer(*topics, **kwargs)
    )
    await consumer.start()
    out: list[Any] = []
    seen = 0
    try:
        if partitions is not None:
            tps = [TopicPartition(t, p) for t in topics for p in range(partitions[t])]
            consumer.assign(tps)
            if from_end:
                await consumer.seek_to_end(*tps)
                for tp in tps:
                    await consumer.position(tp)
        if positioned is not None:
            positioned.set()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        done_at: float | None = None
        ends: dict[Any, int] = {}
        while deadline is None or time.monotonic() < deadline:
            if to_end and done_at is None:
                parts = consumer.assignment()
                if parts and not ends:
                    ends = await consumer.end_offsets(list(parts))
                if ends and all([await consumer.position(tp) >= ends[tp] for tp in parts]):
                    done_at = time.monotonic()
            if done_at is None or time.monotonic() - done_at < idle_s:
                batch = await consumer.getmany(timeout_ms=poll_ms, max_records=max_records)
                now = time.time()
                records = [r for rs in batch.values() for r in rs]
                if records:
                    seen += len(records)
                    if keep:
                        out.extend(records)
                    if on_records is not None:
                        on_records(records, now)
            if done_at is None and (
                (count is not None and seen >= count) or (until is not None and until())
            ):
                done_at = time.monotonic()
            if done_at is not None and time.monotonic() - done_at >= idle_s:
                break
            await asyncio.sleep(0)
        return out
    finally:
        await consumer.stop()


# ------------------------------------------------------------------------------ admin


async def bootstrap_fails(bootstrap: str, **client_kwargs: Any) -> str:
    """Start a producer that must fail to bootstrap (wrong credentials, wrong CA, plaintext
    against TLS); returns the error text, raises ``AssertionError`` if it connects."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=3000, **client_kwargs)
    try:
        await asyncio.wait_for(p.start(), 20)
    except (TimeoutError, KafkaError, OSError) as e:
        return repr(e)
    finally:
        await p.stop()
    raise AssertionError(
        f"a client with {client_kwargs.get('security_protocol')} bootstrapped from {bootstrap}"
    )


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20000)
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


async def create_compacted_topic(bootstrap: str, name: str, partitions: int) -> None:
    """Create a compacted topic (replication factor 1); nothing happens when it exists."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, partitions, 1, topic_configs={"cleanup.policy": "compact"})]
        )
    except Exception:  # noqa: BLE001 - it may exist already
        pass
    finally:
        await admin.close()


async def alter_topic_configs(bootstrap: str, name: str, configs: dict[str, str]) -> None:
    """Set topic configs (``max.message.bytes``, ...) on an existing topic."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs=configs)])
    finally:
        await admin.close()


async def committed_offsets(
    bootstrap: str, group: str, topics: list[str]
) -> dict[tuple[str, int], int]:
    """``(topic, partition) -> committed offset`` of consumer group ``group`` on ``topics``."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): m.offset for tp, m in offsets.items() if tp.topic in topics}


# ------------------------------------------------------------------------------ sync bridge


def run_coro(coro: Any, timeout_s: float = 120.0) -> Any:
    """Run a coroutine to completion on a private loop in a helper thread, so that sync
    helpers also work inside async code whose loop is already running."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = e

    thread = threading.Thread(target=target, name="run-coro", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"coroutine did not finish within {timeout_s} s")
    if "error" in result:
        raise result["error"]
    return result["value"]
