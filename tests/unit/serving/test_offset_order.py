"""The fast path's offset-order guard (``stream_app.fastpath.OffsetOrder``): a record is
taken only at the offset its partition must deliver next, or past offsets shown not to
exist; a fetch that jumps ahead (the rolling-restart loss) is rewound, never skipped."""

from __future__ import annotations

from stream_app.fastpath import DROP, FORCED, RESTARTED, REWIND, TAKE, OffsetOrder

TP = ("clicks", 2)


def _feed(order: OffsetOrder, fetches: list[list[int]]) -> list[tuple[int, str]]:
    """Run fetches through the guard as the fetch loop does; returns (offset, verdict)."""
    seen = []
    for fetch in fetches:
        order.new_fetch()
        for off in fetch:
            verdict = order.check(TP, off)
            if verdict in (TAKE, FORCED):
                order.taken(TP, off)
            seen.append((off, verdict))
    return seen


def test_a_stale_fetch_ahead_of_the_committed_offset_is_rewound_not_skipped() -> None:
    order = OffsetOrder()
    order.reset(TP, 5358)  # the seek to the committed offset after a rebalance
    seen = _feed(order, [[5519, 5520, 5521], [5358, 5359, 5360]])
    assert seen[0] == (5519, REWIND)
    assert [v for _, v in seen[1:3]] == [DROP, DROP]
    assert [v for _, v in seen[3:]] == [TAKE, TAKE, TAKE]
    assert order.expected(TP) == 5361 and order.rewinds == 1 and order.forced == 0


def test_one_missing_offset_at_the_head_is_rewound_too() -> None:
    """Faust's own head check lets a commit step over exactly one missing offset."""
    order = OffsetOrder()
    order.reset(TP, 100)
    assert _feed(order, [[101]]) == [(101, REWIND)]


def test_offsets_that_do_not_exist_are_taken_after_one_rewind() -> None:
    """A transaction marker or compaction: the same later record comes first again."""
    order = OffsetOrder()
    order.reset(TP, 10)
    seen = _feed(order, [[10, 11, 13, 14], [13, 14, 15]])
    assert [v for _, v in seen] == [TAKE, TAKE, REWIND, DROP, TAKE, TAKE, TAKE]
    assert order.expected(TP) == 16


def test_records_behind_left_from_before_a_seek_are_left_to_fausts_read_offset_check() -> None:
    """A seek during a fetch (a rebalance's seek to the committed offset) makes the rest of
    that fetch stale: a record behind is not the guard's business, Faust's check drops it."""
    order = OffsetOrder()
    order.new_fetch()
    assert [order.check(TP, o) for o in (40, 41)] == [TAKE, TAKE]
    order.taken(TP, 40)
    order.taken(TP, 41)
    order.reset(TP, 60)  # sought forward while this fetch is still being read
    assert order.check(TP, 42) == TAKE  # stale; Faust's read offset (60) drops it
    assert order.restarts == 0


def test_a_record_behind_what_was_committed_with_no_seek_is_a_log_that_started_again() -> None:
    """aiokafka hands out only records at its position; one behind this worker's own commit
    with no seek since the fetch began means the broker said "out of range" and the log
    starts again lower (Tansu's memory storage after a restart): taken, and reading goes on
    from there."""
    order = OffsetOrder(committed={TP: 40}.get)
    order.reset(TP, 50)
    seen = _feed(order, [[50, 51], [0, 1, 2]])
    assert seen == [(50, TAKE), (51, TAKE), (0, RESTARTED), (1, TAKE), (2, TAKE)]
    assert order.expected(TP) == 3 and order.restarts == 1 and order.rewinds == 0


def test_a_rebalance_reset_to_the_groups_commit_is_not_a_restart() -> None:
    """A rebalance moves aiokafka's position back to the group's committed offset by itself
    (no seek of ours), and those records can come a fetch later: at or above this worker's
    own commit they are a re-read, left to Faust's read-offset check (taking them again
    answered them twice and out of order in a rolling restart). With no commit of its own
    the worker cannot tell a restart: Faust's check decides too."""
    order = OffsetOrder(committed={TP: 724}.get)
    order.reset(TP, 700)
    _feed(order, [list(range(700, 730))])
    order.new_fetch()  # the reset came a fetch later, with no seek of ours
    assert [order.check(TP, o) for o in (724, 725)] == [TAKE, TAKE]  # Faust drops them as read
    assert order.restarts == 0 and order.expected(TP) == 730
    unknown = OffsetOrder()
    unknown.reset(TP, 50)
    assert _feed(unknown, [[50, 51], [0]])[-1] == (0, TAKE) and unknown.restarts == 0


def test_after_a_rewind_the_stale_rest_of_the_fetch_is_not_a_restart() -> None:
    order = OffsetOrder()
    order.reset(TP, 10)
    order.new_fetch()
    assert order.check(TP, 30) == REWIND
    order.sought(TP)  # the fetch loop sought back to 10
    assert order.check(TP, 5) == TAKE  # left to Faust
    assert order.restarts == 0


def test_a_partition_never_stalls_for_ever() -> None:
    """Fetches that keep bringing other later records: rewound max_rewinds times, then
    taken (counted as forced, for the log)."""
    order = OffsetOrder(max_rewinds=3)
    order.reset(TP, 0)
    seen = _feed(order, [[10], [20], [30], [40]])
    assert [v for _, v in seen] == [REWIND, REWIND, REWIND, FORCED]
    assert order.forced == 1 and order.expected(TP) == 41


def test_unknown_position_takes_anything_and_revoked_partitions_are_forgotten() -> None:
    order = OffsetOrder()
    assert _feed(order, [[7, 8]]) == [(7, TAKE), (8, TAKE)]
    order.forget([TP])
    assert order.expected(TP) is None
    order.reset(TP, -1)  # no committed offset
    assert order.check(TP, 3) == TAKE


def test_a_revoked_partition_is_not_read_again_before_its_seek() -> None:
    """A rolling restart's rebalance, as logged: the worker kept clicks-1; records 556-558
    were dropped during the revocation (committed: 556), so the consumer's own position was
    559. Faust resumed the fetch loop during table recovery and the partition a round trip
    before seeking: 559.. arrived first. Taken, they were answered before 556-558 (3-36
    users out of order per run). Dropped, they come again after the seek, in order."""
    order = OffsetOrder()
    assert order.reset(TP, 500) is False  # nothing dropped: no second seek
    _feed(order, [[500, 501]])
    order.forget([TP])  # the revocation
    assert _feed(order, [[559, 560]]) == [(559, DROP), (560, DROP)]
    assert order.expected(TP) is None and order.unsought_drops == 2
    # Faust's seek to the committed offsets, after recovery; True: seek there once more (the
    # drops may have come after the consumer moved, and an ended stream brings nothing else)
    assert order.reset(TP, 556) is True
    seen = _feed(order, [[561], [556, 557, 558, 559]])
    assert seen[0] == (561, REWIND)  # what is left of the fetch made before the seek
    assert seen[1:] == [(556, TAKE), (557, TAKE), (558, TAKE), (559, TAKE)]
    assert order.expected(TP) == 560


def test_a_newly_assigned_partition_is_not_read_before_its_seek() -> None:
    """The same roll, a partition new to the worker: its records were filtered out while
    the input partitions were paused for the table recovery, which moved the consumer's
    position from the committed 1658 to 1667 before the seek."""
    order = OffsetOrder()
    order.assigned([TP])
    assert _feed(order, [[1667, 1668]]) == [(1667, DROP), (1668, DROP)]
    order.reset(TP, 1658)
    seen = _feed(order, [[1685], [1658, 1659]])
    assert seen == [(1685, REWIND), (1658, TAKE), (1659, TAKE)]


def test_records_dropped_before_a_seek_with_no_commit_are_read_again() -> None:
    """A new group has no committed offset, so the seek moves nothing: the consumer's
    position is already past what was dropped. The lowest dropped offset (where the reset
    policy began) is expected instead, so those records are sought back, not skipped."""
    order = OffsetOrder()
    order.assigned([TP])
    assert _feed(order, [[0, 1, 2]]) == [(0, DROP), (1, DROP), (2, DROP)]
    assert order.reset(TP, None) is True and order.expected(TP) == 0
    seen = _feed(order, [[3], [0, 1, 2, 3]])
    assert seen == [(3, REWIND), (0, TAKE), (1, TAKE), (2, TAKE), (3, TAKE)]


def test_only_the_rebalanced_partitions_wait_for_their_seek() -> None:
    other = ("purchases", 0)
    order = OffsetOrder()
    order.forget([TP])
    assert order.check(other, 7) == TAKE  # never assigned, never sought: anything goes
    assert order.check(TP, 7) == DROP
    order.reset(TP, None)  # sought with no committed offset: anything goes again
    assert order.check(TP, 7) == TAKE


def test_a_committed_offset_past_the_log_end_is_sought_to_the_log_start() -> None:
    """A broker that lost its data (Tansu's memory storage after a restart) can still hold
    offsets the worker committed to it before rejoining: past the log's end, where that
    broker answers empty fetches for ever. Such partitions are read from the log start."""
    import asyncio
    import logging

    from stream_app.transport import Consumer

    class Stub:
        log = logging.getLogger("test")
        offset_order = OffsetOrder()
        sought: dict = {}

        async def highwaters(self, *tps):  # noqa: ANN002, ANN202
            return {("clicks", 0): 3, ("clicks", 1): 40, ("clicks", 2): 0}

        async def earliest_offsets(self, *tps):  # noqa: ANN002, ANN202
            return dict.fromkeys(tps, 0)

        async def _seek(self, tp, offset):  # noqa: ANN001, ANN202
            self.sought[tp] = offset

    stub = Stub()
    committed = {("clicks", 0): 20, ("clicks", 1): 35, ("clicks", 2): None}
    out = asyncio.run(Consumer._committed_past_the_end(stub, committed))  # type: ignore[arg-type]
    assert out == {("clicks", 0): 0} == stub.sought  # 35 <= 40 is a healthy log: left alone
    assert stub.offset_order.restarts == 1


def _consumer_after_faust_seek(
    monkeypatch, faust_offsets: dict, *, log_start: int = 0, changelog: tuple = ()
) -> tuple:
    """The transport's consumer with the client side replaced: Faust's seek to the committed
    offsets returns ``faust_offsets``; every log starts at ``log_start``; no committed
    offset is past its log's end. Returns (consumer, seeks made, partitions asked their
    log start)."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    from stream_app.transport import Consumer

    sought: list = []
    asked: list = []

    async def faust_seek(self):  # noqa: ANN001, ANN202 - aiokafka: None where no commit
        return dict(faust_offsets)

    async def none_past_the_end(self, offsets):  # noqa: ANN001, ANN202
        return {}

    async def earliest(self, *tps):  # noqa: ANN001, ANN202
        asked.extend(tps)
        return dict.fromkeys(tps, log_start)

    async def seek(self, tp, offset):  # noqa: ANN001, ANN202
        sought.append((tp, offset))

    monkeypatch.setattr(faust_aiokafka.Consumer, "seek_to_committed", faust_seek)
    monkeypatch.setattr(Consumer, "_committed_past_the_end", none_past_the_end)
    monkeypatch.setattr(Consumer, "earliest_offsets", earliest)
    monkeypatch.setattr(Consumer, "_seek", seek)
    monkeypatch.setattr(Consumer, "_is_changelog_tp", lambda self, tp: tp in changelog)
    return Consumer.__new__(Consumer), sought, asked


def test_the_seek_to_committed_seeks_again_only_where_records_were_dropped(monkeypatch) -> None:
    """The transport's half of the rule: after Faust's seek, a partition that dropped
    records while it waited is sought once more (an ended stream brings nothing to rewind
    on); one that dropped nothing is left where Faust put it."""
    import asyncio

    other = ("purchases", 0)
    consumer, sought, _ = _consumer_after_faust_seek(monkeypatch, {TP: 556, other: 10})
    consumer.offset_order.assigned([TP, other])
    assert consumer.offset_order.check(TP, 559) == DROP
    assert asyncio.run(consumer.seek_to_committed()) == {TP: 556, other: 10}
    assert sought == [(TP, 556)]
    assert consumer.offset_order.check(TP, 556) == TAKE


def test_the_seek_to_committed_takes_an_uncommitted_partition_back_to_its_log_start(
    monkeypatch,
) -> None:
    """The client seeks only partitions with a committed offset. One without stays where
    its position is, which can be past records nobody answered (Faust's ``getmany`` discards
    what it drew when the flow stops mid-fetch, without this guard seeing them): the
    stalled-partition fault test lost all of a never-committed ``clicks[0]`` in CI. Such a
    partition is sought to its log start; a changelog partition is left to the recovery."""
    import asyncio

    committed, changelog = ("clicks", 1), ("app-sessions-changelog", 0)
    offsets = {TP: None, committed: 10, changelog: None}
    consumer, sought, asked = _consumer_after_faust_seek(
        monkeypatch,
        offsets,
        log_start=3,
        changelog=(changelog,),  # retention removed 0-2
    )
    order = consumer.offset_order
    order.assigned([TP, committed, changelog])
    # what reaches the guard before the seek: nothing of TP (Faust discarded its fetch)
    assert asyncio.run(consumer.seek_to_committed()) == offsets
    assert asked == [TP]  # only the uncommitted stream partition
    assert sought == [(TP, 3)]  # the committed one is where the client put it
    assert order.expected(TP) == 3
    assert order.check(TP, 45) == REWIND  # a stale record past the start is not taken
    order.new_fetch()
    assert order.check(TP, 3) == TAKE
