"""The micro-batch processor without a broker: one output per input, sessions, dedupe, breaker."""

from __future__ import annotations

import json

import pytest

from devtools.checkpoints import make_checkpoint
from devtools.kafka_io import new_event
from stream_app.batch import BatchProcessor, Deduper, DlqBreaker, Incoming, PartitionBreakers
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
    assert out.dlq[0][0] == b"u9"  # the DLQ record is keyed by the input's key (the user)
    dlq = json.loads(out.dlq[0][1])
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


def test_a_ranking_failure_answers_from_popularity_and_dead_letters_nothing(recommender):
    # a model error is not the events' fault: before, both valid events (and their payloads)
    # went to the DLQ as processing_error and counted towards the breaker
    class Broken:
        model = recommender.model
        candidate = None

        def rank_batch(self, *a, **k):
            raise RuntimeError("boom")

        def popular(self, k, exclude=()):
            return [("7", 0.5)]

        def observe(self, items, users=None):
            list(items)

    p = BatchProcessor(Broken(), Settings(), get_session=lambda u: None, clock=lambda: NOW)
    out = p.process([rec("clicks", "u1", "1", 0), rec("clicks", "u2", "2", 1)])
    assert not out.dlq and out.model_errors == 1 and out.per_partition == {("clicks", 0): (2, 0)}
    vals = [json.loads(v) for _, v in out.recommendations]
    assert [v["fallback"] for v in vals] == ["model_error", "model_error"]
    assert [v["items"] for v in vals] == [[{"item_id": "7", "score": 0.5}]] * 2
    assert set(out.sessions) == {"u1", "u2"}  # the events still count for the session


def test_deduper_is_bounded():
    d = Deduper(3)
    for i in range(5):
        d.add(("u", str(i)))
    assert len(d) == 3 and ("u", "0") not in d and ("u", "4") in d


def test_another_users_event_with_the_same_id_is_not_a_duplicate(recommender):
    # dedupe used to be global across users: u2's event reusing u1's event_id got no output
    p = BatchProcessor(recommender, Settings(), get_session=lambda u: None, clock=lambda: NOW)
    first = p.process([rec("clicks", "u1", "1", 0, "same-id")])
    second = p.process(
        [rec("clicks", "u2", "2", 1, "same-id"), rec("clicks", "u1", "3", 2, "same-id")]
    )
    assert len(first.recommendations) == 1
    assert [json.loads(v)["user_id"] for _, v in second.recommendations] == ["u2"]
    assert second.outcomes[("clicks", "duplicate")] == 1  # u1's own repeat still is one


def test_a_record_without_a_key_is_refused(recommender):
    # a null key lets a user's events land on any partition (their session splits)
    p = BatchProcessor(recommender, Settings(), get_session=lambda u: None, clock=lambda: NOW)
    _, value = new_event("u1", "1", ts=NOW - 1)
    out = p.process([Incoming("clicks", 3, 0, None, value, NOW)])
    assert not out.recommendations and out.dlq_reasons == {"missing_key": 1}
    assert out.dlq[0][0] is None


def _forget(user, offset, ts, eid=None):
    value = json.dumps({"event_id": eid or f"f{offset}", "user_id": user, "ts": ts}).encode()
    return Incoming("forget-requests", 0, offset, user.encode(), value, NOW)


def test_forget_request_leaves_a_marker_that_refuses_older_events(recommender):
    store: dict = {}
    p = BatchProcessor(recommender, Settings(), get_session=store.get, clock=lambda: NOW)

    def run(batch):
        out = p.process(batch)
        for u, (_, value) in out.sessions.items():
            store[u] = value
        return out

    def old(user, item, offset, eid, ts):
        _, value = new_event(user, item, event_id=eid, ts=ts)
        return Incoming("clicks", 0, offset, user.encode(), value, NOW)

    run([old("u1", "1", 0, "a", NOW - 100), old("u1", "2", 1, "b", NOW - 90)])
    out = run([_forget("u1", 2, NOW - 50)])
    assert json.loads(out.recommendations[0][1])["fallback"] == "forgotten"
    assert store["u1"] == {"forgotten_at": NOW - 50, "h": []} and out.forgotten == ["u1"]
    # a redelivered older event (another id, as after a producer retry) does not come back
    out = run([old("u1", "3", 3, "c", NOW - 60)])
    assert json.loads(out.recommendations[0][1])["fallback"] == "forgotten"
    assert out.n_refused_forgotten == 1 and store["u1"]["h"] == []
    # a genuinely new event starts a new history beside the marker
    out = run([old("u1", "4", 4, "d", NOW - 10)])
    assert json.loads(out.recommendations[0][1])["fallback"] != "forgotten"
    assert [e[0] for e in store["u1"]["h"]] == ["4"] and store["u1"]["forgotten_at"] == NOW - 50


def test_forget_on_an_event_topic_is_refused_unless_allowed(recommender):
    value = json.dumps({"event_id": "f", "user_id": "u1", "ts": NOW - 1, "event_type": "forget"})
    incoming = Incoming("clicks", 0, 0, b"u1", value.encode(), NOW)
    strict = BatchProcessor(recommender, Settings(), get_session=lambda u: None, clock=lambda: NOW)
    assert strict.process([incoming]).dlq_reasons == {"forget_not_allowed": 1}
    dev = BatchProcessor(
        recommender,
        Settings(forget_on_event_topics=True),
        get_session=lambda u: None,
        clock=lambda: NOW,
    )
    assert dev.process([incoming]).forgotten == ["u1"]


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
        "arm": "live",
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


def test_partition_breakers_trip_only_the_bad_partition():
    b = PartitionBreakers(window=100, max_ratio=0.5, min_events=50)
    assert b.record({("clicks", 0): (60, 60), ("clicks", 1): (60, 0)}) == [("clicks", 0)]
    b.reset(("clicks", 0))
    assert b.record({("clicks", 0): (10, 0)}) == []


async def test_fast_path_take_returns_empty_after_idle():
    import time as _time

    from stream_app.fastpath import FastPath

    fp = FastPath(["t"], max_buffered=5)
    t = _time.monotonic()
    assert await fp.take(10, 0.01, idle_s=0.05) == []
    assert 0.04 <= _time.monotonic() - t < 5.0  # it waited, and came back
    fp.put("m")
    assert await fp.take(10, 0.01, idle_s=0.05) == ["m"]


@pytest.fixture
def two_models(tmp_path):
    """A live recommender (v1) and a second bundle (v2) from the same store."""
    live = Recommender.from_checkpoint(
        make_checkpoint(tmp_path, n_items=60, seed=1), prefer_gpu_index=False
    )
    v2 = Recommender.from_checkpoint(
        make_checkpoint(tmp_path, n_items=60, seed=2), prefer_gpu_index=False
    ).model
    assert (live.model.version, v2.version) == ("1", "2")
    return live, v2


def test_a_canary_serves_its_share_and_every_record_names_its_arm(two_models):
    from coldstream.core.rollout import assign
    from stream_app.recommender import Candidate

    live, v2 = two_models
    live.candidate = Candidate(v2, "canary", 0.3, "r-2-1790000000", 2)
    p = BatchProcessor(live, Settings(k=5), get_session={}.get, clock=lambda: NOW)
    users = [f"user-{i}" for i in range(300)]
    out = p.process([rec("clicks", u, str(1 + i % 50), i) for i, u in enumerate(users)])
    vals = [json.loads(v) for _, v in out.recommendations]
    want = [assign(u, 0.3, "r-2-1790000000") for u in users]
    assert [v["arm"] for v in vals] == ["canary" if w else "live" for w in want]
    assert [v["model_version"] for v in vals] == ["2" if w else "1" for w in want]
    assert 0.2 < sum(want) / len(want) < 0.4
    i = want.index(True)
    history = [[str(1 + i % 50), 0, NOW - 1]]
    by_candidate = live.rank_batch([history], 5, v2).items[0]
    assert [x["item_id"] for x in vals[i]["items"]] == [iid for iid, _ in by_candidate]
    j = want.index(False)
    history = [[str(1 + j % 50), 0, NOW - 1]]
    assert [x["item_id"] for x in vals[j]["items"]] == [
        iid for iid, _ in live.rank_batch([history], 5).items[0]
    ]
    live.candidate = None  # rolled back: the same users are all live again
    again = p.process([rec("clicks", u, "7", 1000 + i) for i, u in enumerate(users)])
    assert {json.loads(v)["arm"] for _, v in again.recommendations} == {"live"}


def test_a_shadow_is_scored_on_the_next_event_but_never_published(two_models):
    from stream_app.online import OnlineQuality
    from stream_app.recommender import Candidate

    live, v2 = two_models
    live.candidate = Candidate(v2, "shadow", 0.0, "r-2-1790000000", 2)
    online = OnlineQuality(window_s=3600.0)
    p = BatchProcessor(live, Settings(k=5), get_session={}.get, clock=lambda: NOW, online=online)
    store: dict = {}
    p.get_session = store.get
    users = [f"user-{i}" for i in range(40)]
    for step in range(3):
        out = p.process(
            [
                rec("clicks", u, str(1 + (i + step) % 50), step * 100 + i)
                for i, u in enumerate(users)
            ]
        )
        store.update({u: sess for u, (_, sess) in out.sessions.items()})
        vals = [json.loads(v) for _, v in out.recommendations]
        assert {(v["arm"], v["model_version"]) for v in vals} == {("live", "1")}
    assert online.requests["1"] == 80 and "2" not in online.requests  # the served model's
    assert p.shadow_online is not None
    assert p.shadow_online.requests["2"] == 80 and "1" not in p.shadow_online.requests
    assert not p.shadow_online.segment_requests  # the cold/warm series stay the served ones'


def test_a_redelivered_event_is_found_in_a_history_trimmed_in_the_same_batch(recommender):
    # the session holds e1..e3 (max_history 3) and the dedupe memory is empty (a restart):
    # new events trim the oldest entries in this batch, and a redelivered event is still
    # found at its new position; one trimmed away is an event like any other
    store: dict = {"u1": [[str(n), 0, NOW - 10 + n, f"e{n}"] for n in (1, 2, 3)]}
    p = BatchProcessor(
        recommender, Settings(k=5, max_history=3), get_session=store.get, clock=lambda: NOW
    )
    out = p.process(
        [
            rec("clicks", "u1", "4", 0, "e4"),  # trims e1
            rec("clicks", "u1", "5", 1, "e5"),  # trims e2
            rec("clicks", "u1", "9", 2, "e3"),  # redelivered: e3 is now the oldest entry
            rec("clicks", "u1", "7", 3, "e1"),  # trimmed away: new again, trims e3
        ]
    )
    assert out.n_redelivered == 1
    assert len(out.recommendations) == 4
    assert [e[3] for e in out.sessions["u1"][1]] == ["e4", "e5", "e1"]
    vals = [json.loads(v) for _, v in out.recommendations]
    # e3 answered as before: from the history up to e3 only, so items 4 and 5 may come back,
    # while the answer to e1 excludes its whole history
    assert not {"4", "5", "7"} & {i["item_id"] for i in vals[3]["items"]}
