"""Exactly-once on Kafka (``COLDSTREAM_PROCESSING_GUARANTEE=exactly_once``): per micro-batch
and input partition, the recommendations, the DLQ records, the session changelog records and
the input offsets are written in one Kafka transaction.

**One transactional producer per input partition number** (EOS "v1"): the transactional id
is ``<app_id>-eos-<partition>``; ``clicks[p]``, ``purchases[p]`` and the session changelog
``[p]`` are co-partitioned, so one id covers all three. The installed aiokafka (0.14)
commits offsets in a transaction with the group id only (``send_offsets_to_transaction(
offsets, group_id)``: no consumer group metadata, so no KIP-447 "v2" fencing by generation),
so zombies are fenced by the transactional id: the new owner of partition ``p`` starts the
producer for ``p`` (``InitProducerId``), which bumps the epoch, aborts what the old owner
left open and makes every later send or commit of the old owner fail with
``ProducerFenced``. That happens in :meth:`TransactionalOutputs.on_assignment`, called from
the table recovery's rebalance hook (:mod:`stream_app.recovery`), before Faust seeks the
input partitions to their committed offsets: the new owner reads offsets that no zombie can
move any more.

The producers are the project's own (``aiokafka.AIOKafkaProducer``), owned by the fast
path; Faust's own ``exactly_once`` mode (its transaction manager) is not used: it has open
bugs upstream and the fast path sends outside it. The transactions are the only writers of
the input offsets: Faust's periodic and rebalance commits commit nothing under
``exactly_once`` (:meth:`stream_app.transport.Consumer._commit`).

On any failure inside a transaction (a send, the offsets, the commit, a fence) the serving
task aborts the batch's transactions and the worker exits (code 5): nothing of those batches
is visible to ``read_committed`` readers, and the next owner of the partitions reads on from
the committed offsets, with the session table rebuilt from the committed changelog (the
worker consumer reads with ``read_committed``: :mod:`stream_app.transport`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "NotOwned",
    "TransactionSender",
    "TransactionalOutputs",
    "partition_offsets",
    "transactional_id",
]


def transactional_id(app_id: str, partition: int) -> str:
    """The transactional id of input partition ``partition`` (stable across restarts: that
    is what fences the previous owner)."""
    return f"{app_id}-eos-{partition}"


def partition_offsets(messages: Iterable[Any]) -> dict[tuple[str, int], int]:
    """``(topic, partition) -> next offset to read`` (last offset + 1) of ``messages``: the
    offsets a transaction commits for its input records."""
    out: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (m.topic, m.partition)
        out[key] = max(out.get(key, 0), m.offset + 1)
    return out


class NotOwned(LookupError):
    """An input partition that is not in this worker's assignment (any more)."""


class TransactionSender:
    """Faust's ``Producer.send(topic, key, value, partition, timestamp, headers)`` signature
    over an aiokafka producer, so that :func:`stream_app.agents.handle_batch` and
    :func:`stream_app.sessions.write_sessions` send into the open transaction unchanged.

    Every record the broker refuses is kept in :attr:`failures`, also one that
    :mod:`stream_app.outputs` replaced (a recommendation refused for size becomes a DLQ
    record): inside a transaction a refused record is a failed transaction (the producer's
    sequence for that partition is broken, later sends there would hang), so
    :meth:`TransactionalOutputs.commit` raises it and the batch is aborted."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.failures: list[BaseException] = []

    def _note(self, fut: asyncio.Future) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            self.failures.append(fut.exception())  # type: ignore[arg-type]

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
        **_: Any,
    ) -> asyncio.Future:
        fut = await self.producer.send(
            topic,
            value=value,
            key=key,
            partition=partition,
            timestamp_ms=None if timestamp is None else int(timestamp * 1000),
            headers=list(headers.items()) if isinstance(headers, Mapping) else headers,
        )
        fut.add_done_callback(self._note)
        return fut


class TransactionalOutputs:
    """The fast path's transactional producers, one per owned input partition number.

    ``make_producer(transactional_id)`` builds an unstarted ``AIOKafkaProducer``;
    ``group_id`` is the consumer group whose offsets the transactions commit."""

    def __init__(
        self,
        *,
        app_id: str,
        group_id: str,
        make_producer: Callable[[str], Any],
        abort_timeout_s: float = 10.0,
    ) -> None:
        self.app_id = app_id
        self.group_id = group_id
        self.make_producer = make_producer
        self.abort_timeout_s = abort_timeout_s
        self._producers: dict[int, Any] = {}
        self._lock = asyncio.Lock()
        self.owned: set[int] | None = None
        """The input partition numbers of the last assignment (``None``: none yet)."""
        self.transactions_committed = 0
        self.transactions_aborted = 0

    @property
    def partitions(self) -> set[int]:
        """The input partition numbers that have a started producer."""
        return set(self._producers)

    async def on_assignment(self, partitions: Iterable[int]) -> None:
        """Called on every rebalance with the whole new assignment (input partition numbers),
        before the input partitions are sought to their committed offsets: producers of
        partitions this worker no longer owns are closed (their ids are the new owner's to
        fence), producers of the owned ones are started (which fences any previous owner and
        aborts what it left open)."""
        wanted = set(partitions)
        async with self._lock:
            self.owned = wanted
            gone = [p for p in self._producers if p not in wanted]
            for p in gone:
                producer = self._producers.pop(p)
                with contextlib.suppress(Exception):  # fenced or not: we do not own it
                    await asyncio.wait_for(producer.stop(), self.abort_timeout_s)
            missing = sorted(wanted - set(self._producers))
            started = await asyncio.gather(*(self._start(p) for p in missing))
            self._producers.update(zip(missing, started, strict=True))

    async def _start(self, partition: int) -> Any:
        producer = self.make_producer(transactional_id(self.app_id, partition))
        await producer.start()  # InitProducerId: fences the previous owner of the id
        return producer

    async def producer(self, partition: int) -> Any:
        """The started producer of ``partition`` (started now if the assignment hook has not
        run for it yet). A partition outside the last assignment raises
        :class:`NotOwned`: starting its producer would fence its new owner."""
        p = self._producers.get(partition)
        if p is not None:
            return p
        if self.owned is not None and partition not in self.owned:
            raise NotOwned(partition)
        async with self._lock:
            if partition not in self._producers:
                self._producers[partition] = await self._start(partition)
            return self._producers[partition]

    async def commit(
        self,
        producer: Any,
        futures: Sequence[asyncio.Future],
        messages: Sequence[Any],
        sender: TransactionSender | None = None,
    ) -> None:
        """Finish one open transaction: wait for its sends, add the input offsets of
        ``messages`` (for :attr:`group_id`), commit. Raises what failed (the caller aborts):
        a failed send, or a record the broker refused that ``sender`` saw."""
        from aiokafka import TopicPartition

        for fut in futures:
            await fut  # a failed send fails the transaction
        if sender is not None and sender.failures:
            raise sender.failures[0]
        offsets = {
            TopicPartition(topic, partition): offset
            for (topic, partition), offset in partition_offsets(messages).items()
        }
        await producer.send_offsets_to_transaction(offsets, self.group_id)
        await producer.commit_transaction()
        self.transactions_committed += 1

    async def abort(self, producers: Iterable[Any]) -> None:
        """Best-effort abort of the open transactions of ``producers`` (a fenced producer
        cannot abort: its transaction is the new owner's to abort, and is never committed)."""
        for producer in producers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.abort_transaction(), self.abort_timeout_s)
            self.transactions_aborted += 1

    async def close(self) -> None:
        """Stop every producer (an open transaction is aborted by the broker or the next
        owner, never committed)."""
        async with self._lock:
            for producer in self._producers.values():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), self.abort_timeout_s)
            self._producers.clear()
