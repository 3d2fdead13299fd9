"""The fast path's buffer: raw input records handed from the consumer's fetch loop
(:mod:`stream_app.transport`) to the serving task in adaptive micro-batches.

Bounded (backpressure: the fetch loop waits for space), so memory does not grow with a
burst; :meth:`FastPath.take` returns as soon as a batch is full, or ``within_s`` after the
oldest buffered record arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterable
from typing import Any


class FastPath:
    """Raw messages of ``topics``, buffered for a batch task (bounded: backpressure)."""

    def __init__(self, topics: Iterable[str], *, max_buffered: int = 20_000) -> None:
        self.topics = frozenset(topics)
        self.max_buffered = max_buffered
        self.messages: deque = deque()
        self._first_at = 0.0
        self._arrived: asyncio.Event | None = None
        self._space: asyncio.Event | None = None

    def _events(self) -> tuple[asyncio.Event, asyncio.Event]:
        if self._arrived is None or self._space is None:
            self._arrived, self._space = asyncio.Event(), asyncio.Event()
        return self._arrived, self._space

    def full(self) -> bool:
        return len(self.messages) >= self.max_buffered

    async def wait_space(self) -> None:
        _, space = self._events()
        space.clear()
        while self.full():
            await space.wait()
            space.clear()

    def put(self, message: Any) -> None:
        if not self.messages:
            self._first_at = time.monotonic()
        self.messages.append(message)
        arrived, _ = self._events()
        arrived.set()

    async def take(self, max_n: int, within_s: float, *, idle_s: float | None = None) -> list:
        """Up to ``max_n`` messages: returns as soon as ``max_n`` are buffered, or ``within_s``
        after the oldest buffered one arrived (adaptive: under load a batch is whatever
        arrived while the previous one was processed, without waiting). With ``idle_s``, an
        empty buffer returns ``[]`` after that long (the caller can check for a stop)."""
        arrived, space = self._events()
        idle_until = None if idle_s is None else time.monotonic() + idle_s
        while True:
            n = len(self.messages)
            if n >= max_n:
                break
            if n:
                left = self._first_at + within_s - time.monotonic()
                if left <= 0:
                    break
            elif idle_until is not None:
                left = idle_until - time.monotonic()
                if left <= 0:
                    return []
            else:
                left = None
            arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), left)
        out = [self.messages.popleft() for _ in range(min(max_n, len(self.messages)))]
        if self.messages:
            self._first_at = time.monotonic()
        space.set()
        return out
