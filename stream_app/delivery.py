"""At-least-once that holds: an input record is acknowledged only after every output of its
micro-batch (recommendations, DLQ records, session changelog records) was delivered.

:class:`Delivery` keeps the batches in flight in order. For each batch, in input order, it
waits for the batch's produce futures; when all succeeded it acks the batch's input records
(the fast path took them from Faust's fetch loop: ``Consumer.ack``) and asks Faust to commit
(``Consumer.commit``: only acknowledged offsets are committed, and Faust flushes the producer
first). If a send failed, nothing of that batch or of any later batch is acknowledged, so no
offset is committed past the failure, the failure is counted
(``coldstream_output_send_failures_total``) and :attr:`Delivery.failure` is set; the caller
stops the worker, and the next owner of the partitions answers the unacknowledged records
again (outputs are deduplicated downstream by ``event_id``).

How far processing may run ahead of the commits is bounded twice: at most
``max_uncommitted_batches`` batches (``COLDSTREAM_MAX_UNCOMMITTED_BATCHES``, 4) and at most
``max_uncommitted_events`` input records (``COLDSTREAM_MAX_UNCOMMITTED_EVENTS``; by default
the micro-batch size) wait for delivery and commit. The serving task takes no more records
than :meth:`Delivery.room` leaves, so a ``kill -9`` repeats at most ``max_uncommitted_events``
events, as when one full batch at a time was allowed. At low rates, where batches are small
(:data:`OVERLAP_BELOW`), the next batch is processed while the previous ones are still being
delivered and committed (``coldstream bench latency``); under load each batch waits for the
previous one's commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class _Batch:
    messages: Sequence[Any]
    futures: Sequence[asyncio.Future]
    done: asyncio.Event = field(default_factory=asyncio.Event)


OVERLAP_BELOW = 8
"""The next batch is processed while earlier ones wait for delivery only while those hold
fewer than ``max_uncommitted_events // OVERLAP_BELOW`` records (64 of 512). At a low rate
(batches of a few events) this takes delivery and commit off the latency; under load, each
batch of a CPU-bound worker costs a fixed part (ranking call, produce, commit), and letting
batches pile up made them smaller and more numerous: ``coldstream bench latency`` at 5,000
ev/s on 2 cores gave p50 545-813 ms with 4 unrestricted in flight against 127-306 ms with 1."""


def _delivered(batch: _Batch) -> bool:
    """Every output of ``batch`` was written (done, and none failed)."""
    return all(f.done() and not f.cancelled() and f.exception() is None for f in batch.futures)


class Delivery:
    """Ordered delivery tracking for the serving task (see the module docstring).

    ``ack(message)`` acknowledges one input record; ``commit()`` asks for an offset commit
    and returns whether it committed; ``on_send_failure(exc)`` is called once, with the first
    failed send's exception."""

    def __init__(
        self,
        *,
        ack: Callable[[Any], Any],
        commit: Callable[[], Awaitable[bool]] | None,
        max_uncommitted_batches: int = 1,
        max_uncommitted_events: int | None = None,
        on_send_failure: Callable[[BaseException], Awaitable[None]] | None = None,
        count_failure: Callable[[int], None] | None = None,
    ) -> None:
        if max_uncommitted_batches < 1:
            raise ValueError("max_uncommitted_batches must be >= 1")
        if max_uncommitted_events is not None and max_uncommitted_events < 1:
            raise ValueError("max_uncommitted_events must be >= 1")
        self.ack = ack
        self.commit = commit
        self.max_uncommitted_batches = max_uncommitted_batches
        self.max_uncommitted_events = max_uncommitted_events
        self._pending_events = 0
        self.on_send_failure = on_send_failure
        self.count_failure = count_failure
        self._pending: deque[_Batch] = deque()
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.failure: BaseException | None = None
        """The first send that failed (then nothing more is acknowledged)."""
        self.batches_committed = 0
        self.send_failures = 0
        self.commit_errors = 0

    @property
    def uncommitted(self) -> int:
        """Batches handed in whose inputs are not acknowledged and committed yet."""
        return len(self._pending)

    @property
    def uncommitted_events(self) -> int:
        """Input records handed in whose batches are not committed yet."""
        return self._pending_events

    def room(self, want: int) -> int:
        """How many of ``want`` input records the next batch may take (at least 1 after
        :meth:`submit` returned): the events bound less the records waiting."""
        if self.max_uncommitted_events is None:
            return want
        return max(1, min(want, self.max_uncommitted_events - self._pending_events))

    def _full(self) -> bool:
        if len(self._pending) >= self.max_uncommitted_batches:
            return True
        if self.max_uncommitted_events is None or not self._pending:
            return False
        # a batch goes on while earlier ones wait only while they are small (a low rate);
        # under load each batch waits, so the next one grows: fewer, cheaper batches
        return self._pending_events >= max(1, self.max_uncommitted_events // OVERLAP_BELOW)

    async def submit(self, messages: Sequence[Any], futures: Sequence[asyncio.Future]) -> None:
        """Hand in one processed batch; returns when there is room for the next one (fewer
        than ``max_uncommitted_batches`` batches and ``max_uncommitted_events`` records wait)."""
        self._pending.append(_Batch(messages, futures))
        self._pending_events += len(messages)
        self._arrived.set()
        while self._full() and self.failure is None:
            self._room.clear()
            await self._room.wait()

    async def run(self) -> None:
        """Complete the batches in order (run as a task for the worker's lifetime)."""
        while True:
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            batch = self._pending[0]
            failed = await self._wait_delivered(batch)
            if failed is not None:
                await self._fail(failed)
                return
            # the batches behind it that are delivered already are acked with it and share
            # its commit: under load, one commit per delivered run, not per batch
            n = 1
            while n < len(self._pending) and _delivered(self._pending[n]):
                n += 1
            done = [self._pending[i] for i in range(n)]
            for b in done:
                for m in b.messages:
                    self.ack(m)
            await self._commit()
            for b in done:
                self.batches_committed += 1
                self._pending.popleft()
                self._pending_events -= len(b.messages)
                b.done.set()
            self._room.set()

    async def _commit(self) -> None:
        """Commit the acknowledged offsets. A commit that fails (a rebalance in progress, a
        broker hiccup) is logged and left to the next one: the acknowledgements stay, and
        Faust's own periodic commit or the next batch commits them."""
        if self.commit is None:
            return
        try:
            if not await self.commit():
                # another commit was running and covered only older acks: commit ours
                await self.commit()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the next commit covers these offsets
            self.commit_errors += 1
            log.warning("offset commit failed (%r); the next commit covers it", e)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every handed-in batch completed (graceful stop); ``False`` on timeout
        or when a send failed."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._pending and self.failure is None:
                    await self._pending[-1].done.wait()
        except TimeoutError:
            return False
        return self.failure is None

    async def _wait_delivered(self, batch: _Batch) -> BaseException | None:
        first: BaseException | None = None
        failed = 0
        for fut in batch.futures:
            try:
                await fut
            except Exception as e:  # noqa: BLE001 - every failed send is counted
                failed += 1
                first = first or e
        if failed:
            self.send_failures += failed
            if self.count_failure is not None:
                self.count_failure(failed)
        return first

    async def _fail(self, exc: BaseException) -> None:
        self.failure = exc
        self._room.set()  # unblock submit: the caller sees the failure and stops
        log.critical(
            "delivery of %d output record(s) failed (%r): no offset is committed past it; "
            "stopping so that the next owner answers those events again",
            self.send_failures,
            exc,
        )
        if self.on_send_failure is not None:
            await self.on_send_failure(exc)
