"""One micro-batch of input records -> recommendations, DLQ records and session updates.

Plain objects, no broker: the Faust agent (``agents.py``) feeds :meth:`BatchProcessor.process`
with the records of ``stream.take_events(...)`` and writes out what it returns. Per batch:

1. validate every record (bad -> one DLQ record), drop duplicate ``event_id``\\ s;
2. append each event to its user's history (once per user per batch in the table);
3. rank all triggering events in one ``Recommender.rank_batch`` call;
4. build one ``recommendations`` record per event (keyed by ``user_id``).

Every input record yields exactly one recommendation or one DLQ record, unless it
repeats an ``event_id`` already answered (counted as ``duplicate``).

Session entries are ``[item_id, event_type, ts, event_id]``. An event whose id is already
in the user's (recovered) session was processed before a crash or a rebalance: it is
answered again from the session as it was then, and not appended twice.

A forget request (``validation.Forget``) empties the user's session (the table gets a
tombstone) and is acknowledged by one ``recommendations`` record with no items and
``fallback: "forgotten"`` (``docs/privacy.md``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coldstream.core.events import Event, Forget, Rejection, validate_event
from coldstream.core.records import dlq_payload, recommendation_payload
from stream_app.recommender import Ranked, Recommender
from stream_app.settings import Settings

FORGOTTEN = "forgotten"
"""``fallback`` of the acknowledgement of a forget request."""

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Incoming:
    """One consumed record: logical topic, position, raw key/value, record timestamp (s)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None


@dataclass
class BatchResult:
    recommendations: list[tuple[bytes, bytes]] = field(default_factory=list)
    """``(key=user_id, value)`` in input order."""
    dlq: list[bytes] = field(default_factory=list)
    sessions: dict[str, tuple[int, list[list[Any]] | None]] = field(default_factory=dict)
    """User -> (input partition, new history) to write to the session table; ``None``:
    delete the user's session (forget request: a changelog tombstone)."""
    outcomes: Counter = field(default_factory=Counter)
    """``(topic, outcome)`` -> count; outcome in recommended, dlq, duplicate."""
    dlq_reasons: Counter = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    ranked: Ranked | None = None
    n_fallback: int = 0
    n_redelivered: int = 0
    """Events answered again because their id was already in the recovered session."""
    forgotten: list[str] = field(default_factory=list)


class Deduper:
    """Bounded memory of answered ``event_id``\\ s (oldest forgotten first)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._seen: dict[str, None] = {}

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._seen

    def add(self, event_id: str) -> None:
        if self.capacity <= 0:
            return
        self._seen[event_id] = None
        if len(self._seen) > self.capacity:
            del self._seen[next(iter(self._seen))]

    def __len__(self) -> int:
        return len(self._seen)


class DlqBreaker:
    """Trips when over ``max_ratio`` of the last ``window`` events went to the DLQ."""

    def __init__(self, *, window: int, max_ratio: float, min_events: int) -> None:
        self.window, self.max_ratio, self.min_events = window, max_ratio, min_events
        self._batches: deque[tuple[int, int]] = deque()
        self._n = self._bad = 0

    def record(self, n_events: int, n_dlq: int) -> bool:
        """Add a batch; ``True`` when the breaker is (now) open."""
        self._batches.append((n_events, n_dlq))
        self._n += n_events
        self._bad += n_dlq
        while self._batches and self._n - self._batches[0][0] >= self.window:
            n, b = self._batches.popleft()
            self._n -= n
            self._bad -= b
        return self._n >= self.min_events and self._bad > self.max_ratio * self._n

    def reset(self) -> None:
        self._batches.clear()
        self._n = self._bad = 0


class BatchProcessor:
    """Turns a micro-batch into outputs; sessions are read through ``get_session``."""

    def __init__(
        self,
        recommender: Recommender,
        settings: Settings,
        *,
        get_session: Callable[[str], Any],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.recommender = recommender
        self.settings = settings
        self.get_session = get_session
        self.clock = clock
        self.deduper = Deduper(settings.dedupe_capacity)
        self.online: Any = None
        """``stream_app.online.OnlineQuality`` (attached by ``stream_app.control``) or None."""

    def _dlq(
        self, out: BatchResult, rec: Incoming, reason: str, detail: str, event_id: str | None
    ) -> None:
        out.dlq.append(
            dlq_payload(
                source_topic=rec.topic,
                partition=rec.partition,
                offset=rec.offset,
                error=reason,
                detail=detail,
                payload=rec.value,
                key=rec.key,
                event_id=event_id,
            )
        )
        out.outcomes[(rec.topic, "dlq")] += 1
        out.dlq_reasons[reason] += 1

    def process(self, batch: Sequence[Incoming]) -> BatchResult:
        s = self.settings
        out = BatchResult()
        now = self.clock()
        accepted: list[tuple[Incoming, Event | Forget]] = []
        snapshots: list[list[list[Any]]] = []
        work: dict[str, list[list[Any]]] = {}
        known: dict[str, dict[str, int]] = {}  # user -> event ids in the session -> position
        parts: dict[str, int] = {}
        batch_ids: set[str] = set()
        forgotten: set[str] = set()
        for rec in batch:
            ev = validate_event(
                rec.value,
                rec.topic,
                key=rec.key,
                max_bytes=s.max_event_bytes,
                max_future_skew_s=s.max_future_skew_s,
                now=now,
            )
            if isinstance(ev, Rejection):
                self._dlq(out, rec, ev.reason, ev.detail, ev.event_id)
                continue
            if ev.event_id in self.deduper or ev.event_id in batch_ids:
                out.outcomes[(rec.topic, "duplicate")] += 1
                continue
            batch_ids.add(ev.event_id)
            hist = work.get(ev.user_id)
            if hist is None:
                stored = self.get_session(ev.user_id)
                hist = list(stored) if stored else []
                work[ev.user_id] = hist
                known[ev.user_id] = {
                    e[3]: i for i, e in enumerate(hist) if isinstance(e, list) and len(e) > 3
                }
            parts[ev.user_id] = rec.partition
            accepted.append((rec, ev))
            if isinstance(ev, Forget):
                hist.clear()
                known[ev.user_id] = {}
                forgotten.add(ev.user_id)
                continue
            pos = known[ev.user_id].get(ev.event_id)
            if pos is not None and pos < len(hist) and hist[pos][3] == ev.event_id:
                snapshots.append(list(hist[: pos + 1]))  # redelivered: answer as before
                out.n_redelivered += 1
                continue
            hist.append([ev.item_id, ev.type_code, ev.ts, ev.event_id])
            if len(hist) > s.max_history:
                del hist[: len(hist) - s.max_history]
                known[ev.user_id] = {
                    e[3]: i for i, e in enumerate(hist) if isinstance(e, list) and len(e) > 3
                }
            else:
                known[ev.user_id][ev.event_id] = len(hist) - 1
            snapshots.append(list(hist))
        if not accepted:
            return out
        try:
            ranked = self.recommender.rank_batch(snapshots, s.k) if snapshots else None
            version = self.recommender.model.version
        except Exception as e:  # a model failure must not stop the worker: answer via the DLQ
            log.exception("ranking a batch of %d events failed", len(accepted))
            for rec, ev in accepted:
                self._dlq(
                    out, rec, "processing_error", f"{type(e).__name__}: {e}"[:500], ev.event_id
                )
            return out
        out.ranked = ranked
        self.recommender.observe(ev.item_id for _, ev in accepted if isinstance(ev, Event))
        produced_at = self.clock()
        ranked_rows = iter(
            zip(snapshots, ranked.items, ranked.fallback, strict=True) if ranked is not None else ()
        )
        for rec, ev in accepted:
            if isinstance(ev, Forget):  # acknowledged in stream order, nothing recommended
                out.recommendations.append(
                    (
                        ev.user_id.encode(),
                        recommendation_payload(
                            event_id=ev.event_id,
                            user_id=ev.user_id,
                            items=[],
                            model_version=version,
                            cold_start=True,
                            produced_at=produced_at,
                            latency_ms=0.0,
                            fallback=FORGOTTEN,
                        ),
                    )
                )
                out.outcomes[(rec.topic, "recommended")] += 1
                out.forgotten.append(ev.user_id)
                self.deduper.add(ev.event_id)
                last = getattr(self.online, "_last", None)
                if last is not None:
                    last.pop(ev.user_id, None)
                continue
            snap, items, fb = next(ranked_rows)
            received = rec.timestamp if rec.timestamp else now
            latency_s = max(0.0, produced_at - received)
            out.latencies_s.append(latency_s)
            out.recommendations.append(
                (
                    ev.user_id.encode(),
                    recommendation_payload(
                        event_id=ev.event_id,
                        user_id=ev.user_id,
                        items=items,
                        model_version=version,
                        cold_start=len(snap) <= s.cold_start_events,
                        produced_at=produced_at,
                        latency_ms=latency_s * 1000.0,
                        fallback=fb,
                    ),
                )
            )
            out.outcomes[(rec.topic, "recommended")] += 1
            if fb is not None:
                out.n_fallback += 1
            self.deduper.add(ev.event_id)
            if self.online is not None:  # join this event to the user's previous top-K
                self.online.step(ev.user_id, ev.item_id, items, version, produced_at)
        if self.online is not None:
            self.online.flush()
        out.sessions = {
            u: (parts[u], h if h or u not in forgotten else None) for u, h in work.items()
        }
        return out


def sessions_view(mapping: Mapping[str, Any]) -> Callable[[str], Any]:
    """``get_session`` over any mapping (a Faust table's store, a dict in tests)."""
    return mapping.get
