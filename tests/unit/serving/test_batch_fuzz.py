"""Property-based fuzzing of the input path: ``validate_event`` and ``BatchProcessor.process``.

Over 10,000 generated payloads in all (see ``N_*`` below, counted by a session counter and
asserted at the end): random bytes, wrong types, missing and extra fields, huge strings and
arrays, NaN/Infinity, negative and far-future timestamps, invalid UTF-8, unknown items and
users, forget requests. Properties: nothing raises; every record yields exactly one output
(a recommendation or a DLQ record with a known reason) or is a counted duplicate; DLQ
records are valid JSON carrying the raw payload; a recommendation never carries NaN.
"""

from __future__ import annotations

import base64
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coldstream.core.events import REASONS, Event, Forget, Rejection, validate_event
from devtools.checkpoints import make_checkpoint
from stream_app.batch import BatchProcessor, Incoming
from stream_app.recommender import Recommender
from stream_app.settings import Settings

NOW = 1_700_000_000.0
N_BYTES = 3000
N_OBJECTS = 5000
N_BATCHES = 150  # x up to 16 records each (~1,200 payloads)
N_TEXT = 1500
COUNT = {"payloads": 0}

FIELDS = ["event_id", "user_id", "item_id", "ts", "price", "quantity", "event_type", "context"]
# text that st.text() never makes on its own: lone surrogates (valid JSON as \\ud800 escapes),
# bidi controls, zero-width and format characters, decomposed (non-NFC) letters
odd_chars = st.sampled_from(
    [
        "\ud800",
        "\udfff",
        "\u202e",
        "\u2066",
        "\u200b",
        "\ufeff",
        "\u00ad",
        "u\u0308",
        "\ue000",
        "\U0010ffff",
        "\u0085",
        "\u3000",
    ]
)
odd_text = st.lists(st.one_of(odd_chars, st.text(max_size=3)), min_size=1, max_size=6).map("".join)
ids = st.one_of(
    st.text(min_size=0, max_size=140),
    st.integers(-5, 10**20),
    st.just("u1"),
    odd_text,
    st.sampled_from(["1", "2", "59", "999999", "unknown-item"]),
)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**30), 10**30),
    st.sampled_from([NOW, NOW + 10**9, -1.0, 0.0, NOW + 3599]),
)
junk = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=50),
    lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=5), c, max_size=5),
    max_leaves=10,
)
HUGE_STRING = "é" * 20_000
DEEP = [
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b'{"event_id":"e","user_id":"u","item_id":"1","ts":1,"context":' + b"[" * 40 + b"]" * 40 + b"}",
]
HUGE_ARRAY = list(range(5000))
values = st.one_of(
    ids,
    numbers,
    junk,
    st.just(HUGE_STRING),
    st.just(HUGE_ARRAY),
    st.text(max_size=10).map(lambda t: t * 1000),
    st.sampled_from(["click", "purchase", "forget", "like", ""]),
)


@st.composite
def objects(draw: st.DrawFn) -> dict:
    base = {"event_id": draw(ids), "user_id": draw(ids), "item_id": draw(ids), "ts": draw(numbers)}
    for f in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        if draw(st.booleans()):
            base.pop(f, None)
        else:
            base[f] = draw(values)
    if draw(st.booleans()):
        base[draw(st.text(max_size=8))] = draw(junk)
    return base


def _encode(obj: dict, mode: int) -> bytes:
    text = json.dumps(obj, allow_nan=True)  # NaN/Infinity literals on purpose
    raw = text.encode("utf-8", "surrogatepass")
    if mode == 1:
        raw = raw[: len(raw) // 2]
    elif mode == 2:
        raw = raw.replace(b'"', b"\xff", 1)
    return raw


@pytest.fixture(scope="module")
def processor(tmp_path_factory) -> BatchProcessor:
    rec = Recommender.from_checkpoint(
        make_checkpoint(tmp_path_factory.mktemp("f"), n_items=60), prefer_gpu_index=False
    )
    store: dict = {}
    return BatchProcessor(
        rec, Settings(max_event_bytes=16_384), get_session=store.get, clock=lambda: NOW
    )


def _check_result(r: object, raw: bytes | None) -> None:
    assert isinstance(r, Event | Forget | Rejection)
    if isinstance(r, Rejection):
        assert r.reason in REASONS
    elif isinstance(r, Event):
        assert math.isfinite(r.ts) and 0 <= r.ts <= NOW + 3600
        assert r.event_id and r.user_id and r.item_id
        assert raw is not None and len(raw) <= 16_384


@settings(max_examples=N_BYTES, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=400), topic=st.sampled_from(["clicks", "purchases", "items"]))
def test_random_bytes_never_raise(raw: bytes, topic: str) -> None:
    COUNT["payloads"] += 1
    _check_result(validate_event(raw, topic, key=None, now=NOW), raw)


@settings(max_examples=N_TEXT, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.text(max_size=300))
def test_random_text_never_raises(text: str) -> None:
    COUNT["payloads"] += 1
    raw = text.encode("utf-8", "surrogatepass")
    r = validate_event(raw, "clicks", now=NOW)
    _check_result(r, raw)
    if not isinstance(r, Rejection):
        assert json.loads(text)  # accepted only if it really is a JSON event


@settings(max_examples=N_OBJECTS, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    obj=objects(),
    mode=st.integers(0, 4),
    topic=st.sampled_from(["clicks", "purchases"]),
    keyed=st.booleans(),
)
def test_hostile_objects_are_accepted_only_when_valid(
    obj: dict, mode: int, topic: str, keyed: bool
) -> None:
    COUNT["payloads"] += 1
    raw = _encode(obj, mode)
    key = str(obj.get("user_id")).encode("utf-8", "surrogatepass") if keyed else None
    r = validate_event(raw, topic, key=key, now=NOW)
    _check_result(r, raw)
    if isinstance(r, Event):
        # every accepted event really satisfies the schema
        assert mode in (0, 3, 4)
        assert isinstance(obj["ts"], int | float) and not isinstance(obj["ts"], bool)
        assert set(obj) <= set(FIELDS)
        assert r.event_type == obj.get(
            "event_type", {"clicks": "click", "purchases": "purchase"}[topic]
        )


def test_deep_nesting_and_surrogates_are_refused_with_a_reason() -> None:
    for raw in DEEP:
        COUNT["payloads"] += 1
        r = validate_event(raw, "clicks", now=NOW)
        assert r.reason in ("invalid_json", "oversize")  # refused before the parser sees it
        assert validate_event(raw, "clicks", now=NOW, max_bytes=10**6).reason == "invalid_json"
    for bad in ("b\\ud800", "x\\udfff"):
        COUNT["payloads"] += 1
        raw = ('{"event_id":"e1","user_id":"' + bad + '","item_id":"1","ts":1}').encode()
        r = validate_event(raw, "clicks", now=NOW)
        assert (r.reason, r.event_id) == ("invalid_text", "e1")


@settings(max_examples=N_BATCHES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    batch=st.lists(
        st.tuples(
            st.one_of(
                objects().map(lambda o: _encode(o, 0)),
                st.binary(max_size=200),
                st.just(b""),
                st.just(b"x" * 20_000),
                st.sampled_from(DEEP),
            ),
            st.sampled_from(["clicks", "purchases"]),
            st.booleans(),
        ),
        min_size=1,
        max_size=16,
    )
)
def test_batch_yields_one_output_per_record(processor: BatchProcessor, batch: list) -> None:
    COUNT["payloads"] += len(batch)
    records = []
    for i, (raw, topic, keyed) in enumerate(batch):
        key = None
        if keyed:
            try:
                key = str(json.loads(raw).get("user_id")).encode("utf-8", "surrogatepass")
            except Exception:  # noqa: BLE001 - not an object: no key
                key = b"k"
        records.append(Incoming(topic, 0, i, key, raw, NOW))
    out = processor.process(records)
    n_dup = sum(n for (_, outcome), n in out.outcomes.items() if outcome == "duplicate")
    assert len(out.recommendations) + len(out.dlq) + n_dup == len(records)
    for key, value in out.dlq:
        d = json.loads(value)
        assert key == records[d["offset"]].key or key is None
        assert d["error"] in REASONS
        payload = (
            base64.b64decode(d["payload"])
            if d["payload_encoding"] == "base64"
            else d["payload"].encode()
        )
        raw = records[d["offset"]].value or b""
        assert raw.startswith(payload) and d["payload_bytes"] == len(raw)
        assert d["payload_truncated"] == (len(payload) < len(raw))
        assert len(value) <= processor.settings.dlq_max_bytes  # bounded whatever the input
    for key, value in out.recommendations:
        v = json.loads(value)  # strict JSON: no NaN/Infinity
        assert key.decode() == v["user_id"]
        assert all(math.isfinite(i["score"]) for i in v["items"])


def test_fuzz_volume() -> None:
    """Runs last in this file: the examples above add up to at least 10,000 payloads."""
    assert COUNT["payloads"] >= 10_000, COUNT
