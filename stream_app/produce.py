"""A micro-batch's output records sent per partition as record batches.

aiokafka's ``send()`` costs 12.7-13.0 us per record (the issue's micro-benchmark, murmur2
partitioning included): one future, one metadata check, one accumulator append each, and
:mod:`stream_app.outputs` adds one task per record for its size fallbacks. Here a
micro-batch's records are grouped by topic and partition (partitioned exactly as ``send()``
would: the producer's own partitioner), appended to closed aiokafka ``BatchBuilder``\\ s and
submitted with ``send_batch``: one future per partition batch. A closed batch is sent at
once, without the producer's linger (the micro-batch *is* the batch).

The delivery guarantees do not change:

* **order**: a partition's records are appended and its batches submitted in the order they
  were added (aiokafka queues a partition's batches in submission order);
* **at least once**: :meth:`OutputBatch.flush` returns every batch's future; the caller
  acknowledges the inputs only when all are delivered, as with per-record futures;
* **exactly once**: given a transactional producer, ``send_batch`` adds each partition to
  the open transaction (aiokafka's accumulator does it for batches as for records);
* **no output stops the worker for its size** (:mod:`stream_app.outputs`): a record over
  the producer's ``max_request_size`` goes through its own per-record path at once (the
  client refuses it at ``send``: a recommendation dead-letters its event, a DLQ record is
  shrunk, inside a transaction too, as before); a batch the *broker* refuses for size (a
  topic's ``max.message.bytes`` below ours) is sent again record by record through those
  paths, so only the records that really are too large take their fallbacks (inside a
  transaction such a refusal fails the transaction, as a refused record does). Any other
  failure fails the batch's future: a real delivery failure (no commit past it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from stream_app.outputs import is_too_large

__all__ = ["OutputBatch", "Single"]

Single = Callable[[], Awaitable[asyncio.Future]]
"""Sends one record through the per-record path (``send()`` and its size fallbacks);
returns its delivery future. Used when a batch holding the record is refused for size."""

Delivered = Callable[[str, int, int], None]
"""``delivered(topic, partition, last_offset)``: a partition's batch was written."""


class OutputBatch:
    """The output records of one micro-batch, sent per partition as aiokafka record batches.

    ``producer`` is an ``aiokafka.AIOKafkaProducer`` (started; transactional or not).
    :meth:`add` queues a record (no I/O); :meth:`flush` partitions, builds and submits the
    batches and returns one future per batch. ``resend_refused=False`` (inside a
    transaction, where a refused record fails the transaction anyway): a batch refused for
    size fails its future like any other failure."""

    def __init__(
        self,
        producer: Any,
        *,
        on_delivered: Delivered | None = None,
        resend_refused: bool = True,
    ) -> None:
        self._producer = producer
        self._on_delivered = on_delivered
        self._resend_refused = resend_refused
        # (topic, partition or None) -> [(key, value, single)]; None: the partitioner decides
        self._records: dict[tuple[str, int | None], list[tuple[bytes | None, bytes | None, Single]]]
        self._records = {}
        self.n_records = 0
        self.n_batches = 0
        """Batches submitted by the last :meth:`flush`."""

    def add(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        single: Single,
        partition: int | None = None,
    ) -> None:
        """Queue one record; ``single`` re-sends it alone if its batch is refused for size."""
        dest = (topic, partition)
        rows = self._records.get(dest)
        if rows is None:
            rows = self._records[dest] = []
        rows.append((key, value, single))
        self.n_records += 1

    async def flush(self) -> list[asyncio.Future]:
        """Partition, build and submit every queued record; one future per batch (resolved
        when the batch, or each of its records after a refusal for size, is delivered)."""
        producer = self._producer
        futures: list[asyncio.Future] = []
        limit = getattr(producer, "_max_request_size", None)
        by_tp: dict[tuple[str, int], list[tuple[bytes | None, bytes | None, Single]]] = {}
        for (topic, partition), all_rows in self._records.items():
            rows = all_rows if limit is None else await _send_oversize(all_rows, limit, futures)
            if not rows:
                continue
            if partition is not None:
                by_tp.setdefault((topic, partition), []).extend(rows)
                continue
            await _metadata_for(producer, topic)
            pick = producer._partition  # noqa: SLF001 - the producer's own partitioner
            for row in rows:
                p = pick(topic, None, row[0], row[1], row[0], row[1])
                by_tp.setdefault((topic, p), []).append(row)
        self._records = {}
        self.n_records = 0
        self.n_batches = 0
        for (topic, partition), rows in by_tp.items():
            await _metadata_for(producer, topic)  # send_batch checks the partition against it
            for start, builder, n in _builders(producer, rows):
                fut = await producer.send_batch(builder, topic, partition=partition)
                self.n_batches += 1
                futures.append(self._settled(fut, topic, partition, rows[start : start + n]))
        return futures

    def _settled(
        self,
        fut: asyncio.Future,
        topic: str,
        partition: int,
        rows: list[tuple[bytes | None, bytes | None, Single]],
    ) -> asyncio.Future:
        """The batch's future, or on a refusal for size the re-send of each record alone."""
        loop = asyncio.get_running_loop()
        out: asyncio.Future = loop.create_future()
        on_delivered = self._on_delivered
        resend = self._resend_refused
        n = len(rows)

        def done(f: asyncio.Future) -> None:
            if f.cancelled():
                out.cancel()
                return
            exc = f.exception()
            if exc is None:
                md = f.result()
                if on_delivered is not None:
                    on_delivered(topic, partition, md.offset + n - 1)
                if not out.done():
                    out.set_result(md)
            elif resend and is_too_large(exc):
                task = loop.create_task(_one_by_one(rows))
                task.add_done_callback(lambda t: _chain(t, out))
            elif not out.done():
                out.set_exception(exc)

        fut.add_done_callback(done)
        return out


async def _send_oversize(
    rows: list[tuple[bytes | None, bytes | None, Single]],
    limit: int,
    futures: list[asyncio.Future],
) -> list[tuple[bytes | None, bytes | None, Single]]:
    """Records over the producer's ``max_request_size`` go through their per-record path
    now (``send()`` refuses them before queueing, their size fallbacks follow, also inside
    a transaction); returns the rest, in order."""
    near = limit - 512  # record and batch overheads are far below this
    if all(len(k or b"") + len(v or b"") < near for k, v, _ in rows):
        return rows
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    kept = []
    for row in rows:
        key, value, single = row
        if DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, []) > limit:
            futures.append(await single())
        else:
            kept.append(row)
    return kept


async def _metadata_for(producer: Any, topic: str) -> None:
    if producer._metadata.partitions_for_topic(topic) is None:  # noqa: SLF001
        await producer.client._wait_on_metadata(topic)  # noqa: SLF001 - as send() does


def _builders(
    producer: Any, rows: list[tuple[bytes | None, bytes | None, Single]]
) -> Iterable[tuple[int, Any, int]]:
    """``(first row, closed builder, rows in it)`` for ``rows`` in order, as many builders as
    the producer's batch size needs (a record larger than that gets a builder of its own)."""
    builder = producer.create_batch()
    start = 0
    i = 0
    for key, value, _ in rows:
        if builder.append(timestamp=None, key=key, value=value) is None:
            yield start, builder, i - start
            builder = producer.create_batch()
            start = i
            builder.append(timestamp=None, key=key, value=value)  # first record always fits
        i += 1
    builder.close()
    yield start, builder, i - start


async def _one_by_one(rows: list[tuple[bytes | None, bytes | None, Single]]) -> Any:
    """Send each record of a batch refused for size through its own per-record path, in
    order; the last delivery's result (a failure other than for size fails it)."""
    result = None
    futures = [await single() for _, _, single in rows]
    for fut in futures:
        result = await fut
    return result


def _chain(task: asyncio.Task, out: asyncio.Future) -> None:
    if out.done():
        return
    if task.cancelled():
        out.cancel()
    elif task.exception() is not None:
        out.set_exception(task.exception())  # type: ignore[arg-type]
    else:
        out.set_result(task.result())
