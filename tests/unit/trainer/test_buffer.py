"""The replay buffer: bounded, deduplicated by event id, split so the holdout is never trained on."""

from __future__ import annotations

from trainer.buffer import EventBuffer


def test_buffer_split_never_trains_on_the_holdout():
    buf = EventBuffer(100)
    for n in range(10):
        buf.add("a", f"i{n}", 0, n)
        buf.add("b", f"j{n}", 1, n)
    assert buf.add("a", "x", event_id="e1") is True  # first time accepted
    assert buf.add("a", "x", event_id="e1") is False  # duplicate event id
    train, hold = buf.split(0.25)
    trained = {i for evs in train.values() for i, _ in evs}
    truths = {i for t in hold.truths for i in t}
    assert trained and truths and not trained & truths
    assert len(hold) == 2
    small = EventBuffer(5)
    for n in range(9):
        small.add("u", str(n))
    assert [e.item for e in small.events()] == ["4", "5", "6", "7", "8"]


def test_snapshot_is_an_independent_copy_of_the_events():
    buf = EventBuffer(4)
    for n in range(6):
        buf.add(f"u{n % 2}", f"i{n}", n % 2, float(n), event_id=f"e{n}")
    snap = buf.snapshot()
    assert snap.capacity == buf.capacity and snap.events() == buf.events() and len(snap) == 4
    assert snap.added == 4  # counts its own additions (the cycle trigger reads the live buffer's)
    buf.add("u9", "late", 0, 9.0)
    assert [e.item for e in snap.events()] == ["i2", "i3", "i4", "i5"]
    assert snap.add("u0", "i5", 1, 5.0, event_id="e5") is True  # event ids are not carried
