"""The trainer's replay buffer: the most recent events, in arrival order, bounded.

:meth:`EventBuffer.split` cuts it for one re-distillation cycle: the oldest
``1 - holdout_share`` of the events are the training sessions; the latest slice is the
gate's holdout and is **never trained on** (neither as input nor as target). A holdout
user has at least two events in that slice: the revealed history is their training
events plus their first held-out event, the truth their next ``n_next`` held-out items.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BufferedEvent:
    user: str
    item: str
    etype: int
    ts: float


@dataclass
class Holdout:
    """Gate users: revealed history ``[(item, etype)]`` and the next items (truth)."""

    histories: list[list[tuple[str, int]]]
    truths: list[list[str]]

    def __len__(self) -> int:
        return len(self.histories)


class EventBuffer:
    """Bounded FIFO of events (oldest dropped first) with bounded event-id dedupe."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._events: deque[BufferedEvent] = deque(maxlen=capacity)
        self._ids: dict[str, None] = {}
        self.added = 0
        """Events ever added (the cycle trigger counts from it)."""

    def __len__(self) -> int:
        return len(self._events)

    def add(
        self, user: str, item: str, etype: int = 0, ts: float = 0.0, event_id: str | None = None
    ) -> bool:
        if event_id is not None:
            if event_id in self._ids:
                return False
            self._ids[event_id] = None
            if len(self._ids) > 2 * self.capacity:
                del self._ids[next(iter(self._ids))]
        self._events.append(BufferedEvent(str(user), str(item), int(etype), float(ts)))
        self.added += 1
        return True

    def events(self) -> list[BufferedEvent]:
        return list(self._events)

    def snapshot(self) -> EventBuffer:
        """A copy of the events (same capacity; event ids are not carried: no dedupe needed)."""
        snap = EventBuffer(self.capacity)
        for e in self._events:
            snap.add(e.user, e.item, e.etype, e.ts)
        return snap

    def split(
        self, holdout_share: float, *, n_next: int = 10
    ) -> tuple[dict[str, list[tuple[str, int]]], Holdout]:
        """``(training sessions {user: [(item, etype)] oldest first}, holdout)``."""
        events = self.events()
        cut = len(events) - max(1, math.ceil(holdout_share * len(events)))
        train: dict[str, list[tuple[str, int]]] = {}
        for e in events[:cut]:
            train.setdefault(e.user, []).append((e.item, e.etype))
        later: dict[str, list[tuple[str, int]]] = {}
        for e in events[cut:]:
            later.setdefault(e.user, []).append((e.item, e.etype))
        hs, ts = [], []
        for user, evs in later.items():
            if len(evs) < 2:
                continue
            # revealed: the user's training events and their first held-out event
            hs.append(list(train.get(user, [])) + evs[:1])
            ts.append([i for i, _ in evs[1 : 1 + n_next]])
        return train, Holdout(hs, ts)
