"""Ordered delivery tracking (:mod:`stream_app.delivery`) on plain futures (no broker)."""

from __future__ import annotations

import asyncio

import pytest

from stream_app.delivery import Delivery


class _Consumer:
    def __init__(self) -> None:
        self.acked: list[str] = []
        self.commits = 0
        self.fail_commit = False

    def ack(self, m: str) -> None:
        self.acked.append(m)

    async def commit(self) -> bool:
        if self.fail_commit:
            raise RuntimeError("rebalance in progress")
        self.commits += 1
        return True


async def test_inputs_are_acked_only_after_their_outputs_and_in_order() -> None:
    c = _Consumer()
    d = Delivery(ack=c.ack, commit=c.commit, max_uncommitted_batches=4)
    task = asyncio.create_task(d.run())
    loop = asyncio.get_running_loop()
    f1, f2 = loop.create_future(), loop.create_future()
    await d.submit(["a1", "a2"], [f1])
    await d.submit(["b1"], [f2])
    f2.set_result(None)  # the later batch is delivered first: nothing may be acked yet
    await asyncio.sleep(0.01)
    assert c.acked == []
    f1.set_result(None)
    await asyncio.sleep(0.01)
    # both delivered by then: acked in order, one commit for the two
    assert c.acked == ["a1", "a2", "b1"] and c.commits == 1 and d.uncommitted == 0
    assert d.batches_committed == 2
    task.cancel()


async def test_a_failed_send_acks_nothing_from_there_on() -> None:
    c = _Consumer()
    failures: list[BaseException] = []
    counted: list[int] = []

    async def on_failure(e: BaseException) -> None:
        failures.append(e)

    d = Delivery(
        ack=c.ack,
        commit=c.commit,
        max_uncommitted_batches=4,
        on_send_failure=on_failure,
        count_failure=counted.append,
    )
    task = asyncio.create_task(d.run())
    loop = asyncio.get_running_loop()
    ok, bad, later = loop.create_future(), loop.create_future(), loop.create_future()
    for batch, fut in ((["a"], ok), (["b"], bad), (["c"], later)):
        await d.submit(batch, [fut])
    ok.set_result(None)
    bad.set_exception(RuntimeError("MessageSizeTooLarge"))
    later.set_result(None)
    await asyncio.wait_for(task, 1)
    assert c.acked == ["a"] and c.commits == 1  # nothing at or past the failure
    assert isinstance(d.failure, RuntimeError) and failures == [d.failure] and counted == [1]


async def test_one_uncommitted_batch_holds_the_next_one_back() -> None:
    c = _Consumer()
    d = Delivery(ack=c.ack, commit=c.commit, max_uncommitted_batches=1)
    task = asyncio.create_task(d.run())
    fut = asyncio.get_running_loop().create_future()
    submitted = asyncio.create_task(d.submit(["a"], [fut]))
    await asyncio.sleep(0.01)
    assert not submitted.done()  # the caller may not process the next batch yet
    fut.set_result(None)
    await asyncio.wait_for(submitted, 1)
    assert c.acked == ["a"] and c.commits == 1
    task.cancel()


async def test_a_failed_commit_is_not_fatal() -> None:
    c = _Consumer()
    c.fail_commit = True
    d = Delivery(ack=c.ack, commit=c.commit, max_uncommitted_batches=2)
    task = asyncio.create_task(d.run())
    fut = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    await d.submit(["a"], [fut])
    await asyncio.sleep(0.01)
    assert c.acked == ["a"] and d.commit_errors == 1 and not task.done()
    task.cancel()


async def test_small_batches_overlap_their_delivery_within_the_events_bound() -> None:
    """At a low rate the next small batch goes on while earlier ones are delivered; the
    records waiting never pass ``max_uncommitted_events`` (what a kill -9 can repeat), and
    batches of an eighth of it or more (load) each wait for their commit."""
    c = _Consumer()
    d = Delivery(ack=c.ack, commit=c.commit, max_uncommitted_batches=4, max_uncommitted_events=40)
    task = asyncio.create_task(d.run())
    loop = asyncio.get_running_loop()
    assert d.room(512) == 40  # nothing waits: a batch may take up to the bound
    f1, f2 = loop.create_future(), loop.create_future()
    await asyncio.wait_for(d.submit(["a1", "a2"], [f1]), 1)  # 2 wait, under 40 // 8: go on
    assert d.uncommitted == 1 and d.uncommitted_events == 2 and d.room(512) == 38
    assert d.room(2) == 2
    submitted = asyncio.create_task(d.submit(["b1", "b2", "b3"], [f2]))  # 5 wait: hold
    await asyncio.sleep(0.01)
    assert not submitted.done()  # the next batch may not be processed yet
    f1.set_result(None)
    await asyncio.wait_for(submitted, 1)
    assert c.acked == ["a1", "a2"] and d.uncommitted_events == 3 and d.room(512) == 37
    f2.set_result(None)
    await asyncio.sleep(0.01)
    assert c.acked == ["a1", "a2", "b1", "b2", "b3"] and d.uncommitted_events == 0
    big = loop.create_future()
    held = asyncio.create_task(d.submit([f"c{i}" for i in range(30)], [big]))
    await asyncio.sleep(0.01)
    assert not held.done() and d.room(512) == 10  # a loaded batch waits for its commit
    big.set_result(None)
    await asyncio.wait_for(held, 1)
    assert d.room(512) == 40
    task.cancel()


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        Delivery(ack=lambda m: None, commit=None, max_uncommitted_batches=0)
    with pytest.raises(ValueError):
        Delivery(ack=lambda m: None, commit=None, max_uncommitted_events=0)
