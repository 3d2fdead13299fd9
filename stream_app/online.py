"""Online quality: join each user's next event to the recommendation made just before it.

For every accepted event of a user, in order: if the user's previous recommendation was
made at most ``window_s`` earlier, it is one *request* for that recommendation's model
version, and a *hit* when the event's item is in its top-K. Then the event's own
recommendation becomes the user's latest. Memory is bounded (``max_users``, oldest user
forgotten first). Counts go to ``coldstream_online_requests_total`` /
``coldstream_online_hits_total{model_version}`` once per micro-batch: online HR@K per
version is ``rate(hits) / rate(requests)``.

:class:`WindowedCounter` is the popularity of the current window behind the recommender's
``popular`` fallback, in bounded memory (a heavy-hitter summary per time bucket).
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


class OnlineQuality:
    def __init__(
        self,
        *,
        window_s: float,
        metrics: Any = None,
        max_users: int = 200_000,
        segments: bool = True,
    ) -> None:
        """``segments=False``: count per model version only (a shadow's tracker: the
        cold/warm segment series stay the served recommendations')."""
        self.window_s = window_s
        self.segments = segments
        self.metrics = metrics
        self.max_users = max_users
        self._last: OrderedDict[str, tuple[float, str, tuple[str, ...], str]] = OrderedDict()
        self.requests: Counter[str] = Counter()
        self.hits: Counter[str] = Counter()
        self.segment_requests: Counter[str] = Counter()
        """By the segment of the previous recommendation: ``cold`` (a cold-start one) / ``warm``."""
        self.segment_hits: Counter[str] = Counter()
        self._pending_req: Counter[str] = Counter()
        self._pending_hit: Counter[str] = Counter()
        self._pending_seg_req: Counter[str] = Counter()
        self._pending_seg_hit: Counter[str] = Counter()

    def forget(self, user: str) -> None:
        """Drop what is remembered of ``user`` (a forget request)."""
        self._last.pop(user, None)

    def step(
        self,
        user: str,
        item: str,
        recommended: Sequence[tuple[str, float]],
        version: str,
        now: float,
        *,
        cold: bool = False,
    ) -> None:
        """Join ``item`` (the user's new event) to their previous top-K, then remember the new one.
        ``cold``: the new top-K is a cold-start recommendation (the user had at most
        ``cold_start_events`` events); the next event's check counts in that segment."""
        prev = self._last.pop(user, None)
        if prev is not None and now - prev[0] <= self.window_s:
            self._pending_req[prev[1]] += 1
            self._pending_seg_req[prev[3]] += 1
            if item in prev[2]:
                self._pending_hit[prev[1]] += 1
                self._pending_seg_hit[prev[3]] += 1
        # a tuple of the ids: one object per user (a frozenset stays tracked by the cyclic
        # GC for ever; a tuple of strings is untracked at its first collection, so the
        # collector never rescans 200,000 of them), scanned faster than a set is made
        self._last[user] = (
            now,
            version,
            tuple([i for i, _ in recommended]),
            "cold" if cold else "warm",
        )
        if len(self._last) > self.max_users:
            self._last.popitem(last=False)

    def flush(self) -> None:
        """Publish this batch's counts (one increment per version)."""
        for v, n in self._pending_req.items():
            self.requests[v] += n
            if self.metrics is not None:
                self.metrics.online_requests.labels(v).inc(n)
        for v, n in self._pending_hit.items():
            self.hits[v] += n
            if self.metrics is not None:
                self.metrics.online_hits.labels(v).inc(n)
        if not self.segments:
            self._pending_seg_req.clear()
            self._pending_seg_hit.clear()
        for seg, n in self._pending_seg_req.items():
            self.segment_requests[seg] += n
            if self.metrics is not None:
                self.metrics.segment_requests.labels(seg).inc(n)
        for seg, n in self._pending_seg_hit.items():
            self.segment_hits[seg] += n
            if self.metrics is not None:
                self.metrics.segment_hits.labels(seg).inc(n)
        self._pending_req.clear()
        self._pending_hit.clear()
        self._pending_seg_req.clear()
        self._pending_seg_hit.clear()

    def hit_rate(self, version: str) -> float:
        return self.hits[version] / self.requests[version] if self.requests[version] else 0.0


class WindowedCounter:
    """Popularity of the last ``window_s`` seconds in bounded memory: the counts behind the
    recommender's ``popular`` fallback (*popular in the current window*).

    The window is ``buckets`` time buckets. Each bucket keeps a Misra-Gries summary of at
    most ``2 * capacity`` item counters (past that it is cut back to ``capacity`` by
    subtracting the next count: a count is under-estimated by at most the bucket's
    total / (capacity + 1)), its total, and a bitset of ``PAIR_BITS`` hashed
    ``(user, item)`` pairs: with users given, a user counts at most once per item and
    bucket (a colliding pair is not counted: about 3.5% of pairs at 300,000 pairs a bucket).
    Memory: O(buckets x (capacity + PAIR_BITS / 8 bytes)), whatever the number of items or
    users. ``update`` costs O(batch) (+ O(capacity) per cut), :attr:`total` O(1),
    :meth:`most_common` O(buckets x capacity) (the recommender caches it for a second)."""

    PAIR_BITS = 1 << 23
    """Bits of each bucket's ``(user, item)`` bitset (1 MiB)."""

    def __init__(
        self,
        window_s: float = 3600.0,
        buckets: int = 12,
        clock: Any = None,
        *,
        capacity: int = 1000,
    ) -> None:
        import time as _time

        if window_s <= 0 or buckets < 1 or capacity < 1:
            raise ValueError("window_s, buckets and capacity must be positive")
        self.window_s = window_s
        self.bucket_s = window_s / buckets
        self.capacity = capacity
        self.clock = clock or _time.monotonic
        self._buckets: deque[_Bucket] = deque()
        self._total = 0

    @property
    def total(self) -> int:
        """Events counted in the window (a running sum: O(1))."""
        self._expire(self.clock())
        return self._total

    def _expire(self, now: float) -> None:
        while self._buckets and now - self._buckets[0].start >= self.window_s:
            self._total -= self._buckets.popleft().total

    def _current(self) -> _Bucket:
        now = self.clock()
        self._expire(now)
        if not self._buckets or now - self._buckets[-1].start >= self.bucket_s:
            self._buckets.append(_Bucket(now))
        return self._buckets[-1]

    def update(self, items: Iterable[str], users: Iterable[str] | None = None) -> None:
        """Count one batch of events (``users``: aligned with ``items``, one count per user
        and item in a bucket)."""
        b = self._current()
        batch = list(items)
        if users is not None:
            batch = b.first_pairs(batch, list(users), self.PAIR_BITS)
        if not batch:
            return
        counts = b.counts
        for iid, c in Counter(batch).items():
            counts[iid] = counts.get(iid, 0) + c
        b.total += len(batch)
        self._total += len(batch)
        if len(counts) > 2 * self.capacity:
            b.cut(self.capacity)

    def most_common(self, n: int | None = None) -> list[tuple[str, int]]:
        """The ``n`` items with the highest counts of the window, highest first."""
        self._expire(self.clock())
        merged: Counter[str] = Counter()
        for b in self._buckets:
            merged.update(b.counts)
        return merged.most_common(n)

    def count(self, item: str) -> int:
        """The window's count of ``item`` (a lower bound; 0 when not tracked)."""
        self._expire(self.clock())
        return sum(b.counts.get(item, 0) for b in self._buckets)

    def __len__(self) -> int:
        """Tracked counters (bounded by buckets x 2 x capacity)."""
        self._expire(self.clock())
        return sum(len(b.counts) for b in self._buckets)


class _Bucket:
    __slots__ = ("counts", "pairs", "start", "total")

    def __init__(self, start: float) -> None:
        self.start = start
        self.counts: dict[str, int] = {}
        self.total = 0
        self.pairs: np.ndarray | None = None

    def first_pairs(self, items: list[str], users: list[str], bits: int) -> list[str]:
        """The items whose ``(user, item)`` pair is new to this bucket (and to the batch)."""
        if len(users) != len(items):
            raise ValueError(f"{len(users)} users for {len(items)} items")
        if not items:
            return []
        if self.pairs is None:
            self.pairs = np.zeros(bits // 8, np.uint8)
        h = np.fromiter(
            (hash((u, i)) for u, i in zip(users, items, strict=True)), np.int64, len(items)
        )
        pos = h.view(np.uint64) & np.uint64(bits - 1)
        pos, first = np.unique(pos, return_index=True)
        byte, bit = pos >> np.uint64(3), np.left_shift(1, (pos & np.uint64(7))).astype(np.uint8)
        new = (self.pairs[byte] & bit) == 0
        np.bitwise_or.at(self.pairs, byte[new], bit[new])
        return [items[j] for j in np.sort(first[new]).tolist()]

    def cut(self, capacity: int) -> None:
        """Misra-Gries: subtract the (capacity + 1)-th largest count, drop what falls to 0."""
        values = np.fromiter(self.counts.values(), np.int64, len(self.counts))
        floor = int(np.partition(values, len(values) - capacity - 1)[len(values) - capacity - 1])
        self.counts = {k: v - floor for k, v in self.counts.items() if v > floor}
