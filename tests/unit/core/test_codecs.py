"""The fast codecs agree with the reference ones.

* Decoding: :func:`validate_event` (a typed msgspec decoder, the rules on its struct) gives
  exactly the answer of :func:`validate_event_slow` (the standard library's parser): the same
  accepted event, or the same rejection (reason, detail, event id), on thousands of generated
  records: malformed JSON, wrong types, huge numbers, NaN/Infinity, nested junk, non-UTF-8
  bytes, a BOM, repeated keys, lone surrogates, control characters.
* Encoding: :func:`recommendation_payload` (orjson and cached ``bytes %`` templates) writes
  byte for byte what :func:`recommendation_payload_slow` writes, and its JSON reads back to
  the values it was given (scores to 6 significant digits).
"""

from __future__ import annotations

import json
import math
import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coldstream.core import events
from coldstream.core.events import (
    INPUT_TOPICS,
    Event,
    Forget,
    Rejection,
    allowed_fields,
    validate_event,
    validate_event_slow,
)
from coldstream.core.records import (
    event_payload,
    recommendation_payload,
    recommendation_payload_slow,
)

NOW = 1_700_000_000.0
TOPICS = [*INPUT_TOPICS, "items"]
FIELDS = ["event_id", "user_id", "item_id", "ts", "event_type", "price", "quantity", "context"]


def both(raw, topic, **kw):
    """``(fast, slow)`` answers, checking on the way that the fast path alone never accepts
    what the slow one refuses (and accepts it as the same event)."""
    kw.setdefault("now", NOW)
    slow = validate_event_slow(raw, topic, **kw)
    alone = events._fast(
        raw,
        topic,
        kw.get("key"),
        kw.get("require_key", False),
        kw.get("max_bytes", 16_384),
        kw.get("max_future_skew_s", 3600.0),
        kw["now"],
    )
    assert alone is None or alone == slow, (raw, topic, kw, alone, slow)
    return validate_event(raw, topic, **kw), slow


def agree(raw, topic="clicks", **kw):
    fast, slow = both(raw, topic, **kw)
    assert type(fast) is type(slow) and fast == slow, (raw, topic, kw, fast, slow)
    return fast


# --------------------------------------------------------------------------- the schema


def test_the_struct_is_the_topics_schema():
    declared = set().union(*(allowed_fields(t) for t in INPUT_TOPICS))
    assert set(events._Wire.__struct_fields__) == declared


def test_the_fast_event_is_the_event():
    import dataclasses

    args = ("e1", "u1", "i1", 1.5, "purchase", 2.5, 3)
    fast, ref = events._new_event(*args), Event(*args)
    assert type(fast) is Event and fast == ref and hash(fast) == hash(ref)
    assert repr(fast) == repr(ref) and fast.type_code == 1
    assert dataclasses.astuple(fast) == args
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.ts = 2.0  # type: ignore[misc]


# --------------------------------------------------------------------------- named cases

BASE = '"event_id":"e1","user_id":"u1","item_id":"i1","ts":1699999990'


def obj(extra: str = "", base: str = BASE) -> bytes:
    return ("{" + base + ("," + extra if extra else "") + "}").encode()


CASES: list[tuple[bytes, str, dict]] = [
    (obj(), "clicks", {}),
    (obj(), "clicks", {"key": b"u1", "require_key": True}),
    (obj(), "clicks", {"require_key": True}),
    (obj(), "clicks", {"key": b"u2"}),
    (obj(), "purchases", {}),
    (obj(), "forget-requests", {}),
    (obj(), "items", {}),
    (obj(), "clicks", {"max_bytes": 20}),
    (b"", "clicks", {}),
    (b" ", "clicks", {}),
    (b"null", "clicks", {}),
    (b"[]", "clicks", {}),
    (b"{}", "clicks", {}),
    (b'"x"', "clicks", {}),
    (b"\xef\xbb\xbf" + obj(), "clicks", {}),  # BOM
    (obj() + b"\n ", "clicks", {}),
    (b" \t\r\n" + obj(), "clicks", {}),
    (obj() + b"\x00", "clicks", {}),
    (obj() + b"{}", "clicks", {}),
    (obj('"context":{"a":1}')[:-3], "clicks", {}),
    # repeated keys: top level, with whitespace before the colon, in the context, nested
    (obj('"event_id":"e2"'), "clicks", {}),
    (obj('"event_id" :"e2"'), "clicks", {}),
    (obj('"event_id"\t\n:"e1"'), "clicks", {}),
    (obj('"ts":1699999990'), "clicks", {}),
    (obj('"context":{"a":1,"a":2}'), "clicks", {}),
    (obj('"context":{"a":{"b":1,"b":1}}'), "clicks", {}),
    (obj('"context":{"a":[{"b":1,"b":1}]}'), "clicks", {}),
    (obj('"context":{"a":"x","b" :"y"}'), "clicks", {}),
    (obj('"context":{"a":"x\\":","b":"y"}'), "clicks", {}),  # '":' inside a string
    (obj('"context":{"a":"x\\" :","a" :"y"}'), "clicks", {}),
    (obj('"context":{"url":"http://x:80/a:b"}'), "clicks", {}),  # colons in strings
    (obj('"context":{"k":"v"}', BASE.replace('"e1"', '"e:1"')), "clicks", {}),
    (obj('"context":{"k":"v"}', BASE.replace('"e1"', '"e\\":1"')), "clicks", {}),
    # numbers
    (obj(base=BASE.replace("1699999990", "NaN")), "clicks", {}),
    (obj(base=BASE.replace("1699999990", "Infinity")), "clicks", {}),
    (obj(base=BASE.replace("1699999990", "-Infinity")), "clicks", {}),
    (obj(base=BASE.replace("1699999990", "1e999")), "clicks", {}),
    (obj(base=BASE.replace("1699999990", "9" * 400)), "clicks", {}),
    (obj(base=BASE.replace("1699999990", "1" * 5000)), "clicks", {}),
    (obj(base=BASE.replace("1699999990", "1e-400")), "clicks", {}),
    (obj(base=BASE.replace("1699999990", "-0")), "clicks", {}),
    (obj(base=BASE.replace("1699999990", "-0.0")), "clicks", {}),
    (obj(base=BASE.replace("1699999990", "01")), "clicks", {}),
    (obj(base=BASE.replace("1699999990", "1.")), "clicks", {}),
    (obj(base=BASE.replace("1699999990", ".5")), "clicks", {}),
    (obj(base=BASE.replace("1699999990", "+1")), "clicks", {}),
    (obj(base=BASE.replace("1699999990", "1E+2")), "clicks", {}),
    (obj(base=BASE.replace("1699999990", "1699999990.000000000000001")), "clicks", {}),
    (obj(base=BASE.replace("1699999990", "18446744073709551616")), "clicks", {"now": 1e30}),
    (obj(base=BASE.replace("1699999990", "9007199254740993")), "clicks", {"now": 1e30}),
    (obj(base=BASE.replace("1699999990", str(int(NOW + 3600)))), "clicks", {}),
    (obj(base=BASE.replace("1699999990", str(int(NOW + 3601)))), "clicks", {}),
    (obj(base=BASE.replace("1699999990", "true")), "clicks", {}),
    (obj(base=BASE.replace("1699999990", '"1"')), "clicks", {}),
    (obj(base=BASE.replace("1699999990", "null")), "clicks", {}),
    (obj('"context":{"x":NaN}'), "clicks", {}),
    (obj('"context":{"x":1e999}'), "clicks", {}),
    (obj('"context":{"x":' + "9" * 400 + "}"), "clicks", {}),
    (obj('"context":{"x":' + "9" * 5000 + "}"), "clicks", {}),
    (obj('"price":1e9,"quantity":1000000'), "purchases", {}),
    (obj('"price":1000000000.0001'), "purchases", {}),
    (obj('"price":-0.0,"quantity":1'), "purchases", {}),
    (obj('"price":null,"quantity":null'), "purchases", {}),
    (obj('"price":"1"'), "purchases", {}),
    (obj('"price":true'), "purchases", {}),
    (obj('"quantity":2.0'), "purchases", {}),
    (obj('"quantity":true'), "purchases", {}),
    (obj('"quantity":0'), "purchases", {}),
    (obj('"quantity":' + "9" * 30), "purchases", {}),
    (obj('"price":1'), "clicks", {}),
    (obj('"quantity":1'), "clicks", {}),
    # strings: escapes, surrogates, control characters, bad UTF-8
    (obj(base=BASE.replace('"e1"', '"\\ud800"')), "clicks", {}),
    (obj(base=BASE.replace('"e1"', '"\\udc00x"')), "clicks", {}),
    (obj(base=BASE.replace('"e1"', '"\\ud83d\\ude00"')), "clicks", {}),
    (obj(base=BASE.replace('"e1"', '"\\u00e9"')), "clicks", {}),
    (obj(base=BASE.replace('"e1"', '"e\\u0301"')), "clicks", {}),  # NFD
    (obj(base=BASE.replace('"e1"', '"a\\u200bb"')), "clicks", {}),  # zero width
    (obj(base=BASE.replace('"e1"', '"a\\u0000"')), "clicks", {}),
    (obj(base=BASE.replace('"e1"', '"a\\tb"')), "clicks", {}),
    (obj(base=BASE.replace('"e1"', '"a\\x"')), "clicks", {}),
    (obj(base=BASE.replace('"e1"', '"a b"')), "clicks", {}),
    (obj(base=BASE.replace('"e1"', '""')), "clicks", {}),
    (obj(base=BASE.replace('"e1"', '"' + "x" * 128 + '"')), "clicks", {}),
    (obj(base=BASE.replace('"e1"', '"' + "x" * 129 + '"')), "clicks", {}),
    (obj(base=BASE.replace('"e1"', "7")), "clicks", {}),
    (obj(base=BASE.replace('"e1"', "-7")), "clicks", {}),
    (obj(base=BASE.replace('"e1"', "1" * 128)), "clicks", {}),
    (obj(base=BASE.replace('"e1"', "1" * 129)), "clicks", {}),
    (obj(base=BASE.replace('"e1"', "7.0")), "clicks", {}),
    (obj(base=BASE.replace('"e1"', "true")), "clicks", {}),
    (obj(base=BASE.replace('"e1"', "null")), "clicks", {}),
    (obj(base=BASE.replace('"e1"', "[]")), "clicks", {}),
    (obj('"context":{"x":"\\ud800"}'), "clicks", {}),
    (obj('"context":{"\\udfff":1}'), "clicks", {}),
    (obj('"context":{"x":"a\tb"}'), "clicks", {}),
    (obj('"context":{"x":"\x7f"}'), "clicks", {}),
    (("{" + BASE.replace('"e1"', '"é"') + "}").encode("utf-8"), "clicks", {}),
    (("{" + BASE.replace('"e1"', '"é"') + "}").encode("latin-1"), "clicks", {}),
    (obj().replace(b'"i1"', b'"\xed\xa0\x80"'), "clicks", {}),  # an encoded surrogate
    (obj().replace(b'"i1"', b'"\xc0\xaf"'), "clicks", {}),  # overlong
    (obj().replace(b'"i1"', b'"\xf4\x90\x80\x80"'), "clicks", {}),  # beyond U+10FFFF
    # fields, types, event types, forget requests
    (obj('"colour":"red"'), "clicks", {}),
    (obj('"context":null'), "clicks", {}),
    (obj('"context":[1]'), "clicks", {}),
    (obj('"context":"x"'), "clicks", {}),
    (obj('"context":{}'), "forget-requests", {}),
    (obj('"event_type":"click"'), "clicks", {}),
    (obj('"event_type":"purchase"'), "clicks", {}),
    (obj('"event_type":"purchase"'), "purchases", {}),
    (obj('"event_type":"like"'), "clicks", {}),
    (obj('"event_type":null'), "clicks", {}),
    (obj('"event_type":1'), "clicks", {}),
    (obj('"event_type":"forget"'), "clicks", {}),
    (obj('"event_type":"forget"'), "clicks", {"allow_forget": True}),
    (obj('"event_type":"forget"'), "clicks", {"allow_forget": True, "key": b"x"}),
    (obj('"event_type":"forget"', BASE.replace(',"item_id":"i1"', "")), "clicks", {}),
    (
        obj('"event_type":"forget"', BASE.replace(',"item_id":"i1"', "")),
        "clicks",
        {"allow_forget": True},
    ),
    (obj(base=BASE.replace(',"item_id":"i1"', "")), "forget-requests", {}),
    (obj(base=BASE.replace(',"item_id":"i1"', "")), "forget-requests", {"key": b"u1"}),
    (obj(base=BASE.replace(',"item_id":"i1"', "")), "forget-requests", {"key": b"u9"}),
    (obj('"event_type":"forget"', BASE.replace(',"item_id":"i1"', "")), "forget-requests", {}),
    (obj('"event_type":"click"', BASE.replace(',"item_id":"i1"', "")), "forget-requests", {}),
    (obj('"event_type":null', BASE.replace(',"item_id":"i1"', "")), "forget-requests", {}),
    (obj(base=BASE.replace(',"item_id":"i1"', "")), "clicks", {}),
    (obj(base=BASE.replace('"i1"', "null")), "clicks", {}),
    (obj(base=BASE.replace('"i1"', "0")), "clicks", {}),
]


def _nested(depth: int, where: str = "context") -> bytes:
    inner = "1"
    for i in range(depth):
        inner = "[" + inner + "]" if i % 2 else '{"k":' + inner + "}"
    return obj(f'"{where}":{{"n":{inner}}}')


# whitespace: JSON's four, and others no JSON parser may take for it
for ws in [b"\t", b"\r\n", b" ", b"\f", b"\v", b"\x00", b"\x1c", b"\xc2\xa0", b"\xe2\x80\xa8"]:
    body = obj()[1:-1]
    CASES += [
        (ws + obj(), "clicks", {}),
        (obj() + ws, "clicks", {}),
        (b"{" + ws + body + b"}", "clicks", {}),
        (b"{" + body.replace(b":", ws + b":", 1) + b"}", "clicks", {}),
        (b"{" + body.replace(b",", b"," + ws, 1) + b"}", "clicks", {}),
    ]
# escaped keys: the same key spelt twice is a repeated key
CASES += [
    (obj(base=BASE.replace('"event_id"', '"event\\u005fid"')), "clicks", {}),
    (obj('"event\\u005fid":"e2"'), "clicks", {}),
    (obj('"context":{"a":1,"\\u0061":2}'), "clicks", {}),
    (obj(base=BASE.replace('"e1"', '"e\\/1"')), "clicks", {}),
]
CASES += [(_nested(d), "clicks", {}) for d in (29, 30, 31, 32, 33, 200)]
CASES += [(obj('"context":{"s":"' + "[{" * 40 + '"}'), "clicks", {})]  # brackets in a string
CASES += [(b"[" * 100_000, "clicks", {"max_bytes": 10**6})]
CASES += [(b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "clicks", {"max_bytes": 10**6})]


@pytest.mark.parametrize(("raw", "topic", "kw"), CASES)
def test_named_cases_agree(raw, topic, kw):
    agree(raw, topic, **kw)


def test_the_fast_path_is_taken_for_valid_events():
    for raw, topic, kw in [
        (obj(), "clicks", {"key": b"u1", "require_key": True}),
        (obj('"price":9.5,"quantity":2,"event_type":"purchase"'), "purchases", {}),
        (obj('"context":{"page":"home","pos":[1,2,{"a":null}]}'), "clicks", {}),
        (obj('"context":{"url":"http://x:80/"}'), "clicks", {}),  # a colon in a string
        (obj(base=BASE.replace(',"item_id":"i1"', "")), "forget-requests", {"key": b"u1"}),
        (obj(base=BASE.replace('"e1"', '"\\u00e9"')), "clicks", {}),
        (json.dumps({"event_id": 1, "user_id": 2, "item_id": 3, "ts": 1}).encode(), "clicks", {}),
    ]:
        fast = events._fast(
            raw,
            topic,
            kw.get("key"),
            kw.get("require_key", False),
            16_384,
            3600.0,
            NOW,
        )
        assert isinstance(fast, Event | Forget), raw
        assert fast == validate_event_slow(raw, topic, now=NOW, **kw)


# --------------------------------------------------------------------------- generated


_JUNK_VALUES = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "9" * 400,
    "1e-400",
    "-0",
    "-0.0",
    "01",
    "1.",
    "+1",
    "true",
    "false",
    "null",
    "[]",
    "{}",
    '"\\ud800"',
    '"\\udc00\\ud800"',
    '"\\ud83d\\ude00"',
    '"a\\u0000b"',
    '"\\x"',
    '"a\tb"',
    '"é"',
    '"e\\u0301"',
    '"a\\u200bb"',
    '"\\u00e9"',
    '{"a":{"a":1,"a":2}}',
    '{"x":"\\":"}',
    '{"x" :1}',
    "[1,2,",
    '{"a":[1,{"b":NaN}]}',
    '"' + "x" * 129 + '"',
    "18446744073709551616",
    "-1",
    "1.5",
    "1e5",
]


def _id_text(rng: random.Random, junk: float) -> str:
    r = rng.random() * (1 + junk * 4)
    if r < 0.7:
        return json.dumps(rng.choice(["u", "e", "i", "user-", "x_"]) + str(rng.randint(0, 10**6)))
    if r < 0.75:
        return str(rng.randint(0, 10**9))
    if r < 0.85:
        s = rng.choice(
            ["é", "ü1", "日本", "a b", "", "a\u200bb", "e\u0301", "x" * 128, "\U0001f600"]
        )
        return json.dumps(s, ensure_ascii=rng.random() < 0.5)
    return rng.choice(_JUNK_VALUES)


def _value_text(rng: random.Random, field: str, junk: float, topic: str) -> str:
    if rng.random() < junk:
        return rng.choice(_JUNK_VALUES)
    if field in ("event_id", "user_id", "item_id"):
        return _id_text(rng, junk)
    if field == "ts":
        return repr(
            rng.choice([NOW - rng.random() * 1e6] * 4 + [NOW + 3600, NOW + 4000, -1.0, 0, NOW // 1])
        )
    if field == "event_type":
        if rng.random() < junk * 2:
            return json.dumps(rng.choice(["click", "purchase", "forget", "like"]))
        return json.dumps({"clicks": "click", "purchases": "purchase"}.get(topic, "forget"))
    if field == "price":
        return repr(rng.choice([9.99, 0.0, 1e9, 1e9 + 1, -1.0, 3]))
    if field == "quantity":
        return str(rng.choice([1, 2, 0, 1_000_000, 1_000_001]))
    if field == "context":
        ctx = rng.choice(
            [
                {"page": "home"},
                {"page": "p:1", "pos": [1, 2.5, None]},
                {"a": {"b": {"c": [True, "x\\"]}}},
                {},
                None,
            ]
        )
        return json.dumps(ctx, ensure_ascii=rng.random() < 0.5)
    return json.dumps("x")


def _record(rng: random.Random, topic: str) -> bytes:
    junk = rng.choice([0.0, 0.0, 0.05, 0.2])
    names = ["event_id", "user_id", "ts"]
    if topic != "forget-requests" or rng.random() < junk:
        names.append("item_id")
    for f in ("event_type", "price", "quantity", "context"):
        if rng.random() < (0.5 if topic == "purchases" or f in ("event_type", "context") else junk):
            names.append(f)
    if rng.random() < junk:
        names.remove(rng.choice(names))
    if rng.random() < junk:
        names.append(rng.choice(["colour", "", "EVENT_ID", "ts "]))
    if rng.random() < 0.05:
        names.append(rng.choice(names))  # a repeated key
    rng.shuffle(names)
    colon = rng.choice([":", ":", ":", " :", ": ", "\t:\n"])
    comma = rng.choice([",", ",", ", ", "\n,"])
    body = comma.join(json.dumps(n) + colon + _value_text(rng, n, junk, topic) for n in names)
    raw = ("{" + body + "}").encode("utf-8", "surrogatepass")
    r = rng.random() * (1 + junk * 5)
    if r < 0.9:
        pass
    elif r < 0.93:
        raw = b"\xef\xbb\xbf" + raw
    elif r < 0.96:
        i = rng.randrange(len(raw))
        raw = raw[:i] + rng.choice([b"\xff", b"\x80", b"\xed\xa0\x80", b"\x00", b"\\"]) + raw[i:]
    elif r < 0.99:
        raw = raw[: rng.randrange(len(raw))]
    elif r < 1.02:
        raw = raw + rng.choice([b"}", b" ", b"x", b"\n"])
    elif r < 1.05:
        raw = b"[" + raw + b"]"
    return raw


def test_generated_records_agree():
    rng = random.Random(23)
    seen = {"fast": 0, "event": 0, "forget": 0, "rejection": 0}
    reasons: set[str] = set()
    for _ in range(20_000):
        topic = rng.choice(["clicks", "purchases", "forget-requests", "clicks", "purchases"])
        raw = _record(rng, topic)
        if rng.random() < 0.02:
            topic = rng.choice(TOPICS)
        kw: dict = {}
        r = rng.random()
        if r < 0.6:
            try:
                user = json.loads(raw).get("user_id")
                kw["key"] = str(user).encode() if user is not None else b"u1"
            except Exception:  # noqa: BLE001 - any key will do
                kw["key"] = b"u1"
        elif r < 0.65:
            kw["key"] = b"someone"
        kw["require_key"] = rng.random() < 0.5 if "key" in kw else rng.random() < 0.05
        kw["allow_forget"] = rng.random() < 0.2
        if rng.random() < 0.05:
            kw["max_bytes"] = rng.choice([16, 64, 100])
        got = agree(raw, topic, **kw)
        if isinstance(got, Rejection):
            seen["rejection"] += 1
            reasons.add(got.reason)
        else:
            seen["event" if isinstance(got, Event) else "forget"] += 1
            kw.setdefault("now", NOW)
            alone = events._fast(
                raw,
                topic,
                kw.get("key"),
                kw["require_key"],
                kw.get("max_bytes", 16_384),
                3600.0,
                NOW,
            )
            seen["fast"] += alone is not None
    # the generator reaches both sides, many reasons, and the fast path takes most valid ones
    assert seen["event"] > 2000 and seen["forget"] > 20 and seen["rejection"] > 5000, seen
    assert seen["fast"] > 0.9 * (seen["event"] + seen["forget"]) - 50, seen
    assert len(reasons) >= 18, reasons


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.floats()  # NaN and infinities included: json.dumps writes them as NaN/Infinity
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.text(max_size=12),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=12,
)


@settings(max_examples=1500, deadline=None)
@given(
    st.dictionaries(st.sampled_from(FIELDS + ["x"]), _json, max_size=9),
    st.sampled_from(["clicks", "purchases", "forget-requests"]),
    st.booleans(),
    st.sampled_from(["", "dup", "bom", "cut", "byte"]),
    st.integers(min_value=0),
)
def test_arbitrary_json_agrees(body, topic, ascii_only, mutation, pos):
    full = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "ts": NOW - 5}
    full.update(body)
    raw = json.dumps(full, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    if mutation == "dup":
        raw = raw[:-1] + b',"' + sorted(full)[pos % len(full)].encode() + b'":"e2"}'
    elif mutation == "bom":
        raw = b"\xef\xbb\xbf" + raw
    elif mutation == "cut":
        raw = raw[: pos % len(raw)]
    elif mutation == "byte":
        i = pos % len(raw)
        raw = raw[:i] + bytes([pos % 256]) + raw[i + 1 :]
    agree(raw, topic, key=b"u1" if pos % 3 else None)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_agree(raw):
    agree(raw, "clicks")
    agree(b'{"event_id":"e","user_id":"u","item_id":"i","ts":1,"context":' + raw + b"}")


@settings(max_examples=300, deadline=None)
@given(
    st.text(min_size=1, max_size=20),
    st.text(min_size=1, max_size=20),
    st.floats(min_value=0, max_value=NOW),
)
def test_event_payload_round_trips(user, item, ts):
    raw = event_payload(user, item, event_id="e-1", ts=ts)
    got = agree(raw)
    if isinstance(got, Event):
        assert (got.user_id, got.item_id, got.ts) == (user, item, ts)


# --------------------------------------------------------------------------- encoding


def _rec(**over):
    kw = {
        "event_id": "e1",
        "user_id": "u1",
        "items": [("7", 0.5), ("a\\b", 0.1234567)],
        "model_version": "v000001",
        "cold_start": True,
        "produced_at": 1_700_000_000.123456,
        "latency_ms": 12.3456789,
        "fallback": None,
    }
    kw.update(over)
    return kw


SCORES = [
    0.5,
    -2.0,
    0.1234567,
    1e-300,
    5e-324,
    -0.0,
    0.0,
    3,
    True,
    123456789.0,
    1e299,
    9.999999e299,
    9.9999995e299,
    1e300,
    -1e300,
    1e301,
    math.inf,
    -math.inf,
    math.nan,
    1.7976931348623157e308,
]


@pytest.mark.parametrize("score", SCORES, ids=[repr(s) for s in SCORES])
def test_encode_scores_byte_identical(score):
    for items in ([("1", score)], [("1", 0.25), ("2", score), ("3", -1.5)]):
        kw = _rec(items=items)
        assert recommendation_payload(**kw) == recommendation_payload_slow(**kw)


@pytest.mark.parametrize(
    "latency", [0.0, 1e-9, 2.25, 12.3456789, 1e12, 1e299, 1e300, math.inf, math.nan, -1.0]
)
def test_encode_latency_byte_identical(latency):
    kw = _rec(latency_ms=latency)
    assert recommendation_payload(**kw) == recommendation_payload_slow(**kw)


@pytest.mark.parametrize(
    "over",
    [
        {"items": []},
        {"fallback": "popular"},
        {"fallback": "forgotten", "items": [], "latency_ms": 0.0},
        {"cold_start": False},
        {"cold_start": 0},
        {"produced_at": 2},
        {"produced_at": 1e16},
        {"produced_at": 1.5},
        {"event_id": 'e"1\\', "user_id": "ü\n\t\x00\x1f\x7f\u2028"},
        {"items": [("100%", 0.5), ("%s%d%%", 0.25), ("%.6g", 1.0)]},
        {"items": [("é", 0.5), ("\U0001f600", 0.25), ("\u2029", 1.0)]},
        {"model_version": 3},
        {"items": [("1", 0.5)] * 200},
        {"arm": "canary"},
        {"arm": 'x"y'},
    ],
)
def test_encode_byte_identical(over):
    kw = _rec(**over)
    assert recommendation_payload(**kw) == recommendation_payload_slow(**kw)


def test_encode_lone_surrogate_raises_as_before():
    kw = _rec(user_id="\ud800")
    with pytest.raises(UnicodeEncodeError):
        recommendation_payload_slow(**kw)
    with pytest.raises(UnicodeEncodeError):
        recommendation_payload(**kw)


def test_orjson_escapes_every_character_as_the_standard_library():
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for i in range(0, len(chars), 4096):
        s = "".join(chars[i : i + 4096])
        assert orjson.dumps(s) == dumps(s).encode()
    for c in range(0x80):
        assert orjson.dumps(chr(c)) == dumps(chr(c)).encode(), c


@settings(max_examples=1000, deadline=None)
@given(
    st.text(max_size=30),
    st.text(max_size=30),
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=20),
            st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**6), 10**6),
        ),
        max_size=12,
    ),
    st.text(max_size=10) | st.integers(0, 10**6),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False, min_value=0),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none() | st.sampled_from(["popular", "forgotten", "model_error", "empty_ranking"]),
)
def test_encode_round_trips(event_id, user_id, items, version, cold, produced, latency, fb):
    kw = _rec(
        event_id=event_id,
        user_id=user_id,
        items=items,
        model_version=version,
        cold_start=cold,
        produced_at=produced,
        latency_ms=latency,
        fallback=fb,
    )
    try:
        slow = recommendation_payload_slow(**kw)
    except UnicodeEncodeError:  # a lone surrogate: both refuse it alike
        with pytest.raises(UnicodeEncodeError):
            recommendation_payload(**kw)
        return
    raw = recommendation_payload(**kw)
    assert raw == slow
    v = orjson.loads(raw)
    assert v == json.loads(raw)

    def six(x):
        return float(f"{x:.6g}") if -1e300 < x < 1e300 else None

    assert v["event_id"] == event_id and v["user_id"] == user_id
    assert v["model_version"] == version and v["cold_start"] is cold and v["fallback"] == fb
    assert v["items"] == [{"item_id": i, "score": six(s)} for i, s in items]
    assert v["produced_at"] == produced
    assert v["latency_ms"] == six(round(latency, 3))


# --------------------------------------------------------------------------- without them

_WITHOUT = """
import importlib.abc, json, sys

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("msgspec", "orjson"):
            raise ImportError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, Absent())
from coldstream.core import events, records

assert not events._FAST and not records._FAST
raws, rec = json.loads(sys.stdin.read())
out = [repr(events.validate_event(r.encode("latin-1"), "clicks", now=1.7e9)) for r in raws]
out.append(records.recommendation_payload(**rec).decode())
print(json.dumps(out))
"""


def test_a_machine_without_msgspec_and_orjson_takes_the_slow_paths():
    """The GPU check's machine has torch and numpy, not msgspec or orjson, and imports the
    kernel all the same (the student needs EVENT_TYPES): both modules import and answer."""
    import subprocess
    import sys
    from pathlib import Path

    raws = [c[0] for c in CASES[:40] if c[1] == "clicks" and not c[2]]
    rec = _rec()
    p = subprocess.run(
        [sys.executable, "-c", _WITHOUT],
        input=json.dumps([[r.decode("latin-1") for r in raws], rec]),
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got[:-1] == [repr(validate_event(r, "clicks", now=1.7e9)) for r in raws]
    assert got[-1].encode() == recommendation_payload(**rec)
