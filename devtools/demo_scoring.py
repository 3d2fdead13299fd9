"""What makes ``coldstream demo`` a cold-start demo, and how it scores itself.

* **Held-out users.** :func:`held_out_users` sets aside a share of the MovieLens users (by a
  seed); the bootstrap model is trained without any of their events
  (:func:`without_users`) and the demo replays only their events, in time order
  (:func:`held_out_events`). Every replayed user is new to the model.
* **Did the recommendation anticipate the next event?** :class:`NextEventScore`: for each
  replayed event after a user's first, was it among the items the worker recommended after
  the user's previous event (the system), and among the most popular items at the moment
  the previous event was sent (the reference: training interactions plus the stream so far,
  the user's items excluded)? The running hit rates of both are the demo's evidence.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "HOLDOUT_SEED",
    "HOLDOUT_SHARE",
    "MARKER",
    "NextEventScore",
    "held_out_events",
    "held_out_users",
    "read_marker",
    "without_users",
    "write_marker",
]

HOLDOUT_SHARE = 0.1
"""Share of the MovieLens users the demo's model never sees (94 of 943)."""
HOLDOUT_SEED = 0
MARKER = "demo-holdout.json"
"""Written beside the checkpoints of a store the demo trained: which users it held out."""


def held_out_users(
    user_ids: Sequence[str], share: float = HOLDOUT_SHARE, seed: int = HOLDOUT_SEED
) -> set[str]:
    """A deterministic ``share`` of ``user_ids`` (at least one)."""
    n = max(1, int(round(len(user_ids) * share)))
    rows = np.random.default_rng(seed).permutation(len(user_ids))[:n]
    return {user_ids[int(r)] for r in rows}


def without_users(inter: Any, users: set[str]) -> Any:
    """The interactions with every event of ``users`` removed (the users drop out too)."""
    from trainer.data import Interactions

    drop = np.array([u in users for u in inter.user_ids], dtype=bool)
    keep = ~drop[inter.user]
    kept_rows = np.flatnonzero(~drop)
    new_row = np.full(len(inter.user_ids), -1, dtype=np.int64)
    new_row[kept_rows] = np.arange(len(kept_rows))
    return Interactions(
        user=new_row[inter.user[keep]],
        item=inter.item[keep],
        ts=inter.ts[keep],
        event=inter.event[keep],
        user_ids=[inter.user_ids[int(r)] for r in kept_rows],
    )


def held_out_events(inter: Any, items: Any, users: set[str], limit: int | None) -> list[Any]:
    """The events of ``users`` in time order (the interactions are sorted), at most ``limit``."""
    from devtools.replay import ReplayEvent

    out = []
    for i in range(len(inter)):
        u = inter.user_ids[int(inter.user[i])]
        if u in users:
            out.append(
                ReplayEvent(
                    u, items.ids[int(inter.item[i])], int(inter.event[i]), float(inter.ts[i])
                )
            )
            if limit is not None and len(out) >= limit:
                break
    return out


def write_marker(store: Path, users: set[str], checkpoint: Path) -> None:
    (store / MARKER).write_text(
        json.dumps(
            {
                "share": HOLDOUT_SHARE,
                "seed": HOLDOUT_SEED,
                "checkpoint": checkpoint.name,
                "held_out_users": sorted(users),
            },
            indent=1,
        )
    )


def read_marker(store: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((store / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("held_out_users"), list) else None


@dataclass
class Hit:
    """The verdict on one next event: in the system's previous top-K, in popularity's."""

    system: bool
    popular: bool


@dataclass
class NextEventScore:
    """Running hit rates of the next event: the system's previous recommendation against the
    popularity reference. Call :meth:`sent` for each event in send order and :meth:`answered`
    for each recommendation (a user's arrive in order: one partition per user)."""

    past_items: Iterable[str] = ()
    k: int = 10
    counts: Counter[str] = field(default_factory=Counter)
    seen: dict[str, set[str]] = field(default_factory=dict)
    pending: dict[str, tuple[str, str, tuple[str, ...]]] = field(default_factory=dict)
    last: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)
    system_hits: int = 0
    popular_hits: int = 0
    judged: int = 0

    def __post_init__(self) -> None:
        self.counts.update(self.past_items)

    def sent(self, event_id: str, user: str, item: str) -> None:
        """Count the event and fix the popularity top-K of this moment for ``user``."""
        self.counts[item] += 1
        seen = self.seen.setdefault(user, set())
        seen.add(item)
        top = [i for i, _ in self.counts.most_common(self.k + len(seen)) if i not in seen]
        self.pending[event_id] = (user, item, tuple(top[: self.k]))

    def answered(self, event_id: str, rec_items: Sequence[str]) -> Hit | None:
        """Judge the event against the user's previous recommendation (``None``: the user's
        first event, or an event not sent through :meth:`sent`), then remember this one."""
        entry = self.pending.pop(event_id, None)
        if entry is None:
            return None
        user, item, popular = entry
        prev = self.last.get(user)
        self.last[user] = (tuple(rec_items[: self.k]), popular)
        if prev is None:
            return None
        hit = Hit(system=item in prev[0], popular=item in prev[1])
        self.judged += 1
        self.system_hits += hit.system
        self.popular_hits += hit.popular
        return hit

    def rates(self) -> tuple[float, float]:
        """``(system, popularity)`` hit rates so far (0 before any judged event)."""
        n = max(self.judged, 1)
        return self.system_hits / n, self.popular_hits / n
