"""The DLQ breaker's resume (``stream_app.agents._resume_partition``) against a recording
consumer. The fault suite runs the whole thing on a real broker
(``tests/fault/test_faults.py::test_dlq_breaker_pauses_only_the_bad_partition``); this pins
the one step a broker run shows only as "some events never answered": where it seeks."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, NamedTuple

from stream_app.agents import _resume_partition
from stream_app.batch import PartitionBreakers


class TP(NamedTuple):  # Faust's TP is a (topic, partition) named tuple too
    topic: str
    partition: int


class RecordingConsumer:
    def __init__(self, assigned: set[TP]) -> None:
        self.assigned = assigned
        self.calls: list[tuple[str, Any, Any]] = []

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    async def seek(self, tp: TP, offset: int) -> None:
        self.calls.append(("seek", tp, offset))

    def resume_partitions(self, tps: list[TP]) -> None:
        self.calls.append(("resume", tuple(tps), None))


class Gauge:
    def __init__(self) -> None:
        self.value: float | None = None

    def set(self, v: float) -> None:
        self.value = v


def _wiring(consumer: RecordingConsumer, progress: dict, paused: set) -> Any:
    breakers = PartitionBreakers(window=10, max_ratio=0.5, min_events=4)
    return SimpleNamespace(
        app=SimpleNamespace(consumer=consumer),
        progress=progress,
        paused=paused,
        breakers=breakers,
        metrics=SimpleNamespace(dlq_breaker_open=Gauge()),
    )


def test_resume_seeks_after_the_last_processed_offset_of_the_logical_partition():
    # the worker's topics carry a prefix; progress and breakers are keyed by logical names
    real = TP("acme-clicks", 2)
    consumer = RecordingConsumer({real, TP("acme-clicks", 0)})
    w = _wiring(consumer, {("clicks", 2): (246, 1.0), ("clicks", 0): (999, 1.0)}, {("clicks", 2)})
    # a tripped breaker: four refused events
    assert w.breakers.record({("clicks", 2): (4, 4)}) == [("clicks", 2)]
    asyncio.run(_resume_partition(w, ("clicks", 2), real))
    assert consumer.calls == [("seek", real, 247), ("resume", (real,), None)]
    assert w.paused == set()
    assert w.metrics.dlq_breaker_open.value == 0
    # a fresh breaker: one more refused event is far from tripping it again
    assert w.breakers.record({("clicks", 2): (1, 1)}) == []


def test_resume_of_a_partition_that_moved_away_unpauses_it_without_a_seek():
    real = TP("acme-clicks", 1)
    consumer = RecordingConsumer(set())  # revoked during the cool-down
    w = _wiring(consumer, {("clicks", 1): (10, 1.0)}, {("clicks", 1), ("clicks", 3)})
    asyncio.run(_resume_partition(w, ("clicks", 1), real))
    assert consumer.calls == [("resume", (real,), None)]
    assert w.paused == {("clicks", 3)}
    assert w.metrics.dlq_breaker_open.value == 1
