"""The exactly-once fast path's producers (stream_app.transactions) with fake aiokafka
producers: fencing on assignment, one transaction's offsets, Faust's send signature."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from stream_app.transactions import (
    TransactionalOutputs,
    TransactionSender,
    partition_offsets,
    transactional_id,
)


@dataclass
class FakeProducer:
    transactional_id: str
    calls: list[Any] = field(default_factory=list)
    fail_commit: bool = False

    async def start(self) -> None:
        self.calls.append("start")

    async def stop(self) -> None:
        self.calls.append("stop")

    async def send(self, topic: str, **kwargs: Any) -> asyncio.Future:
        self.calls.append(("send", topic, kwargs))
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def send_offsets_to_transaction(self, offsets: Any, group_id: str) -> None:
        self.calls.append(("offsets", dict(offsets), group_id))

    async def commit_transaction(self) -> None:
        if self.fail_commit:
            raise RuntimeError("fenced")
        self.calls.append("commit")

    async def abort_transaction(self) -> None:
        self.calls.append("abort")


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int


def _outputs() -> tuple[TransactionalOutputs, dict[str, FakeProducer]]:
    made: dict[str, FakeProducer] = {}

    def make(tid: str) -> FakeProducer:
        made[tid] = FakeProducer(tid)
        return made[tid]

    return TransactionalOutputs(app_id="app", group_id="app", make_producer=make), made


def test_transactional_ids_are_per_input_partition_and_stable() -> None:
    assert transactional_id("app", 3) == "app-eos-3"
    assert transactional_id("app", 3) == transactional_id("app", 3)


def test_partition_offsets_are_last_plus_one_per_topic_partition() -> None:
    msgs = [Msg("clicks", 2, 5), Msg("clicks", 2, 9), Msg("purchases", 2, 1), Msg("clicks", 2, 7)]
    assert partition_offsets(msgs) == {("clicks", 2): 10, ("purchases", 2): 2}


async def test_assignment_starts_owned_producers_and_closes_the_others() -> None:
    outputs, made = _outputs()
    await outputs.on_assignment([0, 1, 2])
    assert outputs.partitions == {0, 1, 2}
    assert all(made[f"app-eos-{p}"].calls == ["start"] for p in (0, 1, 2))
    await outputs.on_assignment([1, 2, 3])  # 0 moved away: its id is the new owner's
    assert outputs.partitions == {1, 2, 3}
    assert made["app-eos-0"].calls == ["start", "stop"]
    assert made["app-eos-1"].calls == ["start"]  # kept: nobody else fenced it
    first = made["app-eos-0"]
    await outputs.on_assignment([0])  # back again: a fresh producer fences the other owner
    assert made["app-eos-0"] is not first and made["app-eos-0"].calls == ["start"]


async def test_commit_adds_the_input_offsets_for_the_group_then_commits() -> None:
    outputs, made = _outputs()
    producer = await outputs.producer(4)
    fut = await TransactionSender(producer).send("recs", b"k", b"v", None, None, None)
    await outputs.commit(producer, [fut], [Msg("clicks", 4, 10), Msg("purchases", 4, 3)])
    from aiokafka import TopicPartition

    assert made["app-eos-4"].calls[-2:] == [
        ("offsets", {TopicPartition("clicks", 4): 11, TopicPartition("purchases", 4): 4}, "app"),
        "commit",
    ]
    assert outputs.transactions_committed == 1


async def test_a_failed_commit_raises_and_abort_is_best_effort() -> None:
    outputs, made = _outputs()
    producer = await outputs.producer(0)
    producer.fail_commit = True
    with pytest.raises(RuntimeError, match="fenced"):
        await outputs.commit(producer, [], [Msg("clicks", 0, 1)])
    await outputs.abort([producer])
    assert made["app-eos-0"].calls[-1] == "abort" and outputs.transactions_aborted == 1


async def test_a_failed_send_fails_the_transaction_before_any_offset() -> None:
    outputs, made = _outputs()
    producer = await outputs.producer(0)
    fut: asyncio.Future = asyncio.get_running_loop().create_future()
    fut.set_exception(RuntimeError("too large"))
    with pytest.raises(RuntimeError, match="too large"):
        await outputs.commit(producer, [fut], [Msg("clicks", 0, 1)])
    assert not any(isinstance(c, tuple) and c[0] == "offsets" for c in made["app-eos-0"].calls)


async def test_sender_maps_faust_send_arguments_to_aiokafka() -> None:
    producer = FakeProducer("t")
    await TransactionSender(producer).send("cl", b"k", None, 3, 1.5, None)
    assert producer.calls == [
        (
            "send",
            "cl",
            {"value": None, "key": b"k", "partition": 3, "timestamp_ms": 1500, "headers": None},
        )
    ]


async def test_a_partition_outside_the_assignment_gets_no_producer() -> None:
    from stream_app.transactions import NotOwned

    outputs, made = _outputs()
    await outputs.on_assignment([1])
    with pytest.raises(NotOwned):
        await outputs.producer(0)  # would fence partition 0's new owner
    assert "app-eos-0" not in made


async def test_a_refused_record_fails_the_transaction_even_when_replaced() -> None:
    # stream_app.outputs replaces a recommendation refused for size by a DLQ record; inside
    # a transaction the refusal must still abort it (the partition's sequence is broken)
    outputs, made = _outputs()
    producer = await outputs.producer(0)
    sender = TransactionSender(producer)
    raw = await sender.send("recs", b"k", b"v", None, None, None)
    failed: asyncio.Future = asyncio.get_running_loop().create_future()
    failed.add_done_callback(sender._note)
    failed.set_exception(RuntimeError("MessageSizeTooLarge"))
    await asyncio.sleep(0)  # callbacks run
    with pytest.raises(RuntimeError, match="MessageSizeTooLarge"):
        await outputs.commit(producer, [raw], [Msg("clicks", 0, 1)], sender)
    assert "commit" not in made["app-eos-0"].calls
