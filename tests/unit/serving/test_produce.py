"""``stream_app.produce.OutputBatch``: a micro-batch's records go out per partition as record
batches, partitioned as ``send()`` would, in order, one future per batch; a batch refused for
size is sent again record by record through each record's own path.

The producer here is a stand-in for ``AIOKafkaProducer`` with aiokafka's real
``BatchBuilder`` and real murmur2 partitioner; the worker's path on a real broker is in
``tests/integration/test_pipeline.py`` and the size refusal in the fault suite
(``output_too_large``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.structs import RecordMetadata, TopicPartition

from stream_app.produce import OutputBatch

N_PARTITIONS = 6


class Metadata:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(N_PARTITIONS))

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(N_PARTITIONS))


class Producer:
    """What OutputBatch uses of AIOKafkaProducer, with aiokafka's own builder and
    partitioner; ``send_batch`` answers with ``fail`` (an exception) or base offsets that
    grow per partition."""

    def __init__(self, batch_size: int = 16384, fail: BaseException | None = None) -> None:
        self.batch_size = batch_size
        self.fail = fail
        self._metadata = Metadata()
        self._partitioner = DefaultPartitioner()
        self.sent: list[tuple[str, int, list[tuple[bytes | None, bytes | None]]]] = []
        self._next: dict[tuple[str, int], int] = {}

    def _partition(self, topic, partition, key, value, skey, svalue):  # noqa: ANN001, ANN202
        if partition is not None:
            return partition
        parts = sorted(self._metadata.partitions_for_topic(topic))
        return self._partitioner(skey, parts, parts)

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int) -> Any:
        assert builder.closed()  # sent at once, not lingering for more records
        buf = builder._build()
        records = [(r.key, r.value) for r in DefaultRecordBatch(bytes(buf))]
        self.sent.append((topic, partition, records))
        fut = asyncio.get_running_loop().create_future()
        if self.fail is not None:
            fut.set_exception(self.fail)
        else:
            base = self._next.get((topic, partition), 0)
            self._next[(topic, partition)] = base + len(records)
            tp = TopicPartition(topic, partition)
            fut.set_result(RecordMetadata(topic, partition, tp, base, -1, 0, 0))
        return fut


def _single(log: list[Any], name: Any, result: Any = "one") -> Any:
    async def single() -> asyncio.Future:
        log.append(name)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(result)
        return fut

    return single


def test_records_go_per_partition_in_order_where_send_would_put_them() -> None:
    async def run() -> tuple[Producer, list[Any], OutputBatch]:
        p = Producer()
        batch = OutputBatch(p)
        for i in range(40):
            batch.add("recs", f"user-{i % 7}".encode(), f"v{i}".encode(), _single([], i))
        batch.add("changelog", b"u", b"s", _single([], "c"), partition=4)
        futures = await batch.flush()
        return p, await asyncio.gather(*futures), batch

    p, results, batch = asyncio.run(run())
    part = DefaultPartitioner()
    parts = list(range(N_PARTITIONS))
    for topic, partition, records in p.sent:
        if topic == "changelog":
            assert (partition, records) == (4, [(b"u", b"s")])
            continue
        assert all(part(k, parts, parts) == partition for k, _ in records)
        values = [int(v[1:]) for _, v in records]
        assert values == sorted(values)  # order within the partition kept
    assert sum(len(r) for _, _, r in p.sent) == 41
    assert len(results) == len(p.sent) == batch.n_batches <= N_PARTITIONS + 1
    assert batch.n_records == 0  # flushed: the next micro-batch starts empty


def test_a_partition_larger_than_one_batch_is_split_in_order() -> None:
    async def run() -> Producer:
        p = Producer(batch_size=1024)
        batch = OutputBatch(p)
        for i in range(50):
            batch.add("recs", None, b"x" * 90 + str(i).encode(), _single([], i), partition=1)
        await asyncio.gather(*(await batch.flush()))
        return p

    p = asyncio.run(run())
    assert len(p.sent) > 3
    values = [v for _, _, records in p.sent for _, v in records]
    assert [int(v[90:]) for v in values] == list(range(50))


def test_delivered_gives_each_batch_its_last_offset() -> None:
    got: list[tuple[str, int, int]] = []

    async def run() -> None:
        p = Producer(batch_size=1024)
        batch = OutputBatch(p, on_delivered=lambda t, part, off: got.append((t, part, off)))
        for i in range(30):
            batch.add("changelog", b"k", b"y" * 100 + bytes([i]), _single([], i), partition=2)
        await asyncio.gather(*(await batch.flush()))

    asyncio.run(run())
    assert got[-1] == ("changelog", 2, 29)
    assert [o for _, _, o in got] == sorted(o for _, _, o in got)


def test_a_batch_refused_for_size_is_sent_again_record_by_record() -> None:
    order: list[Any] = []

    async def run() -> Any:
        p = Producer(fail=MessageSizeTooLargeError("too big"))
        batch = OutputBatch(p)
        for i in range(5):
            batch.add("recs", None, b"v", _single(order, i, result=f"r{i}"), partition=0)
        (fut,) = await batch.flush()
        return await fut

    assert asyncio.run(run()) == "r4"
    assert order == [0, 1, 2, 3, 4]


def test_inside_a_transaction_a_refused_batch_fails_and_nothing_is_resent() -> None:
    order: list[Any] = []

    async def run() -> None:
        p = Producer(fail=MessageSizeTooLargeError("too big"))
        batch = OutputBatch(p, resend_refused=False)
        batch.add("recs", None, b"v", _single(order, 0), partition=0)
        (fut,) = await batch.flush()
        await fut

    with pytest.raises(MessageSizeTooLargeError):
        asyncio.run(run())
    assert order == []


def test_any_other_failure_fails_the_batch_future() -> None:
    order: list[Any] = []

    async def run() -> None:
        p = Producer(fail=KafkaConnectionError("broker gone"))
        batch = OutputBatch(p)
        batch.add("recs", b"u", b"v", _single(order, 0))
        (fut,) = await batch.flush()
        await fut

    with pytest.raises(KafkaConnectionError):
        asyncio.run(run())
    assert order == []


def test_a_record_over_max_request_size_takes_its_own_path_at_once() -> None:
    """The client refuses such a record at send(): its per-record path dead-letters or
    shrinks it, inside a transaction too; the others still go in the batch."""
    order: list[Any] = []

    async def run() -> Producer:
        p = Producer()
        p._max_request_size = 2048
        batch = OutputBatch(p, resend_refused=False)
        batch.add("recs", None, b"a", _single(order, "small-1"), partition=0)
        batch.add("recs", None, b"x" * 4096, _single(order, "big"), partition=0)
        batch.add("recs", None, b"b", _single(order, "small-2"), partition=0)
        await asyncio.gather(*(await batch.flush()))
        return p

    p = asyncio.run(run())
    assert order == ["big"]
    assert [records for _, _, records in p.sent] == [[(None, b"a"), (None, b"b")]]
