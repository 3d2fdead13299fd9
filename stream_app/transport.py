"""The one place where the serving worker's Kafka consumer is tuned beyond Faust's settings.

Two changes, both measured:

Faust 0.15 hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer. Tansu answers a
fetch only near that wait, and Kafka holds a fetch until data or the wait, so low-rate
latency would be 0.5-1.5 s. :class:`Transport` (used by :class:`~stream_app.app.ColdstreamApp`)
creates the consumer exactly as Faust does, then replaces the fetch wait before the consumer
starts (aiokafka builds its fetcher from ``_fetch_max_wait_ms`` in ``start()``).

2. **Fast path.** Faust hands every message through ``wait_first`` (two tasks per message),
the conductor, a channel queue and a stream before ``take_events`` batches it again: about
70 us per message before any work is done (14k events/s on this project's 2-core machine).
For the topics named in :class:`FastPath`, :meth:`Consumer._drain_messages` (Faust's loop,
copied with one change) appends the raw message to a buffer that the serving task takes in
micro-batches and acks after processing. Everything else is Faust's: fetching, flow control
(a suspended flow drops the message exactly like Faust's own loop), read offsets, gaps,
unacked-message tracking (``stream_wait_empty`` on rebalance waits for our acks), commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any, ClassVar, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import Service

DEFAULT_FETCH_MAX_WAIT_MS = 10


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.app, "fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS)
        if not hasattr(consumer, "_fetch_max_wait_ms"):  # pragma: no cover - aiokafka changed
            raise RuntimeError("aiokafka consumer has no _fetch_max_wait_ms: update stream_app.transport")
        consumer._fetch_max_wait_ms = int(wait)
        return consumer


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

    async def take(self, max_n: int, within_s: float) -> list:
        """Up to ``max_n`` messages: returns as soon as ``max_n`` are buffered, or ``within_s``
        after the oldest buffered one arrived (adaptive: under load a batch is whatever
        arrived while the previous one was processed, without waiting)."""
        arrived, space = self._events()
        while True:
            n = len(self.messages)
            if n >= max_n:
                break
            if n:
                left = self._first_at + within_s - time.monotonic()
                if left <= 0:
                    break
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


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs a broker
        """Faust 0.15.3's ``Consumer._drain_messages`` with the fast path (marked below)."""
        fast: FastPath | None = getattr(self.app, "fast_path", None)
        fast_topics = fast.topics if fast is not None else frozenset()
        unacked_add = self._unacked_messages.add
        suspended = self.suspend_flow.is_set

        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = cast(AsyncIterator, getmany(timeout=1.0))
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset:
                                acks_enabled = acks_enabled_for(message.topic)
                                if acks_enabled:
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            # ---- coldstream fast path ------------------------------------
                            if fast is not None and message.topic in fast_topics:
                                if fast.full() and not suspended():
                                    await self.wait_first(fast.wait_space(), self.suspend_flow.wait())
                                if not suspended():  # a suspended flow drops it, as Faust does
                                    unacked_add(message)
                                    fast.put(message)
                            # ---- end of fast path ----------------------------------------
                            else:
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, message.key,
                                         message.value)
                    unset_flag(flag_consumer_fetching)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[type] = Consumer
