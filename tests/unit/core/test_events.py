"""Validation of raw input events: every rejection reason, and the accepted forms."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coldstream.core.events import REASONS, Event, Rejection, validate_event

NOW = 1_700_000_000.0


def ok(**over):
    body = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "ts": NOW - 10}
    body.update(over)
    return json.dumps(body).encode()


def check(raw, topic="clicks", **kw):
    return validate_event(raw, topic, now=NOW, **kw)


CASES = [
    ("empty", b"", "clicks", {}),
    ("oversize", ok(item_id="x" * 100), "clicks", {"max_bytes": 64}),
    ("invalid_utf8", b'{"event_id": "\xff\xfe"}', "clicks", {}),
    ("invalid_json", b'{"event_id": ', "clicks", {}),
    (
        "duplicate_field",
        b'{"event_id":"a","event_id":"b","user_id":"u","item_id":"i","ts":1}',
        "clicks",
        {},
    ),
    ("not_object", b"[1, 2, 3]", "clicks", {}),
    ("non_finite", b'{"event_id":"e","user_id":"u","item_id":"i","ts":NaN}', "clicks", {}),
    ("unknown_topic", ok(), "items", {}),
    (
        "missing_field",
        json.dumps({"event_id": "e", "user_id": "u", "ts": 1}).encode(),
        "clicks",
        {},
    ),
    ("wrong_type", ok(ts="yesterday"), "clicks", {}),
    ("bad_id", ok(user_id="has space"), "clicks", {}),
    ("ts_negative", ok(ts=-5), "clicks", {}),
    ("ts_future", ok(ts=NOW + 10 * 86400), "clicks", {}),
    ("out_of_range", ok(price=-1.0), "purchases", {}),
    ("unknown_event_type", ok(event_type="like"), "clicks", {}),
    ("event_type_mismatch", ok(event_type="purchase"), "clicks", {}),
    ("key_mismatch", ok(), "clicks", {"key": b"someone-else"}),
    ("unknown_field", ok(colour="red"), "clicks", {}),
]


@pytest.mark.parametrize(("reason", "raw", "topic", "kw"), CASES, ids=[c[0] for c in CASES])
def test_each_reason(reason, raw, topic, kw):
    r = check(raw, topic, **kw)
    assert isinstance(r, Rejection), r
    assert r.reason == reason, r
    assert r.detail


def test_at_least_ten_distinct_reasons_covered():
    assert len({c[0] for c in CASES}) >= 10
    assert {c[0] for c in CASES} <= set(REASONS)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"event_id":"e","user_id":"u","item_id":"i","ts":1e999}',
        b'{"event_id":"e","user_id":"u","item_id":"i","ts":-Infinity}',
        b'{"event_id":"e","user_id":"u","item_id":"i","ts":' + b"9" * 400 + b"}",
    ],
)
def test_non_finite_numbers(raw):
    r = check(raw)
    assert isinstance(r, Rejection) and r.reason == "non_finite"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("user_id", "", "bad_id"),
        ("user_id", "a\x00b", "bad_id"),
        ("item_id", "x" * 129, "bad_id"),
        ("item_id", -3, "bad_id"),
        ("item_id", True, "wrong_type"),
        ("user_id", 1.5, "wrong_type"),
        ("ts", True, "wrong_type"),
        ("event_id", None, "missing_field"),
        ("context", [1], "wrong_type"),
    ],
)
def test_field_checks(field, value, reason):
    r = check(ok(**{field: value}))
    assert isinstance(r, Rejection) and r.reason == reason, r


def test_valid_click_normalises_int_ids():
    r = check(ok(user_id=42, item_id=7, context={"page": "home"}), key=b"42")
    assert isinstance(r, Event)
    assert (r.user_id, r.item_id, r.event_type, r.type_code) == ("42", "7", "click", 0)


def test_valid_purchase():
    r = check(ok(price=9.5, quantity=2, event_type="purchase"), "purchases")
    assert isinstance(r, Event)
    assert (r.event_type, r.price, r.quantity) == ("purchase", 9.5, 2)


def test_bad_quantity_and_price():
    assert check(ok(quantity=0), "purchases").reason == "out_of_range"
    assert check(ok(quantity=1.5), "purchases").reason == "wrong_type"
    assert check(ok(price=1e12), "purchases").reason == "out_of_range"


def test_rejection_keeps_event_id_when_readable():
    r = check(ok(ts=-1))
    assert isinstance(r, Rejection) and r.event_id == "e1"


def test_unknown_reason_refused():
    with pytest.raises(ValueError):
        Rejection("nope", "x")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_never_raises_on_arbitrary_bytes(raw):
    r = check(raw)
    assert isinstance(r, Event | Rejection)
    if isinstance(r, Rejection):
        assert r.reason in REASONS


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=5),
        max_leaves=20,
    )
)
def test_never_raises_on_arbitrary_json(value):
    raw = json.dumps(value).encode()
    r = check(raw)
    assert isinstance(r, Event | Rejection)


# --------------------------------------------------------------------------- one schema


def test_event_schema_is_the_topics_file():
    from coldstream.core.events import REQUIRED, allowed_fields
    from coldstream.core.topics import load_topics

    specs = load_topics()
    for topic in ("clicks", "purchases"):
        assert set(specs[topic].value.field_names(required_only=True)) == set(REQUIRED)
        assert allowed_fields(topic) == set(specs[topic].value.field_names())
    # a field the file does not declare is refused, one it declares is accepted
    base = {"event_id": "e", "user_id": "u", "item_id": "i", "ts": 1.0}
    assert (
        validate_event(json.dumps({**base, "price": 2.5}).encode(), "purchases").__class__.__name__
        == "Event"
    )
    assert (
        validate_event(json.dumps({**base, "price": 2.5}).encode(), "clicks").reason
        == "unknown_field"
    )


def test_record_types_match_the_topics_file():
    from coldstream.core.records import (
        ClickEvent,
        DlqRecord,
        PurchaseEvent,
        Recommendation,
        field_names,
    )
    from coldstream.core.topics import load_topics

    specs = load_topics()
    assert set(field_names(Recommendation)) == set(specs["recommendations"].value.field_names())
    assert set(field_names(DlqRecord)) == set(specs["events-dlq"].value.field_names())
    assert set(field_names(ClickEvent)) <= set(specs["clicks"].value.field_names())
    assert set(field_names(PurchaseEvent)) <= set(specs["purchases"].value.field_names())
