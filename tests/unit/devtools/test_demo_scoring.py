"""The cold demo's parts: held-out users are out of the training data and are the only users
replayed; the next-event score compares the previous recommendation with popularity at the
moment of the previous event."""

from __future__ import annotations

import numpy as np

from devtools.demo_scoring import (
    NextEventScore,
    held_out_events,
    held_out_users,
    read_marker,
    without_users,
    write_marker,
)
from trainer.data import Interactions, Items


def _data() -> tuple[Interactions, Items]:
    users = ["a", "b", "c", "d"]
    # (user row, item row, ts) in time order
    rows = [(0, 0, 1), (1, 1, 2), (2, 0, 3), (0, 2, 4), (3, 1, 5), (2, 2, 6), (1, 0, 7)]
    u, i, t = (np.array(c, dtype=np.int64) for c in zip(*rows, strict=True))
    inter = Interactions(user=u, item=i, ts=t, event=np.zeros(len(u), np.int64), user_ids=users)
    items = Items(ids=["x", "y", "z"], titles=["X", "Y", "Z"], texts=["X", "Y", "Z"])
    return inter, items


def test_held_out_users_are_deterministic_and_removed_from_training() -> None:
    inter, items = _data()
    held = held_out_users(inter.user_ids, share=0.5, seed=3)
    assert held == held_out_users(inter.user_ids, share=0.5, seed=3) and len(held) == 2
    trained = without_users(inter, held)
    assert set(trained.user_ids) == set(inter.user_ids) - held
    kept = [trained.user_ids[r] for r in trained.user]
    assert not held & set(kept) and len(trained) == sum(
        inter.user_ids[r] not in held for r in inter.user
    )
    assert np.all(np.diff(trained.ts) >= 0)
    replay = held_out_events(inter, items, held, None)
    assert {e.user_id for e in replay} == held
    assert [e.ts for e in replay] == sorted(e.ts for e in replay)
    assert len(held_out_events(inter, items, held, 1)) == 1


def test_marker_round_trip(tmp_path) -> None:
    write_marker(tmp_path, {"b", "a"}, tmp_path / "v000001")
    doc = read_marker(tmp_path)
    assert doc is not None and doc["held_out_users"] == ["a", "b"]
    assert doc["checkpoint"] == "v000001"
    assert read_marker(tmp_path / "nope") is None


def test_next_event_score_judges_against_the_previous_answer_and_popularity() -> None:
    s = NextEventScore(past_items=["p", "p", "q"], k=2)
    s.sent("e1", "u", "a")  # popularity then: p, q (a is the user's own)
    assert s.answered("e1", ["b", "c"]) is None  # a user's first event: nothing to judge
    s.sent("e2", "u", "q")  # q was in popularity's top-2, not in the system's [b, c]
    hit = s.answered("e2", ["c", "d"])
    assert hit is not None and (hit.system, hit.popular) == (False, True)
    s.sent("e3", "u", "c")  # c was in the system's previous [c, d]; popularity: p (q seen)
    hit = s.answered("e3", ["x"])
    assert hit is not None and (hit.system, hit.popular) == (True, False)
    assert s.judged == 2 and s.rates() == (0.5, 0.5)
    assert s.answered("unknown", ["x"]) is None


def test_popularity_is_fixed_when_the_event_is_sent_not_when_answered() -> None:
    """The next event, sent before the previous answer arrives, must not count for popularity."""
    s = NextEventScore(past_items=["p"], k=1)
    s.sent("e1", "u", "a")
    s.sent("e2", "v", "n")
    s.sent("e3", "v", "n")  # n is now the most popular, after e1 was sent
    s.sent("e4", "u", "n")
    s.answered("e1", ["z"])
    hit = s.answered("e4", ["z"])
    assert hit is not None and hit.popular is False  # at e1, popularity's top-1 was p
