"""Sending a batch's outputs so that no output can stop the worker for its size.

Every output is bounded by construction (a recommendation by ``k`` and the id rules, a DLQ
record by ``dlq_max_bytes``), but a broker may still refuse a record for size (a topic's
``max.message.bytes`` set below ours). Such a refusal -- raised by the producer at
``send`` or reported by the broker in the delivery -- is never a worker exit:

* a DLQ record is sent again without the raw key and payload (``shrunk``: its context,
  reason and source position stay), and if even that is refused it is counted and dropped;
* a recommendation is replaced by a bounded DLQ record for its input event
  (``output_too_large``), so the event still has exactly one output.

Anything else that fails a send is a real delivery failure and goes to
:class:`stream_app.delivery.Delivery` unchanged (no commit past it).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from coldstream.core.records import dlq_payload

log = logging.getLogger(__name__)

_TOO_LARGE = ("MessageSizeTooLarge", "RecordTooLarge", "RecordBatchTooLarge")

Send = Callable[[str, bytes | None, bytes], Awaitable[Any]]
"""``send(topic, key, value)`` -> the producer's delivery future."""
Count = Callable[[str, str], None]
"""``count(topic, outcome)``: outcome in shrunk, dead_lettered, dropped."""


def is_too_large(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is a producer or broker refusal for size."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if any(t in type(e).__name__ for t in _TOO_LARGE) or any(t in str(e) for t in _TOO_LARGE):
            return True
        e = e.__cause__ or e.__context__
    return False


def shrink_dlq(value: bytes) -> bytes:
    """A DLQ value without the raw key and payload (everything else kept)."""
    obj = json.loads(value)
    obj["payload"], obj["payload_encoding"], obj["payload_truncated"] = "", "utf-8", True
    obj["key"], obj["key_truncated"] = None, obj.get("key_bytes") is not None
    obj["detail"] = (
        str(obj.get("detail", ""))[:300] + "; raw bytes left out: the broker "
        "refused the record for size"
    )
    return json.dumps(obj, separators=(",", ":")).encode()


def dlq_for_output(origin: tuple[str, int, int], value: bytes, max_bytes: int) -> bytes:
    """The DLQ record that replaces a recommendation refused for size."""
    try:
        event_id = json.loads(value).get("event_id")
    except ValueError:
        event_id = None
    return dlq_payload(
        source_topic=origin[0],
        partition=origin[1],
        offset=origin[2],
        error="output_too_large",
        detail=f"the recommendation ({len(value)} bytes) was refused for size",
        payload=None,
        key=None,
        event_id=event_id if isinstance(event_id, str) else None,
        max_bytes=max_bytes,
    )


async def _start(send: Send, topic: str, key: bytes | None, value: bytes) -> asyncio.Future:
    """The delivery future of one send; a refusal raised by ``send`` itself becomes a failed
    future (the producer checks ``max_request_size`` before queueing)."""
    try:
        fut = await send(topic, key, value)
    except Exception as e:  # noqa: BLE001 - returned as a failed future, judged by the caller
        failed: asyncio.Future = asyncio.get_running_loop().create_future()
        failed.set_exception(e)
        return failed
    return asyncio.ensure_future(fut)


async def _send_or(
    send: Send,
    topic: str,
    key: bytes | None,
    value: bytes,
    instead: Callable[[], Awaitable[Any]],
) -> asyncio.Future:
    """Send one record; refused for size, ``instead()`` is what its future gives. Any other
    failure fails the future (a real delivery failure)."""
    first = await _start(send, topic, key, value)

    async def settle() -> Any:
        try:
            return await first
        except Exception as e:
            if not is_too_large(e):
                raise
        return await instead()

    return asyncio.ensure_future(settle())


async def send_dlq(
    send: Send, topic: str, key: bytes | None, value: bytes, count: Count
) -> asyncio.Future:
    """Send one DLQ record; the returned future fails only for a real delivery failure."""

    async def shrunk() -> Any:
        log.warning(
            "a DLQ record of %d bytes was refused for size; re-sending it without the raw bytes",
            len(value),
        )

        async def dropped() -> None:
            count(topic, "dropped")
            log.error("a DLQ record was refused for size even without its raw bytes: dropped")

        fut = await _send_or(send, topic, None, shrink_dlq(value), dropped)
        md = await fut
        if md is not None:
            count(topic, "shrunk")
        return md

    return await _send_or(send, topic, key, value, shrunk)


async def send_recommendation(
    send: Send,
    topic: str,
    key: bytes,
    value: bytes,
    *,
    dlq_topic: str,
    origin: tuple[str, int, int],
    max_dlq_bytes: int,
    count: Count,
) -> asyncio.Future:
    """Send one recommendation; refused for size, its input is dead-lettered instead."""

    async def dead_lettered() -> Any:
        count(topic, "dead_lettered")
        dlq = dlq_for_output(origin, value, max_dlq_bytes)
        return await (await send_dlq(send, dlq_topic, None, dlq, count))

    return await _send_or(send, topic, key, value, dead_lettered)
