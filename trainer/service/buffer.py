"""The trainer's replay buffer: the most recent events, in arrival order, bounded.

:meth:`EventBuffer.split` cuts it for one re-distillation cycle: the oldest
``1 - holdout_share`` of the events are the training sessions; the latest slice is the
gate's holdout and is **never trained on** (neither as input nor as target). A holdout
user has at least two events in that slice: the revealed history is their training
events plus their first held-out event, the truth their next ``n_next`` held-out items.

:meth:`EventBuffer.forget` deletes a user (a forget request, ``docs/privacy.md``): every
buffered event of the user and their event ids go, and the user's events with a timestamp
at or before the request's are refused from then on (a redelivery, a late duplicate), so
the next cycle is not trained on them. Later events start afresh. The buffer remembers the
forgotten users' ids and request times for the last ``max(capacity, MIN_FORGET_MARKS)``
requests (oldest dropped first).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass

MIN_FORGET_MARKS = 10_000
"""The buffer remembers at least this many forget requests (user -> request time)."""


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
        # OrderedDicts: dropping the oldest is O(1) (a plain dict's first key after many
        # deletions is found by scanning past every deleted slot)
        self._ids: OrderedDict[str, str] = OrderedDict()
        """Event id -> user, the most recent ``2 * capacity`` (dedupe)."""
        self._forgotten: OrderedDict[str, float] = OrderedDict()
        """User -> timestamp of their latest forget request (oldest first)."""
        self.added = 0
        """Events ever added (the cycle trigger counts from it)."""
        self.refused_forgotten = 0
        """Events refused because their user was forgotten after them."""

    def __len__(self) -> int:
        return len(self._events)

    def add(
        self, user: str, item: str, etype: int = 0, ts: float = 0.0, event_id: str | None = None
    ) -> bool:
        user = str(user)
        at = self._forgotten.get(user)
        if at is not None and float(ts) <= at:  # older than the user's forget request
            self.refused_forgotten += 1
            return False
        if event_id is not None:
            if event_id in self._ids:
                return False
            self._ids[event_id] = user
            if len(self._ids) > 2 * self.capacity:
                self._ids.popitem(last=False)
        self._events.append(BufferedEvent(user, str(item), int(etype), float(ts)))
        self.added += 1
        return True

    def forget(self, user: str, ts: float) -> int:
        """Delete ``user``: their buffered events and event ids, and refuse their events with a
        timestamp at or before ``ts`` (the forget request's) from now on. Returns the number
        of events removed."""
        user = str(user)
        kept = [e for e in self._events if e.user != user]
        removed = len(self._events) - len(kept)
        if removed:
            self._events = deque(kept, maxlen=self.capacity)
        self._ids = OrderedDict((i, u) for i, u in self._ids.items() if u != user)
        at = max(float(ts), self._forgotten.pop(user, float("-inf")))
        self._forgotten[user] = at
        while len(self._forgotten) > max(self.capacity, MIN_FORGET_MARKS):
            self._forgotten.popitem(last=False)
        return removed

    def users(self) -> set[str]:
        """The users with at least one buffered event."""
        return {e.user for e in self._events}

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
