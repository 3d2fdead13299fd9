"""``devtools.kafka_io`` without a broker: the pacing arithmetic, input-event records, and
the producer/consumer loops against stand-in aiokafka clients."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from types import SimpleNamespace
from typing import Any

import aiokafka
import pytest

from coldstream.core.events import Event, validate_event
from coldstream.core.records import event_payload
from devtools.kafka_io import PRODUCER_DEFAULTS, Pacer, Record, new_event, produce, read_until

# ------------------------------------------------------------------------------ pacing


def test_constant_rate_is_due_at_i_over_rate_and_flat_out_never_waits() -> None:
    p = Pacer(100.0)
    assert [p.due(i) for i in (0, 1, 50, 100)] == [0.0, 0.01, 0.5, 1.0]
    assert p.delay(50, elapsed=0.2) == pytest.approx(0.3)  # 0.3 s early: sleep
    assert p.delay(50, elapsed=0.6) == 0.0  # late: send at once
    flat = Pacer(0.0)
    assert flat.due(10_000) == 0.0 and flat.delay(10_000, 0.0) == 0.0


def test_min_sleep_sends_small_lags_at_once() -> None:
    p = Pacer(1000.0, min_sleep_s=0.005)
    assert p.delay(4, elapsed=0.0) == 0.0  # 4 ms ahead: not worth a sleep
    assert p.delay(6, elapsed=0.0) == pytest.approx(0.006)


def test_rate_per_record_accumulates_the_gaps_in_order() -> None:
    # 2 records at 10/s, 3 at 100/s (a burst), then 10/s again
    rates = [10.0, 10.0, 100.0, 100.0, 100.0, 10.0, 10.0]
    p = Pacer(lambda i: rates[i])
    due = [p.due(i) for i in range(len(rates))]
    assert due == pytest.approx([0.0, 0.1, 0.2, 0.21, 0.22, 0.23, 0.33])
    with pytest.raises(ValueError, match="asked for 3, expected 7"):
        p.due(3)
    zero = Pacer(lambda i: 0.0 if i < 2 else 1.0)  # rate 0 for a record: no wait after it
    assert [zero.due(i) for i in range(4)] == [0.0, 0.0, 0.0, 1.0]


# ------------------------------------------------------------------------------ records


def test_new_event_is_the_kernel_payload_with_a_fresh_id_and_now() -> None:
    t0 = time.time()
    eid, value = new_event("u1", "7")
    uuid.UUID(hex=eid)  # a fresh uuid
    body = json.loads(value)
    assert t0 <= body["ts"] <= time.time()
    assert value == event_payload("u1", "7", event_id=eid, ts=body["ts"])
    assert new_event("u1", "7")[0] != eid
    ev = validate_event(value, "clicks", key=b"u1")
    assert isinstance(ev, Event) and (ev.event_id, ev.user_id, ev.item_id) == (eid, "u1", "7")


def test_new_event_keeps_given_fields() -> None:
    eid, value = new_event("u2", "9", event_id="e-1", ts=123.5, event_type="purchase", price=2.5)
    assert eid == "e-1"
    assert json.loads(value) == {
        "event_id": "e-1",
        "user_id": "u2",
        "item_id": "9",
        "ts": 123.5,
        "event_type": "purchase",
        "price": 2.5,
    }


def test_record_is_topic_key_value() -> None:
    r = Record("clicks", b"u", b"{}")
    assert (r.topic, r.key, r.value) == tuple(r) == ("clicks", b"u", b"{}")


# ------------------------------------------------------------------------------ produce


class FakeProducer:
    made: list[FakeProducer] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.sends: list[tuple[str, bytes | None, bytes | None, float]] = []
        self.stopped = False
        FakeProducer.made.append(self)

    async def start(self) -> None:
        pass

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        if value == b"boom":
            raise RuntimeError("broker said no")
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(SimpleNamespace(topic=topic, partition=0, offset=len(self.sends)))
        self.sends.append((topic, key, value, time.perf_counter()))
        return fut

    async def flush(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def fake_producer(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    FakeProducer.made = []
    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", FakeProducer)
    return FakeProducer


def test_produce_paces_sends_at_the_rate(fake_producer: type[FakeProducer]) -> None:
    records = [("t", b"k", f"v{i}".encode()) for i in range(21)]
    done = asyncio.run(produce("b:1", records, rate=200.0))
    sends = fake_producer.made[0].sends
    assert done.sent == 21 and [s[2] for s in sends] == [r[2] for r in records]
    span = sends[-1][3] - sends[0][3]
    assert 0.095 <= span < 0.6, span  # 20 gaps of 5 ms, never faster than the rate
    assert done.seconds >= span


def test_produce_callbacks_stop_and_metadata(fake_producer: type[FakeProducer]) -> None:
    sent: list[tuple[int, str]] = []
    acked: list[tuple[int, int]] = []
    records = (
        ("t", None, f"v{i}".encode(), f"extra-{i}") for i in range(100)
    )  # lazy, longer tuples
    done = asyncio.run(
        produce(
            "b:1",
            records,
            stop=lambda i: i >= 7,
            settle_every=3,
            keep_metadata=True,
            on_sent=lambda i, rec, t: sent.append((i, rec[3])),
            on_acked=lambda i, rec, md: acked.append((i, md.offset)),
        )
    )
    assert done.sent == 7
    assert sent == [(i, f"extra-{i}") for i in range(7)]
    assert acked == [(i, i) for i in range(7)]
    assert [md.offset for md in done.metadata] == list(range(7))


def test_produce_passes_client_arguments_and_always_stops(
    fake_producer: type[FakeProducer],
) -> None:
    asyncio.run(produce("b:1", [], acks=1, security_protocol="SSL"))
    kwargs = fake_producer.made[0].kwargs
    assert kwargs == {
        "bootstrap_servers": "b:1",
        **PRODUCER_DEFAULTS,
        "acks": 1,
        "security_protocol": "SSL",
    }
    with pytest.raises(RuntimeError, match="broker said no"):
        asyncio.run(produce("b:1", [("t", None, b"ok"), ("t", None, b"boom")]))
    assert fake_producer.made[1].stopped


# ------------------------------------------------------------------------------ read_until


class FakeConsumer:
    script: list[list[Any]] = []
    made: list[FakeConsumer] = []

    def __init__(self, *topics: str, **kwargs: Any) -> None:
        self.topics, self.kwargs = topics, kwargs
        self.polls = 0
        self.stopped = False
        FakeConsumer.made.append(self)

    async def start(self) -> None:
        pass

    async def getmany(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[Any, list[Any]]:
        self.polls += 1
        if self.script:
            return {("tp", 0): self.script.pop(0)}
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def stop(self) -> None:
        self.stopped = True


def _recs(*values: str) -> list[Any]:
    return [SimpleNamespace(topic="out", value=v.encode()) for v in values]


@pytest.fixture
def fake_consumer(monkeypatch: pytest.MonkeyPatch) -> type[FakeConsumer]:
    FakeConsumer.made = []
    monkeypatch.setattr(aiokafka, "AIOKafkaConsumer", FakeConsumer)
    return FakeConsumer


def test_read_until_a_count_then_lingers_for_extras(fake_consumer: type[FakeConsumer]) -> None:
    fake_consumer.script = [_recs("a", "b"), _recs("c"), _recs("extra"), _recs("never")]
    out = asyncio.run(read_until("b:1", ["out"], count=3, timeout_s=10, idle_s=0.0))
    assert [r.value for r in out] == [b"a", b"b", b"c"]
    fake_consumer.script = [_recs("a", "b", "c"), _recs("extra")]
    out = asyncio.run(read_until("b:1", ["out"], count=3, timeout_s=10, idle_s=0.3, poll_ms=20))
    assert [r.value for r in out] == [b"a", b"b", b"c", b"extra"]
    c = fake_consumer.made[0]
    assert c.topics == ("out",) and c.stopped
    assert c.kwargs == {
        "bootstrap_servers": "b:1",
        "group_id": None,
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        "fetch_max_wait_ms": 50,
    }


def test_read_until_a_predicate_sees_every_poll(fake_consumer: type[FakeConsumer]) -> None:
    fake_consumer.script = [_recs("a"), [], _recs("b"), _recs("c")]
    seen: list[bytes] = []
    polls: list[int] = []

    def until() -> bool:
        polls.append(len(seen))
        return b"b" in seen

    out = asyncio.run(
        read_until(
            "b:1",
            ["out"],
            until=until,
            keep=False,
            poll_ms=10,
            on_records=lambda recs, now: seen.extend(r.value for r in recs),
        )
    )
    assert out == [] and seen == [b"a", b"b"]  # kept nothing, stopped at the predicate
    assert polls == [1, 1, 2]  # asked after the empty poll too


def test_read_until_times_out_with_what_it_has(fake_consumer: type[FakeConsumer]) -> None:
    fake_consumer.script = [_recs("a")]
    t0 = time.monotonic()
    out = asyncio.run(
        read_until("b:1", ["out"], count=5, timeout_s=0.3, poll_ms=20, security_protocol="SSL")
    )
    assert [r.value for r in out] == [b"a"] and 0.3 <= time.monotonic() - t0 < 2.0
    assert fake_consumer.made[0].kwargs["security_protocol"] == "SSL"
    with pytest.raises(ValueError, match="from_end needs partitions"):
        asyncio.run(read_until("b:1", ["out"], from_end=True))
