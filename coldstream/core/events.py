"""Validation of raw input events (``clicks``, ``purchases``, ``forget-requests``): bytes in,
``Event``, ``Forget`` or ``Rejection`` out.

A forget request (privacy, ``docs/privacy.md``) is a record on its own topic,
``forget-requests`` (key: user_id; co-partitioned with the event topics; writable only by the
privacy service's principal, kafka/strimzi ACLs): ``event_id``, ``user_id`` and ``ts``
are required, ``"event_type": "forget"`` is optional there. On ``clicks``/``purchases``,
where any producer can write, ``"event_type": "forget"`` is refused (``forget_not_allowed``)
unless ``allow_forget=True`` (a development setting).

A pure function, no broker: every reason below is a stable, metric-friendly code
(``coldstream_dlq_total{reason=...}``, ``events-dlq.error``).
"""

from __future__ import annotations

import json
import math
import operator
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

from coldstream.core.topics import load_topics

try:
    import msgspec
    from msgspec import UNSET, UnsetType
except ImportError:  # pragma: no cover - a partial environment: see _FAST
    _FAST = False
else:
    _FAST = True
"""Whether the fast decoder is there. msgspec is a dependency (pyproject.toml), but a
machine with a partial package set (the GPU check's: torch and numpy, no msgspec,
devtools/gpu/payload.py) imports this module all the same (the student needs
:data:`EVENT_TYPES`); there every record takes :func:`validate_event_slow`."""

EVENT_TYPES: dict[str, int] = {"click": 0, "purchase": 1}
"""Event types and their codes (the student's event-type embedding rows)."""

#: Every rejection reason, with what it means.
REASONS: dict[str, str] = {
    "empty": "zero-length payload",
    "oversize": "payload larger than max_event_bytes",
    "invalid_utf8": "payload is not valid UTF-8",
    "invalid_json": "payload is not JSON (or nested too deeply)",
    "invalid_text": "a string holds an escape that is not a Unicode character (a lone surrogate)",
    "duplicate_field": "a JSON object repeats a key",
    "not_object": "payload is JSON but not an object",
    "non_finite": "NaN or Infinity in a number",
    "unknown_topic": "event read from a topic that carries no user events",
    "missing_field": "a required field is absent or null",
    "wrong_type": "a field has the wrong JSON type",
    "bad_id": "an id is empty, too long, negative, not NFC-normalised, or has whitespace, control, "
    "format (bidi, zero-width), private-use or unassigned characters",
    "ts_negative": "timestamp before the epoch",
    "ts_future": "timestamp too far in the future",
    "out_of_range": "a number outside its allowed range (price, quantity)",
    "unknown_event_type": "event_type is not one of " + ", ".join([*EVENT_TYPES, "forget"]),
    "event_type_mismatch": "event_type disagrees with the topic",
    "key_mismatch": "the record key is not the event's user_id",
    "missing_key": "the record has no key (it must be the user_id: partitioning and sessions rely on it)",
    "forget_not_allowed": "a forget request on an event topic (they go to forget-requests)",
    "unknown_field": "a field that no event schema declares",
    "processing_error": "the worker failed to process a valid event (bug or model failure)",
    "output_too_large": "the recommendation for a valid event was refused by the broker for size",
}

FORGET = "forget"
"""``event_type`` of a deletion request: the worker drops the user's session state."""

TOPIC_EVENT_TYPE = {"clicks": "click", "purchases": "purchase"}
FORGET_TOPIC = "forget-requests"
"""The topic of deletion requests (``docs/privacy.md``)."""
INPUT_TOPICS = ("clicks", "purchases", FORGET_TOPIC)
"""The topics the worker consumes events from (co-partitioned, keyed by user_id)."""
REQUIRED = ("event_id", "user_id", "item_id", "ts")
"""The fields every event must carry (``kafka/topics.yaml`` declares the same: a unit test)."""


@cache
def allowed_fields(topic: str) -> frozenset[str]:
    """The value fields an event on ``topic`` may carry: its ``kafka/topics.yaml`` schema, the
    one place the event schema is written."""
    return frozenset(load_topics()[topic].value.field_names())


MAX_ID_LEN = 128
MAX_PRICE = 1e9
MAX_QUANTITY = 1_000_000
_BAD_ID_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")
_BAD_ID_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
"""Unicode categories refused in ids: controls, format characters (bidi marks, zero-width
joiners), surrogates, private use, unassigned, separators."""
MAX_NESTING = 32
"""Deepest JSON nesting accepted (an event is a flat object with one small ``context``)."""


@dataclass(frozen=True, slots=True)
class Event:
    """A valid user event; ids normalised to strings, ``ts`` in seconds since the epoch."""

    event_id: str
    user_id: str
    item_id: str
    ts: float
    event_type: str
    price: float | None = None
    quantity: int | None = None

    @property
    def type_code(self) -> int:
        return EVENT_TYPES[self.event_type]


@dataclass(frozen=True, slots=True)
class Forget:
    """A valid request to forget ``user_id`` (``"event_type": "forget"``): not an :class:`Event`,
    so nothing that learns from events (session, trainer buffer) takes it for one."""

    event_id: str
    user_id: str
    ts: float


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an event was refused: ``reason`` (one of :data:`REASONS`) and a human ``detail``."""

    reason: str
    detail: str
    event_id: str | None = None
    """The event id when one could be read (lets producers match DLQ records to events)."""

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown rejection reason {self.reason!r}")


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Reject("duplicate_field", f"key {k!r} appears twice")
        out[k] = v
    return out


def _no_constants(name: str) -> Any:
    raise _Reject("non_finite", f"{name} is not a finite number")


def _finite_float(s: str) -> float:
    v = float(s)
    if not math.isfinite(v):  # 1e999 parses as inf
        raise _Reject("non_finite", f"{s[:40]} overflows to infinity")
    return v


_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_constant=_no_constants, parse_float=_finite_float
)


_KEY = re.compile(r'"\s*:')


def _decode(text: str) -> Any:
    """Parse JSON refusing duplicate keys and non-finite numbers.

    Fast path: the C parser, accepted only for a flat object whose key count equals the
    number of ``":`` in the text (a duplicate key, a nested object or a string holding
    ``":`` makes them differ) and whose numbers are finite. Anything else is parsed again
    by the strict (slower) decoder, which names the exact problem."""
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None  # the strict decoder below reports it
    except RecursionError:
        raise _Reject("invalid_json", "nested too deeply") from None
    if isinstance(obj, dict) and len(_KEY.findall(text)) == len(obj):
        for v in obj.values():
            if type(v) is float and not math.isfinite(v):
                break
            if isinstance(v, dict | list):
                break
        else:
            return obj
    try:
        return _DECODER.decode(text)
    except ValueError as e:
        raise _Reject("invalid_json", str(e)[:200]) from None
    except RecursionError:
        raise _Reject("invalid_json", "nested too deeply") from None


def _too_deep(text: str) -> bool:
    """True when brackets nest deeper than :data:`MAX_NESTING` (strings skipped): checked
    before parsing, so a hostile payload never reaches the parser's recursion."""
    if text.count("[") + text.count("{") <= MAX_NESTING:
        return False
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _has_lone_surrogate(obj: Any) -> bool:
    """Whether any string (key or value, at any depth) holds a lone surrogate."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _id(obj: dict[str, Any], name: str) -> str:
    return _id_value(obj.get(name), name)


def _id_value(v: Any, name: str) -> str:
    if v is None:
        raise _Reject("missing_field", f"{name} is required")
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise _Reject(
            "wrong_type", f"{name} must be a string or an integer, got {type(v).__name__}"
        )
    if isinstance(v, int):
        if v < 0:
            raise _Reject("bad_id", f"{name} is negative")
        v = str(v)
    if not v or len(v) > MAX_ID_LEN or _BAD_ID_CHARS.search(v):
        raise _Reject(
            "bad_id",
            f"{name} must be 1..{MAX_ID_LEN} characters without whitespace or control characters",
        )
    if not v.isascii():
        bad = next((c for c in v if unicodedata.category(c) in _BAD_ID_CATEGORIES), None)
        if bad is not None:
            raise _Reject(
                "bad_id",
                f"{name} holds U+{ord(bad):04X} ({unicodedata.category(bad)}: "
                f"control, format, private-use or unassigned characters are refused)",
            )
        if not unicodedata.is_normalized("NFC", v):
            raise _Reject("bad_id", f"{name} is not NFC-normalised (compose it before sending)")
    return v


def check_id(value: Any, name: str = "id") -> str:
    """An id by the event id rules (string or non-negative integer, 1..``MAX_ID_LEN``
    characters, no whitespace/control/format characters, NFC): the normalised string, or
    ``ValueError`` saying what is wrong (``item-vectors`` records use it)."""
    try:
        return _id({name: value}, name)
    except _Reject as r:
        raise ValueError(r.detail) from None


def _number(obj: dict[str, Any], name: str, *, required: bool) -> float | None:
    v = obj.get(name)
    if v is None:
        if required:
            raise _Reject("missing_field", f"{name} is required")
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _Reject("wrong_type", f"{name} must be a number, got {type(v).__name__}")
    try:
        return float(v)
    except OverflowError:
        raise _Reject("non_finite", f"{name} overflows a float") from None


def validate_event_slow(
    raw: bytes | None,
    topic: str,
    *,
    key: bytes | None = None,
    require_key: bool = False,
    allow_forget: bool = False,
    max_bytes: int = 16_384,
    max_future_skew_s: float = 3600.0,
    now: float | None = None,
) -> Event | Forget | Rejection:
    """Check one raw input record: the reference implementation (the standard library's
    parser and a dict per event). :func:`validate_event` gives the same answer faster; this
    one names the exact reason whenever the fast decoder declines a record.

    :param raw: the record value as received.
    :param topic: logical topic name (``clicks``, ``purchases`` or ``forget-requests``,
        without prefix).
    :param key: the record key; when given it must equal the event's ``user_id``
        (partitioning, ordering and the session table rely on it).
    :param require_key: refuse a record without a key (``missing_key``): the worker does,
        because a null key lands the user's events on any partition.
    :param allow_forget: accept ``"event_type": "forget"`` on ``clicks``/``purchases``
        (development only; in production forget requests come on ``forget-requests``).
    """
    event_id: str | None = None
    try:
        if topic not in TOPIC_EVENT_TYPE and topic != FORGET_TOPIC:
            raise _Reject("unknown_topic", f"{topic!r} carries no user events")
        if not raw:
            raise _Reject("empty", "empty payload")
        if len(raw) > max_bytes:
            raise _Reject("oversize", f"{len(raw)} bytes > {max_bytes}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _Reject("invalid_utf8", str(e)) from None
        if _too_deep(text):  # strings skipped: brackets inside a string are text
            raise _Reject("invalid_json", f"nested deeper than {MAX_NESTING} levels")
        obj = _decode(text)
        if not isinstance(obj, dict):
            raise _Reject("not_object", f"top-level JSON {type(obj).__name__}, expected an object")
        eid = obj.get("event_id")
        if isinstance(eid, str) and 0 < len(eid) <= MAX_ID_LEN and not _has_lone_surrogate(eid):
            event_id = eid
        if "\\u" in text and _has_lone_surrogate(obj):  # only a \u escape can make one
            raise _Reject(
                "invalid_text",
                "a string holds a lone surrogate escape (\\ud800-\\udfff); "
                "it is not text and cannot be re-encoded",
            )
        unknown = set(obj) - allowed_fields(topic)
        if unknown:
            raise _Reject("unknown_field", f"unknown fields {sorted(unknown)[:5]}")
        ev_id = _id(obj, "event_id")
        event_id = ev_id
        user_id = _id(obj, "user_id")
        if require_key and key is None:
            raise _Reject("missing_key", "the record has no key; key it by user_id")
        forget = topic == FORGET_TOPIC or obj.get("event_type") == FORGET
        item_id = "" if forget and obj.get("item_id") is None else _id(obj, "item_id")
        ts = _number(obj, "ts", required=True)
        assert ts is not None
        if ts < 0:
            raise _Reject("ts_negative", f"ts={ts}")
        if ts > (time.time() if now is None else now) + max_future_skew_s:
            raise _Reject("ts_future", f"ts={ts} is more than {max_future_skew_s:.0f} s ahead")
        if topic == FORGET_TOPIC:
            et = obj.get("event_type", FORGET)
            if et != FORGET:
                raise _Reject("event_type_mismatch", f"{str(et)[:40]!r} on topic {topic}")
            if key is not None and key != user_id.encode("utf-8"):
                raise _Reject("key_mismatch", f"key {key[:40]!r} != user_id {user_id!r}")
            return Forget(ev_id, user_id, ts)
        event_type = TOPIC_EVENT_TYPE[topic]
        if "event_type" in obj:
            et = obj["event_type"]
            if not isinstance(et, str):
                raise _Reject("wrong_type", "event_type must be a string")
            if et == FORGET:
                if not allow_forget:
                    raise _Reject(
                        "forget_not_allowed",
                        f"forget requests go to {FORGET_TOPIC}, "
                        f"which only the privacy service may write",
                    )
                if key is not None and key != user_id.encode("utf-8"):
                    raise _Reject("key_mismatch", f"key {key[:40]!r} != user_id {user_id!r}")
                return Forget(ev_id, user_id, ts)
            if et not in EVENT_TYPES:
                raise _Reject("unknown_event_type", f"event_type {et[:40]!r}")
            if et != event_type:
                raise _Reject("event_type_mismatch", f"{et!r} on topic {topic}")
        if "context" in obj and obj["context"] is not None and not isinstance(obj["context"], dict):
            raise _Reject("wrong_type", "context must be an object")
        price = quantity = None
        if topic == "purchases":
            price = _number(obj, "price", required=False)
            if price is not None and not 0 <= price <= MAX_PRICE:
                raise _Reject("out_of_range", f"price={price}")
            q = obj.get("quantity")
            if q is not None:
                if isinstance(q, bool) or not isinstance(q, int):
                    raise _Reject("wrong_type", "quantity must be an integer")
                if not 1 <= q <= MAX_QUANTITY:
                    raise _Reject("out_of_range", f"quantity={q}")
                quantity = q
        if key is not None and key != user_id.encode("utf-8"):
            raise _Reject("key_mismatch", f"key {key[:40]!r} != user_id {user_id!r}")
        return Event(ev_id, user_id, item_id, ts, event_type, price, quantity)
    except _Reject as r:
        return Rejection(r.reason, r.detail, event_id)


# --------------------------------------------------------------------------- the fast path


if _FAST:

    class _Wire(msgspec.Struct, forbid_unknown_fields=True, gc=False):
        """One event as the typed decoder reads it: every field an event topic declares
        (``kafka/topics.yaml``; a unit test keeps both equal), typed as the rules above accept
        it. ``UNSET``: the field is absent; ``None``: it is JSON ``null``."""

        event_id: str | int
        user_id: str | int
        ts: float
        item_id: str | int | None | UnsetType = UNSET
        event_type: str | UnsetType = UNSET
        price: float | None | UnsetType = UNSET
        quantity: int | None | UnsetType = UNSET
        context: dict[str, Any] | None | UnsetType = UNSET

    _WIRE = msgspec.json.Decoder(_Wire)


_KEY_END = re.compile(rb'"[ \t\n\r]*:')
"""The end of a JSON object key: its closing quote, JSON whitespace, the colon."""


@cache
def _not_allowed(topic: str) -> tuple[Callable[[_Wire], tuple[Any, ...]], tuple[Any, ...]]:
    """``(get, absent)``: ``get(wire)`` is the tuple of the :class:`_Wire` fields that
    ``topic``'s schema does not declare, equal to ``absent`` when none of them is there."""
    names = [f for f in _Wire.__struct_fields__ if f not in allowed_fields(topic)]
    if not names:
        return (lambda w: ()), ()
    get = operator.attrgetter(*names)
    return (get if len(names) > 1 else lambda w: (get(w),)), (UNSET,) * len(names)


def _n_keys(v: Any) -> int:
    """The object keys in a decoded JSON value, at every depth."""
    if type(v) is dict:
        return len(v) + sum([_n_keys(x) for x in v.values() if type(x) is dict or type(x) is list])
    if type(v) is list:
        return sum([_n_keys(x) for x in v if type(x) is dict or type(x) is list])
    return 0


_EVENT_FIELDS = ("event_id", "user_id", "item_id", "ts", "event_type", "price", "quantity")
if tuple(f.name for f in fields(Event)) != _EVENT_FIELDS:  # pragma: no cover - a guard
    raise RuntimeError("Event's fields changed: update _new_event")
_set = tuple(getattr(Event, f).__set__ for f in _EVENT_FIELDS)


def _new_event(
    event_id: str,
    user_id: str,
    item_id: str,
    ts: float,
    event_type: str,
    price: float | None,
    quantity: int | None,
) -> Event:
    """``Event(...)``, the same object, its slots set directly: the frozen dataclass's
    ``__init__`` goes through ``object.__setattr__`` per field, a third of the fast path's
    time (a unit test keeps both equal)."""
    ev = object.__new__(Event)
    s0, s1, s2, s3, s4, s5, s6 = _set
    s0(ev, event_id)
    s1(ev, user_id)
    s2(ev, item_id)
    s3(ev, ts)
    s4(ev, event_type)
    s5(ev, price)
    s6(ev, quantity)
    return ev


def _fast_id(v: Any) -> str | None:
    """:func:`_id_value`'s answer, ``None`` for a refusal; an ASCII string without a space
    or a control character (``isprintable``) is the common case, checked without the regex."""
    if type(v) is str and v.isascii():
        return v if 0 < len(v) <= MAX_ID_LEN and v.isprintable() and " " not in v else None
    if v is None or v is UNSET:
        return None
    try:
        return _id_value(v, "id")
    except _Reject:
        return None


def _fast(
    raw: bytes | None,
    topic: str,
    key: bytes | None,
    require_key: bool,
    max_bytes: int,
    max_future_skew_s: float,
    now: float | None,
) -> Event | Forget | None:
    """The answer for a record that the typed decoder reads and every rule accepts; ``None``
    for anything else (:func:`validate_event_slow` then decides and names the reason).

    It never accepts a record the slow path refuses: msgspec refuses invalid UTF-8, lone
    surrogates, control characters in strings, ``NaN``/``Infinity`` and numbers that
    overflow a float, unknown fields and wrong types (all declined here); what it accepts
    but the rules do not (a repeated key, which it reads as the last value; deep nesting; a
    field the topic does not declare; a bad id, ts, type or range) is declined below."""
    if type(raw) is not bytes or not raw or len(raw) > max_bytes or topic not in INPUT_TOPICS:
        return None
    if require_key and key is None:
        return None
    try:
        w = _WIRE.decode(raw)
    except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
        return None
    ctx = w.context
    n = (
        3
        + (w.item_id is not UNSET)
        + (w.event_type is not UNSET)
        + (w.price is not UNSET)
        + (w.quantity is not UNSET)
        + (ctx is not UNSET)
    )
    if type(ctx) is dict:
        if raw.count(b"{") + raw.count(b"[") > MAX_NESTING:  # maybe too deep: the slow path
            return None
        n += _n_keys(ctx)
    # No repeated key: every key of the text is followed by its own colon, so there are at
    # least as many colons (and matches of _KEY_END) as keys, and the decoded objects hold
    # n distinct keys: equal counts leave no room for a repeated one.
    if raw.count(b":") != n and len(_KEY_END.findall(raw)) != n:
        return None
    get, absent = _not_allowed(topic)
    if get(w) != absent:
        return None
    event_id = _fast_id(w.event_id)
    user_id = _fast_id(w.user_id)
    if event_id is None or user_id is None:
        return None
    ts = w.ts
    if not 0 <= ts <= (time.time() if now is None else now) + max_future_skew_s:
        return None
    if key is not None and key != user_id.encode("utf-8"):
        return None
    et = w.event_type
    if topic == FORGET_TOPIC:
        return Forget(event_id, user_id, ts) if et is UNSET or et == FORGET else None
    event_type = TOPIC_EVENT_TYPE[topic]
    if et is not UNSET and et != event_type:  # forget, unknown, mismatch: the slow path
        return None
    item_id = _fast_id(w.item_id)
    if item_id is None:
        return None
    price = w.price if w.price is not UNSET else None
    quantity = w.quantity if w.quantity is not UNSET else None
    if price is not None and not 0 <= price <= MAX_PRICE:
        return None
    if quantity is not None and not 1 <= quantity <= MAX_QUANTITY:
        return None
    return _new_event(event_id, user_id, item_id, ts, event_type, price, quantity)


def validate_event(
    raw: bytes | None,
    topic: str,
    *,
    key: bytes | None = None,
    require_key: bool = False,
    allow_forget: bool = False,
    max_bytes: int = 16_384,
    max_future_skew_s: float = 3600.0,
    now: float | None = None,
) -> Event | Forget | Rejection:
    """Check one raw input record: the answer of :func:`validate_event_slow` (same
    parameters, same result, reasons and details included), faster.

    A typed ``msgspec`` decoder reads the record into one struct and the rules run on it;
    a record it cannot read, or that any rule refuses (or a forget request on an event
    topic), goes to :func:`validate_event_slow`, which names the exact reason. Valid records
    take the fast path, invalid ones pay both."""
    ev = _fast(raw, topic, key, require_key, max_bytes, max_future_skew_s, now) if _FAST else None
    if ev is not None:
        return ev
    return validate_event_slow(
        raw,
        topic,
        key=key,
        require_key=require_key,
        allow_forget=allow_forget,
        max_bytes=max_bytes,
        max_future_skew_s=max_future_skew_s,
        now=now,
    )
