"""One micro-batch of input records -> recommendations, DLQ records and session updates.

Plain objects, no broker: the serving task (``agents.py``) feeds
:meth:`BatchProcessor.process` with the records of one micro-batch and writes out what it
returns. Per batch:

1. validate every record (bad -> one DLQ record with the reason; a record without a key is
   bad: partitioning and sessions rely on ``key == user_id``), drop repeated
   ``(user_id, event_id)`` pairs;
2. append each event to its user's history (once per user per batch in the table);
3. rank all triggering events in one ``Recommender.rank_batch`` call (a model failure
   answers the batch from the popularity fallback, ``fallback: "model_error"``: valid events
   are never dead-lettered for the model's fault);
4. build one ``recommendations`` record per event (keyed by ``user_id``).

Every input record yields exactly one recommendation or one DLQ record, unless it
repeats a ``(user_id, event_id)`` already answered (counted as ``duplicate``).

Session entries are ``[item_id, event_type, ts, event_id]`` lists, read and built through
the names of :mod:`stream_app.sessions` (:data:`~stream_app.sessions.SessionEntry`). An
event whose id is already in the user's (recovered) session was processed before a crash or
a rebalance: it is answered again from the session as it was then, and not appended twice.

A forget request (``coldstream.core.events.Forget``, on the ``forget-requests`` topic)
empties the user's session -- every event that arrived before it, whatever its ``ts`` --
and leaves a marker, ``{"forgotten_at": ts, "h": [...]}`` (``ts``: the request's, or the
newest deleted event's if later): an event of that user with ``ts <= forgotten_at`` (a
redelivery, a late duplicate) is answered with ``fallback: "forgotten"`` and never stored,
so nothing the request deleted comes back. The request itself is acknowledged by one ``recommendations`` record with no items and
``fallback: "forgotten"`` (``docs/privacy.md``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coldstream.core.events import Event, Forget, Rejection, validate_event
from coldstream.core.records import dlq_key, dlq_payload, recommendation_payload
from stream_app.online import OnlineQuality
from stream_app.recommender import Ranked, Recommender, ServingModel
from stream_app.sessions import (
    EVENT_ID,
    ITEM_ID,
    TS,
    History,
    dump_session,
    load_session,
    session_entry,
)
from stream_app.settings import Settings

FORGOTTEN = "forgotten"
"""``fallback`` of the acknowledgement of a forget request (and of an event older than one)."""
EMPTY_RANKING = "empty_ranking"
"""``fallback`` when the model ranked an event to no item (e.g. non-finite scores)."""
MODEL_ERROR = "model_error"
"""``fallback`` when ranking failed for the batch and the popularity fallback answered."""

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
    origins: list[tuple[str, int, int]] = field(default_factory=list)
    """``(topic, partition, offset)`` of each recommendation's input record (aligned)."""
    dlq: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    """``(key, value)``: keyed by the input record's key (the user) when it had a sane one, so
    a user's DLQ records share a partition and can be found (and purged) by user."""
    sessions: dict[str, tuple[int, Any]] = field(default_factory=dict)
    """User -> (input partition, new session value) to write to the session table (a
    history list, or a forget marker :func:`dump_session`)."""
    outcomes: Counter = field(default_factory=Counter)
    """``(topic, outcome)`` -> count; outcome in recommended, dlq, duplicate."""
    per_partition: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    """``(topic, partition) -> (events, DLQ records)`` of this batch (the breakers' input)."""
    dlq_reasons: Counter = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    ranked: Ranked | None = None
    n_fallback: int = 0
    n_redelivered: int = 0
    """Events answered again because their id was already in the recovered session."""
    forgotten: list[str] = field(default_factory=list)
    """Users whose forget request this batch carried."""
    n_refused_forgotten: int = 0
    """Events older than their user's forget request (answered, never stored)."""
    fallback_reasons: Counter = field(default_factory=Counter)
    n_cold_start: int = 0
    """Recommendations for users with at most ``cold_start_events`` events."""
    model_errors: int = 0
    """1 when ranking failed and the popularity fallback answered the batch."""
    model_error_detail: str = ""
    n_bad_timestamps: int = 0
    """Records whose timestamp was absent or implausible (latency measured from arrival)."""
    n_empty_rankings: int = 0
    """Events the model ranked to no item (answered from the popularity fallback)."""


class Deduper:
    """Bounded memory of answered ``(user_id, event_id)`` pairs (oldest forgotten first).

    Keyed per user: another user's event (or forget request) that reuses an ``event_id`` is a
    different event, not a duplicate. An ``OrderedDict``, not a ``dict``: taking a plain
    dict's first key after deletions scans past every deleted slot, which at the default
    capacity cost ~27 us per event once the memory was full; ``popitem(last=False)`` is
    O(1)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._seen

    def add(self, key: tuple[str, str]) -> None:
        if self.capacity <= 0:
            return
        self._seen[key] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

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


class PartitionBreakers:
    """One :class:`DlqBreaker` per input partition: a bad producer writing to some partitions
    trips only their breakers, and only those partitions are paused."""

    def __init__(self, *, window: int, max_ratio: float, min_events: int) -> None:
        self.window, self.max_ratio, self.min_events = window, max_ratio, min_events
        self._breakers: dict[tuple[str, int], DlqBreaker] = {}

    def record(self, counts: Mapping[tuple[str, int], tuple[int, int]]) -> list[tuple[str, int]]:
        """Add a batch's ``{(topic, partition): (events, dlq)}``; the partitions whose breaker
        is (now) open."""
        tripped = []
        for tp, (n, bad) in counts.items():
            b = self._breakers.get(tp)
            if b is None:
                b = self._breakers[tp] = DlqBreaker(
                    window=self.window, max_ratio=self.max_ratio, min_events=self.min_events
                )
            if b.record(n, bad):
                tripped.append(tp)
        return tripped

    def reset(self, tp: tuple[str, int]) -> None:
        b = self._breakers.get(tp)
        if b is not None:
            b.reset()


class BatchProcessor:
    """Turns a micro-batch into outputs; sessions are read through ``get_session``."""

    def __init__(
        self,
        recommender: Recommender,
        settings: Settings,
        *,
        get_session: Callable[[str], Any],
        clock: Callable[[], float] = time.time,
        online: OnlineQuality | None = None,
    ) -> None:
        self.recommender = recommender
        self.settings = settings
        self.get_session = get_session
        self.clock = clock
        self.online = online
        """Fed every answered event (the online hit rate per model version); ``None``: off."""
        self.shadow_online = (
            OnlineQuality(
                window_s=online.window_s,
                metrics=online.metrics,
                max_users=online.max_users,
                segments=False,
            )
            if online is not None
            else None
        )
        """The same join for a shadow candidate's would-be recommendations (never
        published): its online hit rate under its own ``model_version``."""
        self.deduper = Deduper(settings.dedupe_capacity)
        self.stream_time: float | None = None
        """The newest event timestamp processed (session expiry runs on this clock)."""

    def _dlq(
        self, out: BatchResult, rec: Incoming, reason: str, detail: str, event_id: str | None
    ) -> None:
        out.dlq.append(
            (
                dlq_key(rec.key),
                dlq_payload(
                    source_topic=rec.topic,
                    partition=rec.partition,
                    offset=rec.offset,
                    error=reason,
                    detail=detail,
                    payload=rec.value,
                    key=rec.key,
                    event_id=event_id,
                    max_bytes=self.settings.dlq_max_bytes,
                ),
            )
        )
        out.outcomes[(rec.topic, "dlq")] += 1
        out.dlq_reasons[reason] += 1

    def process(self, batch: Sequence[Incoming]) -> BatchResult:
        s = self.settings
        out = BatchResult()
        now = self.clock()
        accepted: list[tuple[Incoming, Event | Forget, bool]] = []  # (record, event, answered)
        snapshots: list[History] = []
        snap_users: list[str] = []  # the user of each snapshot (the rollout arm's key)
        work: dict[str, History] = {}
        marks: dict[str, float | None] = {}  # user -> forgotten_at
        # user -> event ids in the session -> position + trimmed: a full history drops its
        # oldest entries without a new map (the position is the value less trimmed[user])
        known: dict[str, dict[str, int]] = {}
        trimmed: dict[str, int] = {}
        parts: dict[str, int] = {}
        batch_ids: set[tuple[str, str]] = set()
        for rec in batch:
            ev = validate_event(
                rec.value,
                rec.topic,
                key=rec.key,
                require_key=s.require_key,
                allow_forget=s.forget_on_event_topics,
                max_bytes=s.max_event_bytes,
                max_future_skew_s=s.max_future_skew_s,
                now=now,
            )
            tp = (rec.topic, rec.partition)
            n, bad = out.per_partition.get(tp, (0, 0))
            if isinstance(ev, Rejection):
                out.per_partition[tp] = (n + 1, bad + 1)
                self._dlq(out, rec, ev.reason, ev.detail, ev.event_id)
                continue
            out.per_partition[tp] = (n + 1, bad)
            pair = (ev.user_id, ev.event_id)
            if pair in self.deduper or pair in batch_ids:
                out.outcomes[(rec.topic, "duplicate")] += 1
                continue
            batch_ids.add(pair)
            hist = work.get(ev.user_id)
            if hist is None:
                hist, marks[ev.user_id] = load_session(self.get_session(ev.user_id))
                work[ev.user_id] = hist
                known[ev.user_id] = _positions(hist)
                trimmed[ev.user_id] = 0
            parts[ev.user_id] = rec.partition
            if isinstance(ev, Forget):
                # everything that arrived before the request goes, whatever time its
                # producer stamped on it (a click stamped in the future is no exception);
                # the marker covers the newest of them, so no redelivery brings one back
                newest = max((e[TS] for e in hist if len(e) > TS), default=ev.ts)
                hist.clear()
                known[ev.user_id] = {}
                trimmed[ev.user_id] = 0
                marks[ev.user_id] = max(ev.ts, newest, marks[ev.user_id] or ev.ts)
                accepted.append((rec, ev, False))
                continue
            at = marks[ev.user_id]
            if at is not None and ev.ts <= at:  # older than the user's forget request
                accepted.append((rec, ev, False))
                continue
            accepted.append((rec, ev, True))
            if self.stream_time is None or ev.ts > self.stream_time:
                self.stream_time = ev.ts
            pos = known[ev.user_id].get(ev.event_id, -1) - trimmed[ev.user_id]
            snap_users.append(ev.user_id)
            if 0 <= pos < len(hist) and hist[pos][EVENT_ID] == ev.event_id:
                snapshots.append(list(hist[: pos + 1]))  # redelivered: answer as before
                out.n_redelivered += 1
                continue
            hist.append(session_entry(ev.item_id, ev.type_code, ev.ts, ev.event_id))
            known[ev.user_id][ev.event_id] = len(hist) - 1 + trimmed[ev.user_id]
            if len(hist) > s.max_history:
                trimmed[ev.user_id] += len(hist) - s.max_history
                del hist[: len(hist) - s.max_history]
            snapshots.append(list(hist))
        if not accepted:
            return out
        version = self.recommender.model.version
        ranked, per_row = self._rank_arms(snapshots, snap_users, out)
        # each user counts once per item and bucket: no single account moves the popular list
        counted = [ev for _, ev, answered in accepted if answered and isinstance(ev, Event)]
        self.recommender.observe(
            [ev.item_id for ev in counted], users=[ev.user_id for ev in counted]
        )
        produced_at = self.clock()
        ranked_rows = iter(zip(snapshots, ranked.items, ranked.fallback, strict=True))
        # per-row arm, version and shadow list only while a rollout runs (the common case
        # allocates nothing per event for it)
        arm_rows = iter(per_row) if per_row is not None else None
        for rec, ev, answered in accepted:
            if not answered:  # a forget request, or an event older than one: nothing stored
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
                out.origins.append((rec.topic, rec.partition, rec.offset))
                self.deduper.add((ev.user_id, ev.event_id))
                if isinstance(ev, Forget):
                    out.forgotten.append(ev.user_id)
                    if self.online is not None:
                        self.online.forget(ev.user_id)
                else:
                    out.n_refused_forgotten += 1
                continue
            snap, items, fb = next(ranked_rows)
            row_version, arm, shadow_items = (
                next(arm_rows) if arm_rows is not None else (version, "live", None)
            )
            received = rec.timestamp
            if (
                not received
                or not now - s.max_record_age_s <= received <= now + s.max_future_skew_s
            ):
                received = now  # absent or implausible (0, -1, far future): from arrival
                out.n_bad_timestamps += 1
            latency_s = max(0.0, produced_at - received)
            out.latencies_s.append(latency_s)
            out.recommendations.append(
                (
                    ev.user_id.encode(),
                    recommendation_payload(
                        event_id=ev.event_id,
                        user_id=ev.user_id,
                        items=items,
                        model_version=row_version,
                        cold_start=len(snap) <= s.cold_start_events,
                        produced_at=produced_at,
                        latency_ms=latency_s * 1000.0,
                        fallback=fb,
                        arm=arm,
                    ),
                )
            )
            out.outcomes[(rec.topic, "recommended")] += 1
            out.origins.append((rec.topic, rec.partition, rec.offset))
            if len(snap) <= s.cold_start_events:
                out.n_cold_start += 1
            if fb is not None:
                out.n_fallback += 1
                out.fallback_reasons[fb] += 1
            self.deduper.add((ev.user_id, ev.event_id))
            if self.online is not None:  # join this event to the user's previous top-K
                assert isinstance(ev, Event)
                self.online.step(
                    ev.user_id,
                    ev.item_id,
                    items,
                    row_version,
                    produced_at,
                    cold=len(snap) <= s.cold_start_events,
                )
                if shadow_items is not None and self.shadow_online is not None:
                    self.shadow_online.step(
                        ev.user_id, ev.item_id, shadow_items[0], shadow_items[1], produced_at
                    )
        if self.online is not None:
            self.online.flush()
        if self.shadow_online is not None:
            self.shadow_online.flush()
        out.sessions = {u: (parts[u], dump_session(h, marks[u])) for u, h in work.items()}
        return out

    def _rank_arms(
        self, snapshots: list[History], users: list[str], out: BatchResult
    ) -> tuple[Ranked, list[tuple[str, str, tuple[list, str] | None]] | None]:
        """Rank the batch by rollout arm (docs/rollout.md): without a candidate, or with a
        ``shadow``, every user gets the live model; with a ``canary``, the users
        :meth:`Candidate.serves` get the candidate. Returns the ranking and each row's
        ``model_version`` and ``arm``, and each row's shadow ranking with its version (``None``
        without a shadow), one tuple per row; without a candidate ``None`` (every row: the
        live version, ``live``, no shadow). The candidate is read once: the whole batch sees one
        rollout."""
        rec = self.recommender
        cand = rec.candidate
        n = len(snapshots)
        if cand is None or cand.arm != "canary":
            ranked, version = self._rank(snapshots, out)
        if cand is None:
            return ranked, None
        if cand.arm == "shadow":
            try:
                sh = rec.rank_batch(snapshots, self.settings.k, cand.model)
                shadow: list[tuple[list, str] | None] = [
                    (row, cand.model.version) for row in sh.items
                ]
            except Exception:  # noqa: BLE001 - a failing shadow never touches what users get
                log.exception("the shadow candidate v%s failed to rank a batch", cand.model.version)
                shadow = [None] * n
            return ranked, [(version, "live", row) for row in shadow]
        mine = [cand.serves(u) for u in users]
        live_rows = [sn for sn, m in zip(snapshots, mine, strict=True) if not m]
        cand_rows = [sn for sn, m in zip(snapshots, mine, strict=True) if m]
        live, version = self._rank(live_rows, out)
        canary, cversion = self._rank(cand_rows, out, cand.model)
        li = iter(zip(live.items, live.fallback, strict=True))
        ci = iter(zip(canary.items, canary.fallback, strict=True))
        rows = [next(ci) if m else next(li) for m in mine]
        merged = Ranked(
            [r[0] for r in rows],
            [r[1] for r in rows],
            inference_s=live.inference_s + canary.inference_s,
            search_s=live.search_s + canary.search_s,
            n_known_users=live.n_known_users + canary.n_known_users,
        )
        out.ranked = merged
        return merged, [(cversion, "canary", None) if m else (version, "live", None) for m in mine]

    def _rank(
        self, snapshots: list[History], out: BatchResult, model: ServingModel | None = None
    ) -> tuple[Ranked, str]:
        """Rank the batch; a model failure answers it from the popularity fallback instead
        (``fallback: "model_error"``, counted, logged): valid events are not dead-lettered
        for the model's fault, and the worker goes on."""
        rec = self.recommender
        version = (model or rec.model).version
        if not snapshots:
            return Ranked([], []), version
        try:
            k = self.settings.k
            ranked = (
                rec.rank_batch(snapshots, k)
                if model is None
                else rec.rank_batch(snapshots, k, model)
            )
            out.ranked = ranked
            for i, (row, fb) in enumerate(zip(ranked.items, ranked.fallback, strict=True)):
                if not row and fb is None:  # e.g. non-finite scores: never an empty answer
                    ranked.items[i] = rec.popular(self.settings.k, exclude=_items(snapshots[i]))
                    ranked.fallback[i] = EMPTY_RANKING
                    out.n_empty_rankings += 1
            if out.n_empty_rankings:
                log.warning(
                    "the model ranked %d of %d events to no item; answered from popularity",
                    out.n_empty_rankings,
                    len(snapshots),
                )
            return ranked, version
        except Exception as e:  # noqa: BLE001 - degrade, don't die
            log.exception(
                "ranking a batch of %d events failed; answering from popularity", len(snapshots)
            )
            out.model_errors += 1
            items = []
            for snap in snapshots:
                try:
                    items.append(rec.popular(self.settings.k, exclude=_items(snap)))
                except Exception:  # noqa: BLE001 - nothing to recommend: an empty answer
                    items.append([])
            out.model_error_detail = f"{type(e).__name__}: {e}"[:500]
            return Ranked(items, [MODEL_ERROR] * len(snapshots)), version


def _positions(hist: History) -> dict[str, int]:
    """Event id -> position in ``hist``."""
    return {e[EVENT_ID]: i for i, e in enumerate(hist) if isinstance(e, list) and len(e) > EVENT_ID}


def _items(hist: History) -> list[str]:
    """The item ids of ``hist`` (excluded from its popularity answer)."""
    return [str(e[ITEM_ID]) for e in hist]


def sessions_view(mapping: Mapping[str, Any]) -> Callable[[str], Any]:
    """``get_session`` over any mapping (a Faust table's store, a dict in tests)."""
    return mapping.get
