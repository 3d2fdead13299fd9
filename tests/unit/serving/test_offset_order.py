"""The fast path's offset-order guard (``stream_app.fastpath.OffsetOrder``): a record is
taken only at the offset its partition must deliver next, or past offsets shown not to
exist; a fetch that jumps ahead (the rolling-restart loss) is rewound, never skipped."""

from __future__ import annotations

from stream_app.fastpath import DROP, FORCED, REWIND, TAKE, OffsetOrder

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


def test_records_behind_are_left_to_fausts_read_offset_check() -> None:
    """A re-read, or a log that starts again at 0 (Tansu's memory storage after a restart):
    the guard does not drop them; Faust's own check decides, as it did before the guard."""
    order = OffsetOrder()
    order.reset(TP, 50)
    assert _feed(order, [[50, 51, 49, 0, 1]]) == [
        (50, TAKE),
        (51, TAKE),
        (49, TAKE),
        (0, TAKE),
        (1, TAKE),
    ]
    assert order.expected(TP) == 2 and order.rewinds == 0


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
