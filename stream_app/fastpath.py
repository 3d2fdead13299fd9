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
from collections.abc import Callable, Iterable
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


TAKE, DROP, REWIND, FORCED, RESTARTED = "take", "drop", "rewind", "forced", "restarted"


class OffsetOrder:
    """The offset each fast-path input partition must deliver next, so that no record is
    skipped unseen.

    Faust's fetch loop trusts whatever offset arrives: after a seek to the committed offset
    ``c`` (every rebalance), a fetch answered from before the seek can deliver ``c + k``
    first; Faust then records ``c + 1 .. c + k - 1`` as a *gap* (offsets that do not exist,
    as in a compacted topic), its commit steps over them and over ``c`` (its head check
    allows one missing offset), and when ``c ..`` arrive they are dropped as already read.
    Nobody answered them. Measured: gaps of 10-340 offsets after 2-4 of the ~6 rebalances
    of every rolling restart at 1,000 ev/s, and up to 22 events lost.

    Here a record past the expected offset is not taken: the partition is sought back to
    the expected offset (:data:`REWIND`) and the records after it in the stale fetch are
    dropped (:data:`DROP`) until the expected one arrives. If the first record after the
    rewind is again the same later one, the offsets between really do not exist (a
    transaction marker, compaction): it is taken. ``max_rewinds`` fetches in a row that
    bring neither take the record anyway (:data:`FORCED`, logged by the caller): the rewinds
    must not stall a partition for ever.

    A record *behind* the expected offset is one of two things. Left over in a fetch made
    before a seek in this fetch (aiokafka hands out only records at its current position,
    so only a seek makes one stale): Faust's read-offset check drops it, as before this
    guard. In a fetch with no seek since it began: aiokafka's position went back by itself,
    which it does only when the broker answers "offset out of range" (a broker that lost
    its data, as Tansu's memory storage on a restart, or an unclean leader election) and
    it resets to the log's start. Faust's check would drop every new record up to the old
    read offset, unanswered (measured: 35 of 100 events after a Tansu restart).
    :data:`RESTARTED`: the caller forgets the partition's read and commit state and takes
    the record. But only a record *below what this worker committed* (``committed(tp)``):
    a rebalance also moves the position back without a seek of ours (aiokafka resets it to
    the group's committed offset by itself, and the records can come a fetch later), to an
    offset at or above this worker's own commit; taking those again answered them twice and
    out of order (a rolling restart's order check failed, about 1 run in 20). Without a
    commit of its own the worker cannot tell: Faust's check decides, as before.

    A partition assigned or revoked by a rebalance is not read until it is sought
    (:meth:`reset`, Faust's seek to the committed offsets once the new assignment's table
    recovery is done): its records are dropped meanwhile (:data:`DROP`). Faust resumes the
    fetch loop during that recovery, and resumes the input partitions a network round trip
    before its seek; in between, fetches start at the consumer's own position, which can be
    past the committed offset ``c``: records dropped while the flow was suspended (a
    partition kept), or filtered out while the input partitions were paused for the
    recovery (a partition new to this worker) moved it on. Taking them answered ``c + k ..``
    before the seek brought back ``c ..``: a user's events answered out of their order,
    nothing lost and nothing repeated (the worker's de-duplication drops the second pass).
    Measured: 1-36 users out of order in 5 of 6 rolling restarts under load before this rule.
    A partition with records dropped so is sought once more after :meth:`reset` (the caller,
    :meth:`stream_app.transport.Consumer.seek_to_committed`): some may have been fetched
    after the consumer had already moved to the committed offset, and when the stream has
    ended no later record comes to rewind on (measured: a restarted worker answered none of
    a finished stream's backlog in 3 of 4 kill -9 runs until it did).
    """

    def __init__(
        self, max_rewinds: int = 8, committed: Callable[[Any], int | None] | None = None
    ) -> None:
        self.max_rewinds = max_rewinds
        self.committed = committed
        """This worker's committed offset of a partition (the next to read), or ``None``."""
        self._next: dict[Any, int] = {}
        self._pending: dict[Any, tuple[int, int, int]] = {}  # tp -> (expected, first, rewinds)
        self._fresh: set[Any] = set()  # partitions whose next record starts a new fetch
        self._sought: set[Any] = set()  # partitions sought since the current fetch began
        self._unsought: set[Any] = set()  # assigned or revoked, not sought since: none taken
        self._dropped_from: dict[Any, int] = {}  # tp -> lowest offset dropped while unsought
        self.rewinds = 0
        """Rewinds so far (all partitions)."""
        self.forced = 0
        """Records taken past a gap that ``max_rewinds`` rewinds did not close."""
        self.restarts = 0
        """Partitions whose log started again below what was read (:data:`RESTARTED`)."""
        self.unsought_drops = 0
        """Records of (re)assigned partitions dropped before their seek (read again after)."""

    def expected(self, tp: Any) -> int | None:
        return self._next.get(tp)

    def reset(self, tp: Any, offset: int | None) -> bool:
        """The partition was sought to ``offset`` (``None`` or negative: no committed offset;
        anything goes, unless records were dropped before this seek: then the lowest of them
        is expected). True: records were dropped while the partition waited for this seek,
        some of them perhaps fetched after the consumer had moved to ``offset``: the caller
        seeks to :meth:`expected` again, or a stream that has ended would never bring them
        back."""
        self._sought.add(tp)
        self._unsought.discard(tp)
        self._pending.pop(tp, None)
        dropped = self._dropped_from.pop(tp, None)
        if offset is not None and offset >= 0:
            self._next[tp] = offset
        elif dropped is not None:
            # no committed offset: the consumer began where its reset policy put it, at the
            # first record dropped before this seek; go back there (nothing skipped)
            self._next[tp] = dropped
        else:
            self._next.pop(tp, None)
        return dropped is not None

    def assigned(self, tps: Iterable[Any]) -> None:
        """A rebalance assigned the partitions (the whole new assignment): none of their
        records is taken until they are sought (:meth:`reset`). Partitions revoked and not
        assigned again deliver nothing more; once every assigned one is sought, the check
        costs nothing per record."""
        self._unsought = set(tps)
        self._dropped_from.clear()
        for tp in self._unsought:
            self._next.pop(tp, None)
            self._pending.pop(tp, None)

    def forget(self, tps: Iterable[Any]) -> None:
        """The partitions were revoked: none of their records is taken until they are
        sought again (:meth:`reset`)."""
        for tp in tps:
            self._next.pop(tp, None)
            self._pending.pop(tp, None)
            self._sought.add(tp)
            self._unsought.add(tp)

    def sought(self, tp: Any) -> None:
        """The fetch loop itself sought ``tp`` (a rewind): what is left of this fetch is
        stale."""
        self._sought.add(tp)

    def new_fetch(self) -> None:
        """A new fetch begins: a partition still waiting after a rewind may rewind again."""
        self._fresh = set(self._pending)
        if self._sought:
            self._sought.clear()

    def check(self, tp: Any, offset: int) -> str:
        """:data:`TAKE` the record, :data:`DROP` it, :data:`REWIND` the partition to
        :meth:`expected` and drop it, take it past offsets never seen (:data:`FORCED`), or
        take it from a log that started again lower (:data:`RESTARTED`)."""
        exp = self._next.get(tp)
        if exp is None or offset == exp:  # the common case: one lookup, no write
            if self._unsought and tp in self._unsought:
                self.unsought_drops += 1
                low = self._dropped_from.get(tp)
                if low is None or offset < low:
                    self._dropped_from[tp] = offset
                return DROP  # assigned or revoked, not sought yet: read again after the seek
            if self._pending:
                self._pending.pop(tp, None)
            return TAKE
        if offset < exp:
            if tp in self._sought:
                # left over from before a seek: Faust's read-offset check drops it
                return TAKE
            # no seek since this fetch began: below what this worker committed, the broker's
            # log starts again lower; else a rebalance's reset to the group's commit
            c = self.committed(tp) if self.committed is not None else None
            if c is None or offset >= c:
                return TAKE
            self._pending.pop(tp, None)
            self._next.pop(tp, None)
            self.restarts += 1
            return RESTARTED
        pending = self._pending.get(tp)
        if pending is None or pending[0] != exp:
            self._pending[tp] = (exp, offset, 1)
            self.rewinds += 1
            return REWIND
        _, first, n = pending
        fresh = tp in self._fresh
        self._fresh.discard(tp)
        if fresh and offset == first:  # the first record after a rewind, again: a real gap
            self._pending.pop(tp, None)
            return TAKE
        if fresh and n >= self.max_rewinds:
            self._pending.pop(tp, None)
            self.forced += 1
            return FORCED
        if fresh:
            self._pending[tp] = (exp, first, n + 1)
            self.rewinds += 1
            return REWIND
        return DROP  # the rest of a stale fetch

    def taken(self, tp: Any, offset: int) -> None:
        """The record at ``offset`` went into the buffer."""
        self._next[tp] = offset + 1
