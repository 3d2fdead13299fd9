"""Record schemas of the topics (the field semantics behind ``kafka/topics.yaml``) and the
builders of the records coldstream writes.

The dataclasses document and type the values; the hot path builds the same JSON objects
with the plain ``*_payload`` functions below (string fragments, no object per event), and a
unit test keeps both in step. :func:`event_payload` is the one builder of input events.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields

try:
    import orjson
except ImportError:  # pragma: no cover - a partial environment: see _FAST
    _FAST = False
else:
    _FAST = True
"""Whether the fast encoder is there. orjson is a dependency (pyproject.toml), but a machine
with a partial package set (the GPU check's, devtools/gpu/payload.py) imports this module all
the same; there every record takes :func:`recommendation_payload_slow`."""


@dataclass(frozen=True)
class ClickEvent:
    """``clicks``: a user viewed an item (key: user_id)."""

    event_id: str
    user_id: str
    item_id: str
    ts: float
    """Seconds since the epoch (not milliseconds: those are refused as ``ts_future``)."""


@dataclass(frozen=True)
class PurchaseEvent(ClickEvent):
    """``purchases``: a user bought (MovieLens: rated >= 4) an item (key: user_id)."""

    price: float | None = None
    quantity: int | None = None


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    score: float


@dataclass(frozen=True)
class Recommendation:
    """``recommendations``: top-K items for a user, one per triggering input event."""

    event_id: str
    """The triggering input event."""
    user_id: str
    items: list[ScoredItem]
    model_version: str
    cold_start: bool
    """The user had at most ``cold_start_events`` events (this one included)."""
    produced_at: float
    """Seconds since the epoch when the worker published the record."""
    latency_ms: float
    """Milliseconds from the input record's timestamp (producer create time) to publishing."""
    fallback: str | None = None
    """``"popular"`` when no event of the user is known to the model (popularity fallback)."""
    arm: str = "live"
    """The rollout arm that served it (:mod:`coldstream.core.rollout`): ``live``, or
    ``canary`` when ``model_version`` is a candidate served to a share of users."""


@dataclass(frozen=True)
class DlqRecord:
    """``events-dlq``: an input record that was refused, with the reason and the raw payload."""

    source_topic: str
    partition: int
    offset: int
    error: str
    """The reason code (``coldstream.core.events.REASONS``)."""
    detail: str
    payload: str
    """The raw payload (its first bytes when ``payload_truncated``): UTF-8 text, or base64
    when ``payload_encoding`` says so."""
    payload_encoding: str = "utf-8"
    payload_truncated: bool = False
    key: str | None = None
    """The raw record key (its first :data:`DLQ_MAX_KEY_BYTES` when ``key_truncated``)."""
    event_id: str | None = None
    """The event id when it could be read from the payload."""
    key_encoding: str = "utf-8"
    key_truncated: bool = False
    payload_bytes: int = 0
    """Length of the original payload in bytes (also when it was cut)."""
    key_bytes: int | None = None
    """Length of the original key in bytes (``None``: the record had no key)."""


def field_names(record_type: type) -> tuple[str, ...]:
    """The JSON field names of a record type (its dataclass fields, in order)."""
    return tuple(f.name for f in fields(record_type))


def event_payload(
    user_id: str,
    item_id: str,
    *,
    event_id: str,
    ts: float,
    event_type: str | None = None,
    **extra: object,
) -> bytes:
    """The value of one ``clicks``/``purchases`` record (compact JSON). The one builder of
    input events: the demo, the replay, the benchmarks, the fault suite and the tests use it.
    ``extra`` adds optional fields (``price``, ``quantity``, ``context``) or, for tests of
    validation, anything else."""
    obj: dict[str, object] = {
        "event_id": event_id,
        "user_id": user_id,
        "item_id": item_id,
        "ts": ts,
    }
    if event_type is not None:
        obj["event_type"] = event_type
    obj.update(extra)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


_ITEM_PREFIX: dict[str, str] = {}
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _item_prefix(item_id: str) -> str:
    """``{"item_id":<id>,"score":`` cached per item (most of a recommendation's JSON)."""
    p = _ITEM_PREFIX.get(item_id)
    if p is None:
        if len(_ITEM_PREFIX) > 2_000_000:
            _ITEM_PREFIX.clear()
        p = _ITEM_PREFIX[item_id] = '{"item_id":' + _dumps(item_id) + ',"score":'
    return p


def _num(x: float) -> str:
    return f"{x:.6g}" if -1e300 < x < 1e300 else "null"  # NaN/inf are not JSON


def recommendation_payload_slow(
    *,
    event_id: str,
    user_id: str,
    items: Sequence[tuple[str, float]],
    model_version: str,
    cold_start: bool,
    produced_at: float,
    latency_ms: float,
    fallback: str | None,
    arm: str = "live",
) -> bytes:
    """The reference encoder of :func:`recommendation_payload` (string fragments and the
    standard library's JSON encoder): the same bytes, slower. It also writes what the fast
    one declines (a score or latency that is not JSON: ``null``; a string orjson refuses)."""
    items_json = ",".join(
        [_item_prefix(i) + (f"{s:.6g}" if -1e300 < s < 1e300 else "null") + "}" for i, s in items]
    )
    return (
        f'{{"event_id":{_dumps(event_id)},"user_id":{_dumps(user_id)},"items":[{items_json}],'
        f'"model_version":{_dumps(model_version)},"cold_start":{"true" if cold_start else "false"},'
        f'"produced_at":{produced_at!r},"latency_ms":{_num(round(latency_ms, 3))},'
        f'"fallback":{_dumps(fallback)},"arm":{_dumps(arm)}}}'
    ).encode()


_ITEM_FORMAT: dict[str, bytes] = {}
_ARM_JSON = {a: b'"%s"' % a.encode() for a in ("live", "canary")}


def _item_format(item_id: str) -> bytes:
    """``{"item_id":<id>,"score":%.6g}`` cached per item: a ``bytes %`` template of one item
    (a ``%`` in the id doubled). It replaces :data:`_ITEM_PREFIX` on the fast path (that
    cache fills only where the slow encoder runs), so the memory stays one cache's."""
    f = _ITEM_FORMAT.get(item_id)
    if f is None:
        if len(_ITEM_FORMAT) > 2_000_000:
            _ITEM_FORMAT.clear()
        prefix = '{"item_id":' + _dumps(item_id) + ',"score":'  # as _item_prefix, uncached
        f = _ITEM_FORMAT[item_id] = (prefix.replace("%", "%%") + "%.6g}").encode()
    return f


def recommendation_payload(
    *,
    event_id: str,
    user_id: str,
    items: Sequence[tuple[str, float]],
    model_version: str,
    cold_start: bool,
    produced_at: float,
    latency_ms: float,
    fallback: str | None,
    arm: str = "live",
) -> bytes:
    """The ``recommendations`` value: the :class:`Recommendation` fields as compact JSON;
    this runs once per event.

    Byte for byte the output of :func:`recommendation_payload_slow`: the strings are
    escaped by orjson (as the standard library does with ``ensure_ascii=False``), the items
    are one ``bytes %`` over cached per-item templates, scores and latency keep their
    ``%.6g`` (6 significant digits) and ``produced_at`` its ``repr``. A score or latency
    that is not finite or not within +-1e300 (written ``null``), or a string orjson refuses
    (a lone surrogate), goes to the slow encoder."""
    lat = round(latency_ms, 3)
    scores = tuple([s for _, s in items])
    total = sum(scores)  # NaN when any score is NaN
    if (
        _FAST
        and total == total
        and -1e300 < lat < 1e300
        and (not scores or (min(scores) > -1e300 and max(scores) < 1e300))
    ):
        try:
            return (
                b'{"event_id":%b,"user_id":%b,"items":[%b],"model_version":%b,'
                b'"cold_start":%b,"produced_at":%a,"latency_ms":%.6g,"fallback":%b,"arm":%b}'
                % (
                    orjson.dumps(event_id),
                    orjson.dumps(user_id),
                    b",".join([_ITEM_FORMAT.get(i) or _item_format(i) for i, _ in items]) % scores,
                    orjson.dumps(model_version),
                    b"true" if cold_start else b"false",
                    produced_at,
                    lat,
                    orjson.dumps(fallback),
                    _ARM_JSON.get(arm) or orjson.dumps(arm),
                )
            )
        except orjson.JSONEncodeError:
            pass
    return recommendation_payload_slow(
        event_id=event_id,
        user_id=user_id,
        items=items,
        model_version=model_version,
        cold_start=cold_start,
        produced_at=produced_at,
        latency_ms=latency_ms,
        fallback=fallback,
        arm=arm,
    )


DLQ_MAX_BYTES = 131_072
"""Default cap on an ``events-dlq`` value (``COLDSTREAM_DLQ_MAX_BYTES``): far below the
producer's ``max_request_size`` (1,000,000) and the broker's ``message.max.bytes``."""
DLQ_MAX_KEY_BYTES = 512
"""At most this many bytes of the input key are kept (in the value and as the DLQ key)."""
DLQ_MAX_DETAIL_CHARS = 500
_MIN_DLQ_BYTES = 4096


def _bounded_bytes(raw: bytes, budget: int) -> tuple[str, str, bool]:
    """``(text, encoding, truncated)``: ``raw`` as a JSON string literal of at most
    ``budget`` bytes. UTF-8 text is kept as text when its escaped form fits (escaping can
    grow a byte sixfold: ``\u0001``); otherwise base64 of as many leading bytes as fit
    (4 output bytes per 3 input bytes, whatever they are)."""
    if len(raw) <= budget:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            if len(json.dumps(text, ensure_ascii=False).encode()) <= budget:
                return text, "utf-8", False
    keep = max(0, (budget - 2) // 4 * 3)
    return base64.b64encode(raw[:keep]).decode("ascii"), "base64", len(raw) > keep


def dlq_key(key: bytes | None) -> bytes | None:
    """The key of a DLQ record: the input's key (its user) when it is at most
    :data:`DLQ_MAX_KEY_BYTES`, so a user's DLQ records share a partition; else none."""
    return key if key is not None and len(key) <= DLQ_MAX_KEY_BYTES else None


def dlq_payload(
    *,
    source_topic: str,
    partition: int,
    offset: int,
    error: str,
    detail: str,
    payload: bytes | None,
    key: bytes | None,
    event_id: str | None,
    max_bytes: int = DLQ_MAX_BYTES,
) -> bytes:
    """The ``events-dlq`` value of a refused record, never longer than ``max_bytes``
    whatever the input: every field has its own budget (the key
    :data:`DLQ_MAX_KEY_BYTES` of raw bytes, the detail :data:`DLQ_MAX_DETAIL_CHARS`
    characters, the payload what is left), and the original bytes are kept as UTF-8 text or
    base64, cut where they would not fit (``*_truncated``, with the original lengths).
    Output bounded by construction: one hostile record cannot produce a DLQ record the
    producer or the broker refuses (as Kafka Connect's dead-letter queue: its output is never
    larger than a fixed bound over its input)."""
    if max_bytes < _MIN_DLQ_BYTES:
        raise ValueError(f"max_bytes must be >= {_MIN_DLQ_BYTES}")
    raw = payload or b""
    key_text: str | None = None
    key_encoding, key_truncated = "utf-8", False
    if key is not None:
        key_text, key_encoding, key_truncated = _bounded_bytes(
            key[:DLQ_MAX_KEY_BYTES], 4 * DLQ_MAX_KEY_BYTES
        )
        key_truncated = key_truncated or len(key) > DLQ_MAX_KEY_BYTES
    obj = {
        "source_topic": source_topic[:249],
        "partition": int(partition),
        "offset": int(offset),
        "error": error[:64],
        "detail": detail[:DLQ_MAX_DETAIL_CHARS],
        "payload": "",
        "payload_encoding": "utf-8",
        "payload_truncated": False,
        "key": key_text,
        "event_id": event_id[:128] if event_id is not None else None,
        "key_encoding": key_encoding,
        "key_truncated": key_truncated,
        "payload_bytes": len(raw),
        "key_bytes": None if key is None else len(key),
    }
    head = json.dumps(obj, separators=(",", ":"))  # ASCII: every escape already counted
    budget = max_bytes - len(head) - 16
    obj["payload"], obj["payload_encoding"], obj["payload_truncated"] = _bounded_bytes(raw, budget)
    out = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    if len(out) > max_bytes:  # cannot happen by the budgets above; never send one over
        raise AssertionError(f"DLQ record of {len(out)} bytes > {max_bytes}")
    return out
