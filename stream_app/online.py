"""Online quality: join each user's next event to the recommendation made just before it.

For every accepted event of a user, in order: if the user's previous recommendation was
made at most ``window_s`` earlier, it is one *request* for that recommendation's model
version, and a *hit* when the event's item is in its top-K. Then the event's own
recommendation becomes the user's latest. Memory is bounded (``max_users``, oldest user
forgotten first). Counts go to ``coldstream_online_requests_total`` /
``coldstream_online_hits_total{model_version}`` once per micro-batch: online HR@K per
version is ``rate(hits) / rate(requests)``.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from typing import Any


class OnlineQuality:
    def __init__(self, *, window_s: float, metrics: Any = None, max_users: int = 200_000) -> None:
        self.window_s = window_s
        self.metrics = metrics
        self.max_users = max_users
        self._last: OrderedDict[str, tuple[float, str, frozenset[str]]] = OrderedDict()
        self.requests: Counter[str] = Counter()
        self.hits: Counter[str] = Counter()
        self._pending_req: Counter[str] = Counter()
        self._pending_hit: Counter[str] = Counter()

    def step(
        self,
        user: str,
        item: str,
        recommended: Sequence[tuple[str, float]],
        version: str,
        now: float,
    ) -> None:
        """Join ``item`` (the user's new event) to their previous top-K, then remember the new one."""
        prev = self._last.pop(user, None)
        if prev is not None and now - prev[0] <= self.window_s:
            self._pending_req[prev[1]] += 1
            if item in prev[2]:
                self._pending_hit[prev[1]] += 1
        self._last[user] = (now, version, frozenset(i for i, _ in recommended))
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
        self._pending_req.clear()
        self._pending_hit.clear()

    def hit_rate(self, version: str) -> float:
        return self.hits[version] / self.requests[version] if self.requests[version] else 0.0


class WindowedCounter(Counter):
    """A ``Counter`` of the last ``window_s`` seconds only (``buckets`` time buckets):
    the recommender's popularity fallback then means *popular in the current window*.
    Drop-in for ``Recommender.popularity`` (``update``, ``most_common``, ``get``, ``values``)."""

    def __init__(self, window_s: float, buckets: int = 12, clock: Any = None) -> None:
        import time as _time

        self.window_s = window_s
        self.bucket_s = window_s / buckets
        self.clock = clock or _time.monotonic
        self._buckets: deque[tuple[float, Counter]] = deque()
        super().__init__()

    def update(self, iterable: Any = None, /, **kwds: Any) -> None:
        now = self.clock()
        while self._buckets and now - self._buckets[0][0] >= self.window_s:
            _, old = self._buckets.popleft()
            self.subtract(old)
            for k in [k for k in old if self[k] <= 0]:
                del self[k]
        if not self._buckets or now - self._buckets[-1][0] >= self.bucket_s:
            self._buckets.append((now, Counter()))
        added = Counter(iterable or (), **kwds)
        self._buckets[-1][1].update(added)
        super().update(added)
