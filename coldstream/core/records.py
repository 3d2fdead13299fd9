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
    """The raw payload: UTF-8 text, or base64 when ``payload_encoding`` says so."""
    payload_encoding: str = "utf-8"
    payload_truncated: bool = False
    key: str | None = None
    event_id: str | None = None
    """The event id when it could be read from the payload."""


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
) -> bytes:
    """The ``recommendations`` value: the :class:`Recommendation` fields as compact JSON
    (built from cached fragments: this runs once per event)."""
    items_json = ",".join(
        [_item_prefix(i) + (f"{s:.6g}" if -1e300 < s < 1e300 else "null") + "}" for i, s in items]
    )
    return (
        f'{{"event_id":{_dumps(event_id)},"user_id":{_dumps(user_id)},"items":[{items_json}],'
        f'"model_version":{_dumps(model_version)},"cold_start":{"true" if cold_start else "false"},'
        f'"produced_at":{produced_at!r},"latency_ms":{_num(round(latency_ms, 3))},'
        f'"fallback":{_dumps(fallback)}}}'
    ).encode()


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
    max_payload_bytes: int = 65_536,
) -> bytes:
    raw = payload or b""
    truncated = len(raw) > max_payload_bytes
    raw = raw[:max_payload_bytes]
    try:
        text, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    return json.dumps(
        {
            "source_topic": source_topic,
            "partition": partition,
            "offset": offset,
            "error": error,
            "detail": detail,
            "payload": text,
            "payload_encoding": encoding,
            "payload_truncated": truncated,
            "key": key.decode("utf-8", "replace") if key is not None else None,
            "event_id": event_id,
        },
        separators=(",", ":"),
    ).encode()
