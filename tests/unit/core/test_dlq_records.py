"""``dlq_payload``: a dead-letter record is bounded whatever the refused record was, and it
keeps the original bytes (or their first part, said so) and lengths."""

from __future__ import annotations

import base64
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from coldstream.core.records import DLQ_MAX_BYTES, DLQ_MAX_KEY_BYTES, dlq_key, dlq_payload


def _dlq(key: bytes | None, payload: bytes | None, **kw) -> bytes:
    return dlq_payload(
        source_topic="clicks",
        partition=3,
        offset=7,
        error="key_mismatch",
        detail="key != user_id",
        payload=payload,
        key=key,
        event_id="e1",
        **kw,
    )


def _raw(d: dict, field: str) -> bytes:
    text = d[field]
    return base64.b64decode(text) if d[f"{field}_encoding"] == "base64" else text.encode()


def test_the_audit_record_that_crashed_the_fleet_is_bounded() -> None:
    # finding 1: 200 KB of 0xFF as key (six bytes out per byte in once JSON-escaped) with a
    # payload of control characters: 1.2 MB before, over the producer's 1,000,000 bytes
    key = b"\xff" * 200_000
    payload = bytes(range(32)) * 8000  # 256 KB of control characters (valid UTF-8)
    out = _dlq(key, payload)
    assert len(out) <= DLQ_MAX_BYTES
    d = json.loads(out)
    assert d["key_truncated"] and d["key_bytes"] == 200_000
    assert _raw(d, "key") == key[:DLQ_MAX_KEY_BYTES]
    assert d["payload_truncated"] and d["payload_bytes"] == len(payload)
    assert payload.startswith(_raw(d, "payload")) and len(_raw(d, "payload")) > 90_000
    assert dlq_key(key) is None and dlq_key(b"u1") == b"u1"


def test_a_small_record_is_kept_whole_as_text() -> None:
    d = json.loads(_dlq(b"u1", b'{"event_id": "e1", "user_id": "u2"}'))
    assert (d["key"], d["key_encoding"], d["key_truncated"]) == ("u1", "utf-8", False)
    assert d["payload"] == '{"event_id": "e1", "user_id": "u2"}' and not d["payload_truncated"]
    assert (d["source_topic"], d["partition"], d["offset"], d["event_id"]) == ("clicks", 3, 7, "e1")


@settings(max_examples=300, deadline=None)
@given(
    key=st.one_of(st.none(), st.binary(max_size=2000), st.integers(0, 1_100_000)),
    payload=st.one_of(st.none(), st.binary(max_size=3000), st.integers(0, 1_100_000)),
    cap=st.sampled_from([4096, 20_000, DLQ_MAX_BYTES]),
    fill=st.sampled_from([b"\x00", b"\xff", b"\xe9", b'"', "é".encode(), b"a"]),
)
def test_no_input_makes_a_dlq_record_over_the_cap(key, payload, cap, fill) -> None:
    # integers stand for inputs up to 1.1 MB made of one byte (escape-heavy or not)
    k = fill * key if isinstance(key, int) else key
    p = fill * payload if isinstance(payload, int) else payload
    out = _dlq(k, p, max_bytes=cap)
    assert len(out) <= cap
    d = json.loads(out)
    assert (p or b"").startswith(_raw(d, "payload"))
    assert d["payload_bytes"] == len(p or b"")
    if k is not None:
        assert k.startswith(_raw(d, "key")) and d["key_bytes"] == len(k)
