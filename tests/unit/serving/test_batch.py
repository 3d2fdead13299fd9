"""The micro-batch processor without a broker: one output per input, sessions, dedupe, breaker."""

from __future__ import annotations

import json

import pytest

from devtools.checkpoints import make_checkpoint
from devtools.kafka_io import new_event
from stream_app.batch import BatchProcessor, Deduper, DlqBreaker, Incoming
from stream_app.recommender import Recommender
from stream_app.settings import Settings

NOW = 1_700_000_000.0


@pytest.fixture(scope="module")
def recommender(tmp_path_factory):
    return Recommender.from_checkpoint(
        make_checkpoint(tmp_path_factory.mktemp("s"), n_items=60), prefer_gpu_index=False
    )


def rec(topic, user, item, offset, eid=None, partition=0):
    eid, value = new_event(user, item, event_id=eid, ts=NOW - 1)
    return Incoming(topic, partition, offset, user.encode(), value, NOW - 0.5)


def test_batch_outputs_sessions_and_dedupe(recommender):
    store: dict = {"u1": [["1", 0, 1.0], ["2", 1, 2.0]]}
    p = BatchProcessor(
        recommender, Settings(k=5, max_history=3), get_session=store.get, clock=lambda: NOW
    )
    batch = [
        rec("clicks", "u1", "3", 0, "e1"),
        rec("purchases", "u2", "4", 1, "e2", partition=2),
        rec("clicks", "u1", "ghost", 2, "e3"),
        rec("clicks", "u1", "5", 3, "e1"),  # dup of e1
        Incoming("clicks", 0, 4, b"u9", b"{oops", NOW),
    ]
    out = p.process(batch)
    assert len(out.recommendations) == 3 and len(out.dlq) == 1
    assert out.outcomes[("clicks", "duplicate")] == 1 and out.dlq_reasons == {"invalid_json": 1}
    vals = [json.loads(v) for _, v in out.recommendations]
    assert [v["event_id"] for v in vals] == ["e1", "e2", "e3"]
    assert [k for k, _ in out.recommendations] == [b"u1", b"u2", b"u1"]
    # history capped at max_history=3, unknown item kept; one table write per user
    assert out.sessions["u1"] == (
        0,
        [["2", 1, 2.0], ["3", 0, NOW - 1, "e1"], ["ghost", 0, NOW - 1, "e3"]],
    )
    assert out.sessions["u2"][0] == 2
    assert not {"2", "3"} & {i["item_id"] for i in vals[0]["items"]}
    assert vals[0]["cold_start"] is True and vals[1]["cold_start"] is True
    assert vals[0]["latency_ms"] == pytest.approx(500.0)
    assert store["u1"] == [["1", 0, 1.0], ["2", 1, 2.0]]  # the processor never writes the store
    dlq = json.loads(out.dlq[0])
    assert (dlq["source_topic"], dlq["offset"], dlq["error"], dlq["payload"]) == (
        "clicks",
        4,
        "invalid_json",
        "{oops",
    )
    # next batch: e2 is a duplicate now
    assert (
        p.process([rec("purchases", "u2", "9", 5, "e2")]).outcomes[("purchases", "duplicate")] == 1
    )


def test_ranking_failure_goes_to_dlq(recommender):
    class Broken:
        model = recommender.model

        def rank_batch(self, *a, **k):
            raise RuntimeError("boom")

    p = BatchProcessor(Broken(), Settings(), get_session=lambda u: None, clock=lambda: NOW)
    out = p.process([rec("clicks", "u1", "1", 0), rec("clicks", "u2", "2", 1)])
    assert not out.recommendations and len(out.dlq) == 2 and not out.sessions
    assert out.dlq_reasons == {"processing_error": 2}


def test_deduper_is_bounded():
    d = Deduper(3)
    for i in range(5):
        d.add(str(i))
    assert len(d) == 3 and "0" not in d and "4" in d


def test_breaker_trips_on_ratio_and_respects_window():
    b = DlqBreaker(window=100, max_ratio=0.5, min_events=50)
    assert not b.record(40, 40)  # below min_events
    assert b.record(20, 20)  # 60 events, all bad
    b.reset()
    for _ in range(10):
        assert not b.record(10, 1)
    assert not b.record(10, 6)
    assert b.record(100, 60)  # window slides: only the newest ~100 events count


def test_recommendation_payload_is_the_record_schema():
    from coldstream.core.records import Recommendation, field_names, recommendation_payload

    raw = recommendation_payload(
        event_id='e"1',
        user_id="ü",
        items=[("a\\b", 0.1234567), ("7", -2.0)],
        model_version="3",
        cold_start=True,
        produced_at=1.5,
        latency_ms=2.25,
        fallback=None,
    )
    v = json.loads(raw)
    assert v == {
        "event_id": 'e"1',
        "user_id": "ü",
        "items": [{"item_id": "a\\b", "score": 0.123457}, {"item_id": "7", "score": -2.0}],
        "model_version": "3",
        "cold_start": True,
        "produced_at": 1.5,
        "latency_ms": 2.25,
        "fallback": None,
    }
    assert set(v) == set(field_names(Recommendation))
    assert (
        json.loads(
            recommendation_payload(
                event_id="e",
                user_id="u",
                items=[],
                model_version="1",
                cold_start=False,
                produced_at=2.0,
                latency_ms=1.0,
                fallback="popular",
            )
        )["fallback"]
        == "popular"
    )


async def test_fast_path_take_batches_and_backpressure():
    import asyncio
    import time

    from stream_app.fastpath import FastPath

    fp = FastPath(["t"], max_buffered=5)
    t0 = time.monotonic()
    assert not fp.full()
    for i in range(3):
        fp.put(i)
    assert await fp.take(10, 0.05) == [0, 1, 2]  # returns within the window, not waiting for 10
    assert 0.03 < time.monotonic() - t0 < 1.0
    for i in range(5):
        fp.put(i)
    assert fp.full()
    t0 = time.monotonic()
    assert await fp.take(2, 10.0) == [0, 1]  # max reached: no waiting
    assert time.monotonic() - t0 < 0.5
    waiter = asyncio.create_task(fp.take(1, 0.01))
    assert await waiter == [2]
    await asyncio.wait_for(fp.wait_space(), 1.0)  # not full any more
    assert await fp.take(5, 0.01) == [3, 4]
    empty = asyncio.create_task(fp.take(1, 0.01))
    await asyncio.sleep(0.05)
    assert not empty.done()  # an empty buffer waits for the first message, however long
    fp.put(9)
    assert await asyncio.wait_for(empty, 1.0) == [9]
