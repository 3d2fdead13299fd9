"""The one place where the serving worker's Kafka consumer is tuned beyond Faust's settings.

Six changes, fenced by tests that fail
when the installed Faust or aiokafka changes under them
(``tests/unit/serving/test_transport.py``):

1. **Fetch wait.** Faust 0.15 hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer.
   Tansu answers a fetch only near that wait, and Kafka holds a fetch until data or the
   wait, so low-rate latency would be 0.5-1.5 s. :class:`ConsumerThread` creates the
   consumer exactly as Faust does, then sets the fetch wait from the app's declared
   ``fetch_max_wait_ms`` before the consumer starts (aiokafka builds its fetcher from it in
   ``start()``), and ``fetch_min_bytes`` the same way (Faust leaves aiokafka's 1).

2. **Fast path.** Faust hands every message through ``wait_first`` (two tasks per message),
   the conductor, a channel queue and a stream before ``take_events`` batches it again:
   about 70 us per message before any work is done (14k events/s on this project's 2-core
   machine). For the topics of the app's declared ``fast_path`` buffer
   (:class:`~stream_app.fastpath.FastPath`), :meth:`Consumer._drain_messages` -- Faust
   0.15.3's loop, copied with one change, marked below -- tracks the message
   (``track_message``: pending-ack bookkeeping and the sensors' ``on_message_in``) and
   appends it to the buffer that the serving task takes in micro-batches and acks after
   processing. Everything else is Faust's: fetching, flow control (a suspended flow drops
   the message exactly like Faust's own loop), read offsets, gaps, unacked-message tracking
   (``stream_wait_empty`` on rebalance waits for our acks), commits -- except one guard,
   also marked: a fast-path record is taken only at the offset its partition must deliver
   next (:class:`~stream_app.fastpath.OffsetOrder`). Faust's loop takes a record that
   arrives ahead of that offset (a fetch answered from before a rebalance's seek, or the
   record after one dropped while the flow was suspended), books the offsets in between as
   a gap that its commits step over, and drops them when they arrive: events nobody
   answered, seen in at-least-once rolling restarts. The guard seeks back instead.

3. **Read committed, no plain commits** (``exactly_once`` only). Faust reads with
   ``read_committed`` only in its own exactly-once mode, which coldstream does not use
   (:mod:`stream_app.transactions` has its own transactions): :class:`ConsumerThread` sets
   the isolation level the same way as the fetch wait, so the session table is recovered
   from committed changelog records only; and :meth:`Consumer._commit` commits nothing, the
   transactions being the only writers of the input offsets.

4. **Idempotent producer.** :class:`Producer` adds Kafka's idempotent producer settings
   (``acks=all``, ``enable_idempotence``) outside transactions when the app declares
   ``idempotent_producer`` (Faust enables them only for exactly-once), through Faust's own
   ``Producer._settings_extra`` hook.

5. **A commit's log table, only when logged.** Faust's ``Consumer._commit_offsets`` builds a
   terminal table of the offsets for a ``dev``-level log line before every commit, logged or
   not: 0.2-0.5 ms per commit with 4-12 partitions, 3.5% of the worker's CPU at 1,000 ev/s
   (py-spy). ``faust.transport.consumer`` reads ``terminal`` for that table only; it gets
   :data:`COMMIT_TERMINAL`, whose ``logtable`` returns a :class:`LazyTable` that builds the
   same table when the line is formatted.

6. **No full garbage collection per wait for acks.** Faust's ``Consumer.wait_empty`` (every
   rebalance and every stop) calls ``gc.collect()`` on each turn of its loop (each waits up
   to 1 s for acknowledgements), to drop unacknowledged messages nobody holds any more. A
   full collection walks every tracked object: 206 ms median with 100,000 users' sessions in
   memory, 20 of them in one stop of a draining worker (4.1 s). It gets :data:`WAIT_EMPTY_GC`
   (:class:`PacedCollect`): a full collection at most every ``FULL_EVERY_S`` seconds, the
   young generations otherwise, so such a message goes within that time.

The copy is checked against the installed Faust twice: the sha256 of the upstream source
(:data:`UPSTREAM_DRAIN_SHA256`) and the AST of our copy with the marked change taken out.
"""

from __future__ import annotations

import asyncio
import gc
import time
import types
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, ClassVar, cast

from faust.transport import consumer as faust_consumer
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.utils import terminal
from mode import Service

from stream_app.fastpath import FORCED, RESTARTED, REWIND, TAKE, FastPath, OffsetOrder

DEFAULT_FETCH_MAX_WAIT_MS = 10

UPSTREAM_DRAIN_SHA256 = "8f35dd7a11144daa6ec9a3739a497b03a9dd6b57cca18aa861bb4a549400fc68"
"""sha256 of ``inspect.getsource(faust.transport.consumer.Consumer._drain_messages)``
(dedented) in faust-streaming 0.15.3, the source :meth:`Consumer._drain_messages` copies."""

FAST_PATH_NAMES = frozenset({"fast", "fast_topics", "fast_order", "track"})
"""Local names that only the fast-path change introduces (the drift test strips them)."""


class LazyTable:
    """``faust.utils.terminal.logtable(*args, **kwargs)``, built when formatted (``str``)."""

    __slots__ = ("args", "kwargs")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __str__(self) -> str:
        return str(terminal.logtable(*self.args, **self.kwargs))


COMMIT_TERMINAL = types.SimpleNamespace(logtable=LazyTable)
"""What ``faust.transport.consumer`` reads as ``terminal`` (change 5)."""

faust_consumer.terminal = COMMIT_TERMINAL  # type: ignore[assignment]


class PacedCollect:
    """``gc.collect`` for Faust's ``wait_empty`` (change 6): a full collection at most every
    :attr:`FULL_EVERY_S` seconds, the young generations (0 and 1) in between."""

    FULL_EVERY_S = 10.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._last_full: float | None = None

    def collect(self, generation: int = 2) -> int:
        now = self.clock()
        if generation >= 2 and (
            self._last_full is None or now - self._last_full >= self.FULL_EVERY_S
        ):
            self._last_full = now
            return gc.collect()
        return gc.collect(min(generation, 1))


WAIT_EMPTY_GC = PacedCollect()
"""What ``faust.transport.consumer`` reads as ``gc`` (change 6)."""

faust_consumer.gc = WAIT_EMPTY_GC  # type: ignore[assignment]


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.app, "fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS)
        # aiokafka keeps the constructor argument here and builds its Fetcher from it in
        # start(); the test suite checks both ends against the installed aiokafka.
        consumer._fetch_max_wait_ms = int(wait)  # noqa: SLF001
        consumer._fetch_min_bytes = int(getattr(self.app, "fetch_min_bytes", 1))  # noqa: SLF001
        if getattr(self.app, "exactly_once", False):
            # exactly_once (stream_app.transactions): the table recovery reads only committed
            # changelog records; read there and into the Fetcher in start(), like the wait
            consumer._isolation_level = "read_committed"  # noqa: SLF001
        return consumer


class Consumer(faust_aiokafka.Consumer):
    _order: OffsetOrder | None = None

    @property
    def offset_order(self) -> OffsetOrder:
        """The fast path's offset-order guard (:class:`~stream_app.fastpath.OffsetOrder`)."""
        if self._order is None:
            self._order = OffsetOrder(committed=lambda tp: self._committed_offset.get(tp))
        return self._order

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def seek_to_committed(self) -> Mapping[Any, int]:
        offsets = dict(await super().seek_to_committed())
        offsets.update(await self._committed_past_the_end(offsets))
        starts = await self._log_starts_of_uncommitted(offsets)
        order = self.offset_order
        for tp, offset in offsets.items():
            if (start := starts.get(tp)) is not None:
                await self._seek(tp, start)
                order.reset(tp, start)
            # without a log start (look-up failed) an uncommitted partition falls back on
            # the lowest record dropped before this seek (OffsetOrder.reset)
            elif order.reset(tp, offset) and (again := order.expected(tp)) is not None:
                # records dropped while waiting for this seek (OffsetOrder.assigned) may
                # have been fetched after the consumer moved: read them again from here
                await self._seek(tp, again)
        return offsets

    async def _log_starts_of_uncommitted(self, offsets: Mapping[Any, int | None]) -> dict[Any, int]:
        """The log start of each stream partition without a committed offset, to seek it there.

        The client seeks only partitions with a committed offset; one without stays wherever
        its position is, and that can be past records nobody answered: Faust's ``getmany``
        discards what it already drew from the client when the flow stops or the generation
        changes in the middle of a fetch. With a commit, the seek brings those records
        back; without one nothing did, and a partition that had never been
        committed lost its whole backlog (measured: all 45 records of ``clicks[0]`` in a CI
        run of the stalled-partition fault test, whose stalled worker never committed it).
        No commit means nothing is done: under ``auto_offset_reset=earliest`` the partition
        is read from its log start. Changelog partitions are left to the table recovery.
        Best effort: a failed look-up leaves the positions as they are (logged)."""
        uncommitted = [
            tp
            for tp, o in offsets.items()
            if (o is None or o < 0) and not self._is_changelog_tp(tp)
        ]
        if not uncommitted:
            return {}
        try:
            starts = await self.earliest_offsets(*uncommitted)
        except Exception as exc:  # noqa: BLE001 - e.g. a topic not created yet
            self.log.warning("could not look up the log start of uncommitted partitions: %r", exc)
            return {}
        return {tp: int(starts[tp]) for tp in uncommitted if starts.get(tp) is not None}

    async def _committed_past_the_end(self, offsets: Mapping[Any, int | None]) -> dict[Any, int]:
        """Committed offsets past their partition's end: the broker lost the log they point
        into (Tansu's memory storage after a restart, which keeps answering an empty fetch
        there, or an unclean election). Kafka answers such a fetch "out of range" and the
        consumer starts again from its reset policy; a broker that does not would leave
        every new record below that offset unread (measured: 25-35 of 100 events after a
        Tansu restart, when the worker committed its old offsets to the restarted broker
        before rejoining). Those partitions are sought to their log start; returns
        ``{tp: log start}``. Best effort: a failed look-up keeps the committed offsets."""
        sought = {tp: o for tp, o in offsets.items() if o is not None and o > 0}
        if not sought:
            return {}
        try:
            ends = await self.highwaters(*sought)
            past = [tp for tp, o in sought.items() if ends.get(tp) is not None and o > ends[tp]]
            if not past:
                return {}
            starts = await self.earliest_offsets(*past)
        except Exception as exc:  # noqa: BLE001 - e.g. a topic not created yet
            self.log.warning("could not compare committed offsets with log ends: %r", exc)
            return {}
        out = {}
        for tp in past:
            start = int(starts.get(tp) or 0)
            self.log.warning(
                "%s: committed offset %d is past the log's end %d (the broker lost data); "
                "reading from the log start %d",
                tp, sought[tp], ends[tp], start,
            )  # fmt: skip
            await self._seek(tp, start)
            self.offset_order.restarts += 1
            out[tp] = start
        return out

    async def seek(self, partition: Any, offset: int) -> None:
        await super().seek(partition, offset)
        self.offset_order.reset(partition, offset)

    async def on_partitions_assigned(self, assigned: Any, generation_id: int = 0) -> None:
        self.offset_order.assigned(assigned)  # nothing is taken before the seek to committed
        await super().on_partitions_assigned(assigned, generation_id)

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.offset_order.forget(revoked)
        await super().on_partitions_revoked(revoked)

    async def _out_of_order(self, tp: Any, offset: int, verdict: str) -> bool:
        """A record not at the offset ``tp`` must deliver next
        (:class:`~stream_app.fastpath.OffsetOrder`): seek back to that offset and drop the
        record (``REWIND``), drop it (``DROP``), or take it after too many rewinds
        (``FORCED``, logged). True: take it."""
        if verdict == RESTARTED:
            self._log_started_again(tp, offset)
            return True
        expected = self.offset_order.expected(tp)
        if verdict == FORCED:
            self.log.warning(
                "%s: offsets from %s to %d never arrived after %d seeks; going on from %d",
                tp, expected, offset - 1, self.offset_order.max_rewinds, offset,
            )  # fmt: skip
            return True
        if verdict == REWIND and expected is not None:
            self.log.info("%s: offset %d fetched before %d; seeking back", tp, offset, expected)
            try:
                await self._seek(tp, expected)
            except Exception as exc:  # noqa: BLE001 - e.g. revoked meanwhile: the rebalance seeks
                self.log.warning("%s: seeking back to %d failed (%r)", tp, expected, exc)
            else:
                self._read_offset[tp] = expected if expected else None
            self.offset_order.sought(tp)
        return False

    def _log_started_again(self, tp: Any, offset: int) -> None:
        """The broker's log of ``tp`` starts again below what this worker read (it lost
        its data; :data:`~stream_app.fastpath.RESTARTED`): forget the partition's read
        offset, acknowledgements and committed offset, all about records that are gone,
        so that the new records are answered and their offsets committed."""
        self.log.warning(
            "%s: offset %d arrived after %s without a seek: the broker's log starts again "
            "lower (it lost data); reading on from %d",
            tp, offset, self._read_offset.get(tp), offset,
        )  # fmt: skip
        self._read_offset[tp] = None
        self._committed_offset[tp] = None
        self._acked[tp].clear()
        self._acked_index[tp].clear()
        self._gap.pop(tp, None)

    async def _commit(self, offsets: Mapping[Any, int]) -> bool:
        """Faust's offset commit, except under ``exactly_once``: there the input offsets are
        committed only in the fast path's transactions (:mod:`stream_app.transactions`). A
        plain ``OffsetCommit`` from Faust's periodic or rebalance commit could reach the
        broker after a later transaction's offsets and move the group back: the next owner
        would answer those events twice."""
        if getattr(self.app, "exactly_once", False):
            return False  # nothing committed here
        return bool(await super()._commit(offsets))

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs a broker
        """Faust 0.15.3's ``Consumer._drain_messages`` with the fast path (marked below)."""
        fast: FastPath | None = getattr(self.app, "fast_path", None)  # ColdstreamApp declares it
        fast_topics = fast.topics if fast is not None else frozenset()
        fast_order = self.offset_order
        track = self.track_message
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set  # noqa: SLF001
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set  # noqa: SLF001

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
                if fast is not None:  # ---- coldstream: a new fetch (OffsetOrder) ----
                    fast_order.new_fetch()

                # Sleeping because sometimes getmany is called in a loop
                # never releasing to the event loop
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        if fast is not None and message.topic in fast_topics:
                            # ---- coldstream: no record skipped unseen (OffsetOrder) -------
                            verdict = fast_order.check(tp, offset)
                            if verdict != TAKE and not await self._out_of_order(
                                tp, offset, verdict
                            ):
                                continue
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            # We have a gap in income messages
                            if gap > 1 and r_offset:
                                acks_enabled = acks_enabled_for(message.topic)
                                if acks_enabled:
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None:  # noqa: SIM102 - Faust's code, as copied
                                if self._n_acked >= commit_every:
                                    self._n_acked = 0
                                    await self.commit()
                            # ---- coldstream fast path (the only change) ---------------
                            if fast is not None and message.topic in fast_topics:
                                if fast.full() and not self.suspend_flow.is_set():
                                    await self.wait_first(
                                        fast.wait_space(), self.suspend_flow.wait()
                                    )
                                if (
                                    not self.suspend_flow.is_set()
                                ):  # suspended: dropped, as Faust does
                                    track(message)
                                    fast.put(message)
                                    fast_order.taken(tp, offset)
                            # ---- end of the fast path --------------------------------
                            else:
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev(
                                "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                offset,
                                message.key,
                                message.value,
                            )
                    unset_flag(flag_consumer_fetching)

        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                # we're already stopping so ignore
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                # we're already stopping so ignore
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)


class Producer(faust_aiokafka.Producer):
    """Faust's producer with Kafka's idempotent producer outside transactions too, when the
    app declares ``idempotent_producer`` (Faust enables it only for exactly-once): a send
    retried after a lost acknowledgement is not written twice."""

    def _settings_extra(self) -> Mapping[str, Any]:
        extra = dict(super()._settings_extra())
        if getattr(self.app, "idempotent_producer", False):
            extra.setdefault("acks", "all")
            extra.setdefault("enable_idempotence", True)
        return extra


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[type] = Consumer
    Producer: ClassVar[type] = Producer
