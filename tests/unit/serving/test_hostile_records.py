"""The audit's findings, each at the unit that owns it (the fault suite runs the same records
through a real worker): no output can stop the worker for its size, one account cannot move
the popular list, forget follows arrival order, implausible record timestamps, brackets in
strings, a model that ranks to nothing, tombstones on ``item-vectors``, and the API's
shape, token and budget."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from aiokafka.errors import MessageSizeTooLargeError
from prometheus_client import CollectorRegistry

from coldstream.core.events import Event, Rejection, validate_event
from coldstream.core.model_updates import make_item_vector
from coldstream.core.records import dlq_payload, event_payload
from coldstream.core.signing import Signer
from devtools.checkpoints import make_checkpoint
from stream_app.batch import EMPTY_RANKING, BatchProcessor, Incoming
from stream_app.control import ItemVectorSink, handle_vector_records
from stream_app.metrics import Metrics
from stream_app.outputs import is_too_large, send_dlq, send_recommendation
from stream_app.recommender import Ranked, Recommender
from stream_app.settings import Settings
from stream_app.web import RankQueue, TokenBucket, authorised, read_token

NOW = 1_700_000_000.0
SIGNER = Signer.generate()


@pytest.fixture
def recommender(tmp_path):
    return Recommender.from_checkpoint(
        make_checkpoint(tmp_path / "s", n_items=60, signer=SIGNER), prefer_gpu_index=False
    )


def click(user: str, item: str, offset: int, *, eid: str, ts: float = NOW - 1, rts=NOW - 0.5):
    value = event_payload(user, item, event_id=eid, ts=ts)
    return Incoming("clicks", 0, offset, user.encode(), value, rts)


class Producer:
    """Refuses, like aiokafka, a value over ``limit`` bytes (at send or in the delivery)."""

    def __init__(self, limit: int, *, at_send: bool) -> None:
        self.limit, self.at_send = limit, at_send
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes):
        fut = asyncio.get_running_loop().create_future()
        if len(value) > self.limit:
            err = MessageSizeTooLargeError(f"{len(value)} bytes")
            if self.at_send:
                raise err
            fut.set_exception(err)
        else:
            self.sent.append((topic, key, value))
            fut.set_result(len(self.sent))
        return fut


def _big_dlq() -> bytes:
    return dlq_payload(
        source_topic="clicks",
        partition=1,
        offset=9,
        error="key_mismatch",
        detail="x",
        payload=b"y" * 50_000,
        key=b"\xff" * 400,
        event_id="e9",
    )


@pytest.mark.parametrize("at_send", [True, False])
def test_a_dlq_record_refused_for_size_is_shrunk_not_fatal(at_send: bool) -> None:
    counted: list[tuple[str, str]] = []

    async def main():
        p = Producer(20_000, at_send=at_send)
        fut = await send_dlq(p.send, "dlq", b"u", _big_dlq(), lambda t, o: counted.append((t, o)))
        return p, await fut

    p, md = asyncio.run(main())
    assert md == 1 and counted == [("dlq", "shrunk")]
    d = json.loads(p.sent[0][2])
    assert (d["payload"], d["key"], d["offset"], d["error"]) == ("", None, 9, "key_mismatch")
    assert d["payload_truncated"] and d["payload_bytes"] == 50_000


def test_a_dlq_record_refused_even_shrunk_is_dropped_with_a_count() -> None:
    counted: list[tuple[str, str]] = []

    async def main():
        p = Producer(10, at_send=False)
        fut = await send_dlq(p.send, "dlq", None, _big_dlq(), lambda t, o: counted.append((t, o)))
        return await fut

    assert asyncio.run(main()) is None and counted == [("dlq", "dropped")]


def test_a_recommendation_refused_for_size_dead_letters_its_event() -> None:
    counted: list[tuple[str, str]] = []

    async def main():
        p = Producer(480, at_send=True)
        value = json.dumps({"event_id": "e5", "items": ["x" * 800]}).encode()
        fut = await send_recommendation(
            p.send,
            "recs",
            b"u",
            value,
            dlq_topic="dlq",
            origin=("clicks", 2, 41),
            max_dlq_bytes=8192,
            count=lambda t, o: counted.append((t, o)),
        )
        await fut
        return p

    p = asyncio.run(main())
    assert counted == [("recs", "dead_lettered")]
    ((topic, _key, value),) = p.sent
    d = json.loads(value)
    assert topic == "dlq" and (d["error"], d["event_id"], d["offset"]) == (
        "output_too_large",
        "e5",
        41,
    )


def test_other_send_failures_still_fail_the_delivery() -> None:
    async def main():
        async def send(topic, key, value):
            raise ConnectionError("broker gone")

        fut = await send_dlq(send, "dlq", None, b"{}", lambda t, o: None)
        with pytest.raises(ConnectionError):
            await fut

    asyncio.run(main())
    assert is_too_large(RuntimeError("x")) is False


def test_one_account_cannot_move_the_popular_list(recommender) -> None:
    # finding 2: 300 clicks by one user on one item put it first for every cold user
    p = BatchProcessor(recommender, Settings(k=5), get_session=lambda u: None, clock=lambda: NOW)
    p.process([click("spammer", "42", i, eid=f"s{i}") for i in range(300)])
    p.process([click(f"u{i}", "7", 300 + i, eid=f"g{i}") for i in range(3)])
    top = recommender.popular(3)
    assert top[0][0] == "7", top  # three users beat one user's 300 clicks


def test_forget_deletes_what_arrived_before_it_even_stamped_in_the_future(recommender) -> None:
    # finding 4: a click stamped now + 3000 s (inside the accepted skew) survived a forget
    store: dict = {}
    p = BatchProcessor(
        recommender, Settings(forget_on_event_topics=True), get_session=store.get, clock=lambda: NOW
    )
    future = click("u1", "3", 0, eid="f1", ts=NOW + 3000)
    out = p.process([future])
    store["u1"] = out.sessions["u1"][1]
    forget = json.dumps(
        {"event_id": "fg", "user_id": "u1", "event_type": "forget", "ts": NOW}
    ).encode()
    out = p.process([Incoming("clicks", 0, 1, b"u1", forget, NOW)])
    store["u1"] = out.sessions["u1"][1]
    assert store["u1"]["h"] == [] and store["u1"]["forgotten_at"] >= NOW + 3000
    p.deduper = type(p.deduper)(10)  # a redelivery after a crash: the deduper forgot it
    again = p.process([click("u1", "3", 2, eid="f1", ts=NOW + 3000)])
    assert json.loads(again.recommendations[0][1])["fallback"] == "forgotten"
    assert again.sessions["u1"][1]["h"] == []


def test_an_implausible_record_timestamp_does_not_feed_the_latency(recommender) -> None:
    # finding 9: a record stamped at 1 ms added 1.8e9 s to the histogram's sum
    p = BatchProcessor(recommender, Settings(), get_session=lambda u: None, clock=lambda: NOW)
    out = p.process(
        [
            click("u1", "1", 0, eid="a", rts=0.001),
            click("u2", "1", 1, eid="b", rts=-5.0),
            click("u3", "1", 2, eid="c", rts=NOW + 10**7),
            click("u4", "1", 3, eid="d", rts=NOW - 0.25),
        ]
    )
    assert out.n_bad_timestamps == 3
    assert max(out.latencies_s) < 1.0 and out.latencies_s[3] == pytest.approx(0.25)


def test_brackets_inside_a_string_are_text_not_nesting() -> None:
    # finding 7: a context string with 32 brackets was dead-lettered as invalid_json
    raw = event_payload("u1", "1", event_id="e1", ts=NOW, context={"note": "[" * 40})
    assert isinstance(validate_event(raw, "clicks", key=b"u1", now=NOW), Event)
    deep = b'{"event_id":"e","user_id":"u1","item_id":"1","ts":1,"context":' + b"[" * 40
    deep += b"]" * 40 + b"}"
    got = validate_event(deep, "clicks", key=b"u1", now=NOW)
    assert isinstance(got, Rejection) and got.reason == "invalid_json"


def test_a_model_that_ranks_to_nothing_answers_from_popularity(recommender) -> None:
    # finding 6: a NaN checkpoint answered every event with items: [] and fallback: null
    class Empty:
        model = recommender.model
        candidate = None

        def rank_batch(self, histories, k):
            return Ranked([[] for _ in histories], [None] * len(histories))

        def popular(self, k, exclude=()):
            return [("7", 0.5)]

        def observe(self, items, users=None):
            pass

    p = BatchProcessor(Empty(), Settings(), get_session=lambda u: None, clock=lambda: NOW)
    out = p.process([click("u1", "1", 0, eid="a"), click("u2", "2", 1, eid="b")])
    vals = [json.loads(v) for _, v in out.recommendations]
    assert out.n_empty_rankings == 2
    assert all(v["items"] == [{"item_id": "7", "score": 0.5}] for v in vals)
    assert {v["fallback"] for v in vals} == {EMPTY_RANKING}


def test_a_tombstone_withdraws_an_upserted_item_but_never_a_checkpoint_item(recommender):
    # finding 10: a tombstone was counted as a bad record and the item stayed
    metrics = Metrics(CollectorRegistry())
    sink = ItemVectorSink(recommender, metrics, keys=SIGNER.keyring)
    m = recommender.model
    vec = (m.table[0] / np.linalg.norm(m.table[0]) * 0.5 * m.checkpoint.max_item_norm).tolist()
    new = make_item_vector("new-1", m.version, vec, SIGNER)
    records = [
        (b"new-1", new),
        (b"new-1", None),
        (b"1", None),
        (b"new-2", new.replace(b'"new-1"', b'"new-2"')),
    ]
    asyncio.run(handle_vector_records(sink, records[:3]))
    assert "new-1" not in recommender.model.index_of and "1" in recommender.model.index_of
    assert sink.reasons == {"checkpoint_item": 1}
    got = metrics.registry.get_sample_value(
        "coldstream_control_records_total",
        {"topic": "item-vectors", "outcome": "withdrawn", "reason": ""},
    )
    assert got == 1.0


def test_api_rankings_that_wait_together_are_ranked_together() -> None:
    calls: list[int] = []

    def rank(histories, k):
        calls.append(len(histories))
        return Ranked([[("i", 1.0)] * k for _ in histories], [None] * len(histories))

    async def main():
        q = RankQueue(rank, ThreadPoolExecutor(1))
        return await asyncio.gather(*(q.ranked([["1"]], k) for k in (1, 3, 2, 5)))

    got = asyncio.run(main())
    assert [len(items) for items, _ in got] == [1, 3, 2, 5]
    assert sum(calls) == 4 and len(calls) <= 2  # not one ranking (one lock) per request


def test_the_api_budget_and_token() -> None:
    t = [0.0]
    bucket = TokenBucket(10.0, clock=lambda: t[0])
    assert sum(bucket.take() for _ in range(50)) == 10
    t[0] = 0.5
    assert sum(bucket.take() for _ in range(50)) == 5
    assert authorised(None, None)
    assert authorised("s3cret-token-0123", "Bearer s3cret-token-0123")
    assert not authorised("s3cret-token-0123", "Bearer nope")
    assert not authorised("s3cret-token-0123", None)


def test_a_missing_token_file_names_the_setting(tmp_path) -> None:
    with pytest.raises(ValueError, match="COLDSTREAM_API_TOKEN_FILE"):
        read_token(tmp_path / "absent")
    (tmp_path / "t").write_text("  0123456789abcdef-token \n")
    assert read_token(tmp_path / "t") == "0123456789abcdef-token"
