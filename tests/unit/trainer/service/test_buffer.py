"""The replay buffer: bounded, deduplicated by event id, split so the holdout is never trained on."""

from __future__ import annotations

from trainer.service.buffer import EventBuffer


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


def test_forget_removes_the_user_and_refuses_their_older_events() -> None:
    buf = EventBuffer(100)
    for n in range(6):
        buf.add("gone", f"i{n}", 0, float(n), event_id=f"g{n}")
        buf.add("kept", f"j{n}", 1, float(n), event_id=f"k{n}")
    assert buf.forget("gone", ts=10.0) == 6
    assert {e.user for e in buf.events()} == {"kept"} and len(buf) == 6
    assert buf.users() == {"kept"}
    train, hold = buf.split(0.25)
    assert "gone" not in train and all(i.startswith("j") for h in hold.histories for i, _ in h)
    # a redelivery (same id) or a late copy (new id) from before the request never comes back
    assert buf.add("gone", "i0", 0, 0.0, event_id="g0") is False
    assert buf.add("gone", "i9", 0, 10.0, event_id="late") is False
    assert buf.refused_forgotten == 2
    # what the user does after the request is new data
    assert buf.add("gone", "new", 0, 11.0, event_id="g-new") is True
    assert [e.item for e in buf.events() if e.user == "gone"] == ["new"]
    assert buf.add("kept", "j9", 1, 0.0, event_id="k9") is True  # other users are untouched


def test_forget_keeps_the_bound_and_the_latest_request_time() -> None:
    buf = EventBuffer(3)
    for n in range(3):
        buf.add("u", str(n), ts=float(n))
    buf.forget("u", ts=5.0)
    buf.forget("u", ts=2.0)  # an older request does not move the mark back
    assert buf.add("u", "x", ts=4.0) is False and buf.add("u", "y", ts=6.0) is True
    for n in range(5):
        buf.add("v", str(n), ts=float(n))
    assert len(buf) == 3 and [e.item for e in buf.events()] == ["2", "3", "4"]
