"""The inputs of the fault scenarios: good events, hostile payloads, and which of them the
validator must refuse.

Every produced record is an :class:`Input`: what was sent (logical topic, key, value, the
event id and user where the payload has valid ones) and, once the broker acknowledged it,
where it landed (``pos``: logical topic, partition, offset) -- outputs are matched back to
inputs by event id (recommendations) or by that position (DLQ records).
"""

from __future__ import annotations

import json
import random
import string
import time
import uuid
from dataclasses import dataclass
from typing import Any

from coldstream.core.records import event_payload

__all__ = [
    "N_ITEMS",
    "Input",
    "bad_events",
    "bad_payload",
    "expected_rejections",
    "good_events",
    "interleave",
]

N_ITEMS = 200
"""Items of the scenarios' random model (ids ``"1" .. "200"``)."""


@dataclass
class Input:
    """One produced record: what was sent and where it landed."""

    topic: str  # logical
    key: bytes | None
    value: bytes | None
    event_id: str | None
    user: str | None
    pos: tuple[str, int, int] | None = None  # (logical topic, partition, offset)
    headers: list[tuple[str, bytes | None]] | None = None
    timestamp_ms: int | None = None
    """The record timestamp (``None``: the producer's clock)."""
    refused: str | None = None
    """Why the producer or the broker refused the record (then it is no input)."""


def good_events(n: int, *, n_users: int, tag: str, seed: int = 0) -> list[Input]:
    """``n`` valid events over ``n_users`` users, 80% clicks, 20% purchases."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        user = f"{tag}-u{rng.randrange(n_users)}"
        eid = f"{tag}-e{i}"
        topic = "purchases" if rng.random() < 0.2 else "clicks"
        value = event_payload(user, str(1 + rng.randrange(N_ITEMS)), event_id=eid, ts=time.time())
        out.append(Input(topic, user.encode(), value, eid, user))
    return out


def _rand_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.printable) for _ in range(n))


def bad_payload(rng: random.Random, now: float) -> tuple[bytes | None, bytes | None]:
    """One hostile ``(key, value)``: random bytes, wrong types, missing/extra fields, huge
    strings and arrays, NaN/Infinity, negative and far-future timestamps, invalid UTF-8.

    Deliberately not built with ``event_payload``: each kind starts from a valid event as a
    dict and breaks it (a field removed, retyped, or the serialised text itself corrupted)."""
    user = f"bad-{rng.randrange(1000)}"
    base: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "user_id": user,
        "item_id": str(rng.randrange(1, N_ITEMS)),
        "ts": now,
    }
    kind = rng.randrange(20)
    key: bytes | None = user.encode()
    if kind == 0:
        return key, bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
    if kind == 1:
        f = rng.choice(["event_id", "user_id", "item_id", "ts"])
        base[f] = rng.choice([[1, 2], {"a": 1}, True, 1.5, "" if f != "ts" else "now", None])
    elif kind == 2:
        del base[rng.choice(["event_id", "user_id", "item_id", "ts"])]
    elif kind == 3:
        base[_rand_text(rng, 8).replace('"', "")] = rng.random()
    elif kind == 4:
        base["item_id"] = "x" * rng.randrange(200, 40_000)
    elif kind == 5:
        base["context"] = list(range(rng.randrange(1000, 10_000)))
    elif kind == 6:
        raw = json.dumps(base).replace(
            f'"ts": {now!r}', '"ts": ' + rng.choice(["NaN", "Infinity", "-Infinity", "1e999"])
        )
        return key, raw.encode()
    elif kind == 7:
        base["ts"] = -rng.uniform(1, 1e9)
    elif kind == 8:
        base["ts"] = now + rng.uniform(1e5, 1e12)
    elif kind == 9:
        raw = json.dumps(base).encode()
        i = rng.randrange(len(raw))
        return key, raw[:i] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"]) + raw[i:]
    elif kind == 10:
        base["user_id"] = rng.choice(["a b", "\x00", "", "é\n"])
    elif kind == 11:
        return key, rng.choice([b"[]", b"null", b"42", b'"str"', b"{", b"{}", b""])
    elif kind == 12:
        base["event_type"] = rng.choice(["like", "", "purchase", "FORGET", "forget"])
    elif kind == 13:  # a lone surrogate escape: valid JSON, not text
        field = rng.choice(["user_id", "item_id", "event_id"])
        raw = json.dumps(base).replace(f'"{base[field]}"', f'"{base[field]}\\ud800"', 1)
        return key, raw.encode()
    elif kind == 14:  # deep nesting (the parser's recursion)
        depth = rng.randrange(40, 5000)
        return key, ("[" * depth + "]" * depth).encode()
    elif kind == 15:  # nested deep inside an otherwise valid event
        depth = rng.randrange(40, 3000)
        raw = json.dumps(base)[:-1] + ', "context": ' + '{"a":' * depth + "1" + "}" * depth + "}"
        return key, raw.encode()
    elif kind == 16:  # huge numbers
        base["ts"] = rng.choice([10**400, -(10**30), 2**64])
    elif kind == 17:  # control, bidi and zero-width characters in ids
        base[rng.choice(["user_id", "item_id"])] = (
            "ab" + rng.choice(["\u202e", "\u200b", "\u0007", "\ufeff", "\u2066"]) + "cd"
        )
    elif kind == 18:  # no key at all
        key = None
    else:
        key = b"someone-else"
    return key, json.dumps(base).encode()


def bad_events(n: int, *, seed: int = 1) -> list[Input]:
    """Hostile payloads; some happen to be valid (e.g. ``ts: 1.5``): :func:`expected_rejections`
    says which must go to the DLQ. ``event_id`` is set where a recommendation would carry it."""
    from coldstream.core.events import Rejection, validate_event

    rng = random.Random(seed)
    now = time.time()
    out = []
    for _ in range(n):
        k, v = bad_payload(rng, now)
        topic = rng.choice(["clicks", "purchases"])
        ev = validate_event(v, topic, key=k, require_key=True)  # as the worker does
        valid = not isinstance(ev, Rejection)
        out.append(
            Input(topic, k, v, ev.event_id if valid else None, ev.user_id if valid else None)
        )
    return out


def expected_rejections(inputs: list[Input]) -> dict[int, str]:
    """Index -> reason, for the inputs the validator refuses (the DLQ must hold exactly these)."""
    from coldstream.core.events import Rejection, validate_event

    out = {}
    for i, inp in enumerate(inputs):
        ev = validate_event(inp.value, inp.topic, key=inp.key, require_key=True)
        if isinstance(ev, Rejection):
            out[i] = ev.reason
    return out


def interleave(a: list[Input], b: list[Input], seed: int = 2) -> list[Input]:
    """``a`` and ``b`` merged at random, each keeping its own order."""
    rng = random.Random(seed)
    out, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        if j >= len(b) or (i < len(a) and rng.random() < len(a) / (len(a) + len(b))):
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out
