"""A fuzzer over the whole record, not only its value: key (absent, empty, arbitrary bytes,
up to 1 MB), value (:func:`~devtools.faults.inputs.bad_payload` and good events), headers
(count, size, null values), the record timestamp (0, 1 ms, negative, far future), the
producer's compression codec, the control topics' records, and stateful sequences (a
forget request between a future-stamped event and a late copy of it; a burst of one user
on one partition).

Large keys are rare (they are what took the fleet down: a DLQ record grew to six times the
key), so a million records stay within memory; their share is :data:`LARGE_KEY_SHARE`.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from typing import Any

from coldstream.core.records import event_payload
from devtools.faults.inputs import N_ITEMS, Input, bad_payload

__all__ = ["CODECS", "LARGE_KEY_SHARE", "control_junk", "fuzz_records", "with_codec"]

CODECS = (None, "gzip", "snappy", "lz4", "zstd")
"""Producer compression codecs the fuzzer spreads its records over (``None``: none)."""
LARGE_KEY_SHARE = 0.002
"""Share of records with a key of 1 KB .. 1 MB."""
LARGE_KEY_SIZES = (1_000, 100_000, 170_000, 200_000, 400_000, 900_000, 1_000_000)


def _key(rng: random.Random, user: str) -> tuple[bytes | None, str]:
    """A record key and what kind it is."""
    r = rng.random()
    if r < LARGE_KEY_SHARE:
        fill = rng.choice([b"\xff", b"\x00", b"\x01", b'"', "é".encode(), b"a"])
        return fill * rng.choice(LARGE_KEY_SIZES), "large"
    if r < 0.05:
        return None, "absent"
    if r < 0.07:
        return b"", "empty"
    if r < 0.12:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))), "random"
    if r < 0.14:
        return user.encode() + b"\x00", "almost"
    return user.encode(), "user"


def _headers(rng: random.Random) -> tuple[list[tuple[str, bytes | None]] | None, str]:
    r = rng.random()
    if r < 0.7:
        return None, "none"
    if r < 0.8:
        return [
            (f"h{i}", b"v" * rng.randrange(0, 20)) for i in range(rng.randrange(1, 200))
        ], "many"
    if r < 0.9:
        return [("big", bytes(rng.randrange(256) for _ in range(64)) * rng.randrange(1, 1000))], (
            "large"
        )
    return [("null", None), ("", b""), ("\u202eodd", b"\xff\xfe")], "odd"


def _timestamp(rng: random.Random, now_ms: int) -> tuple[int | None, str]:
    r = rng.random()
    if r < 0.8:
        return None, "producer"
    return rng.choice(
        [
            (0, "zero"),
            (1, "1ms"),
            (-5, "negative"),
            (now_ms + 10 * 365 * 86_400_000, "far_future"),
            (now_ms - 30 * 86_400_000, "month_old"),
        ]
    )


def fuzz_records(n: int, *, seed: int, tag: str) -> tuple[list[Input], dict[str, Counter]]:
    """``n`` records over every dimension; the second value counts each dimension's kinds."""
    rng = random.Random(seed)
    now = time.time()
    now_ms = int(now * 1000)
    kinds: dict[str, Counter] = {
        "key": Counter(),
        "headers": Counter(),
        "timestamp": Counter(),
        "value": Counter(),
    }
    out: list[Input] = []
    i = 0
    while len(out) < n:
        i += 1
        r = rng.random()
        if r < 0.01:  # a stateful sequence: future event, forget, late copy, a new event
            out += _forget_sequence(f"{tag}-fs{i}", now, kinds)
            continue
        if r < 0.012:  # a burst: one user (one partition), 200 events
            user = f"{tag}-burst{i}"
            for j in range(200):
                eid = f"{tag}-b{i}-{j}"
                value = event_payload(user, str(1 + j % N_ITEMS), event_id=eid, ts=now)
                out.append(Input("clicks", user.encode(), value, eid, user))
            kinds["value"]["burst"] += 200
            continue
        user = f"{tag}-u{rng.randrange(5000)}"
        topic = "purchases" if rng.random() < 0.2 else "clicks"
        if rng.random() < 0.5:
            eid = f"{tag}-e{i}"
            value: bytes | None = event_payload(
                user, str(1 + rng.randrange(N_ITEMS)), event_id=eid, ts=now
            )
            kinds["value"]["good"] += 1
        else:
            _, value = bad_payload(rng, now)
            kinds["value"]["hostile"] += 1
        key, kk = _key(rng, user)
        headers, hk = _headers(rng)
        ts, tk = _timestamp(rng, now_ms)
        kinds["key"][kk] += 1
        kinds["headers"][hk] += 1
        kinds["timestamp"][tk] += 1
        eid_valid, user_valid = _accepted(value, topic, key, now)
        out.append(
            Input(topic, key, value, eid_valid, user_valid, headers=headers, timestamp_ms=ts)
        )
    return out[:n], kinds


def _accepted(
    value: bytes | None, topic: str, key: bytes | None, now: float
) -> tuple[str | None, str | None]:
    """``(event_id, user_id)`` when the worker will accept the record (a recommendation is
    then matched by its event id), else ``(None, None)`` (a DLQ record, matched by position)."""
    from coldstream.core.events import Rejection, validate_event

    ev = validate_event(value, topic, key=key, require_key=True, now=now)
    if isinstance(ev, Rejection):
        return None, None
    return ev.event_id, ev.user_id


def _forget_sequence(user: str, now: float, kinds: dict[str, Counter]) -> list[Input]:
    fut = event_payload(user, "3", event_id=user + "-future", ts=now + 3000)
    forget = json.dumps(
        {"event_id": user + "-forget", "user_id": user, "event_type": "forget", "ts": now},
        separators=(",", ":"),
    ).encode()
    # a producer retry of the future event under a new id: older than the marker
    late = event_payload(user, "3", event_id=user + "-late", ts=now + 3000)
    new = event_payload(user, "4", event_id=user + "-new", ts=now + 3001)
    kinds["value"]["forget_sequence"] += 4
    u = user.encode()
    return [
        Input("clicks", u, fut, user + "-future", user),
        Input("forget-requests", u, forget, user + "-forget", user),
        Input("clicks", u, late, user + "-late", user),  # its own event id in the accounting
        Input("clicks", u, new, user + "-new", user),
    ]


def with_codec(inputs: list[Input], seed: int) -> dict[str | None, list[Input]]:
    """The records split over :data:`CODECS` in runs, each run keeping its order."""
    rng = random.Random(seed)
    runs: dict[str | None, list[Input]] = {c: [] for c in CODECS}
    for inp in inputs:
        runs[rng.choice(CODECS)].append(inp)
    return runs


def control_junk(n: int, *, seed: int) -> list[tuple[str, bytes | None, bytes | None]]:
    """``(logical topic, key, value)`` junk for ``model-updates`` and ``item-vectors``:
    random bytes, tombstones, wrong JSON, huge keys, forged-looking records."""
    rng = random.Random(seed)
    out: list[tuple[str, bytes | None, bytes | None]] = []
    for i in range(n):
        topic = rng.choice(["model-updates", "item-vectors"])
        kind = rng.randrange(6)
        key: bytes | None = f"item-{i}".encode()
        value: Any
        if kind == 0:
            value = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 500)))
        elif kind == 1:
            value = None  # a tombstone
        elif kind == 2:
            value = json.dumps(
                {
                    "version": 10**9,
                    "uri": "../../etc/passwd",
                    "sha256": "0" * 64,
                    "signature": "AAAA",
                }
            ).encode()
        elif kind == 3:
            value = json.dumps(
                {"item_id": f"x{i}", "model_version": "1", "vector": [float("nan")] * 4}
            ).encode()
        elif kind == 4:
            key = b"\xff" * rng.choice([1000, 200_000])
            value = b"{}"
        else:
            value = b"[" * 5000
        out.append((topic, key, value))
    return out
