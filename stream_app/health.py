"""Stall detection, liveness and the two readinesses of a worker.

* **Stalled partition**: an owned input partition whose lag is positive while its processed
  position has not moved for ``Settings.stall_after_s``. The lag is measured against the
  broker's end offsets (asked every ``health_interval_s``; the consumer's cached high
  watermark stops moving for a partition it does not fetch) and the worker's processed
  position (``Wiring.progress``, updated by ``handle_batch``). Exported as
  ``coldstream_partition_stalled{topic,partition}`` (0/1) and
  ``coldstream_partition_seconds_since_progress{topic,partition}``; named in ``/ready``.
* **Liveness** (``/healthz``): not live when input has waited ``liveness_after_s`` with no
  batch processed at all while the worker is consuming (tables recovered, flow on): its
  loop is wedged and a restart helps. One stalled partition while the others flow is not a
  liveness failure (a restart would not fix what blocks it); stale lag (the broker did not
  answer) never fails liveness either: a broker outage is not cured by restarting workers.
* **Readiness**: ``/ready`` is readiness to serve ``/recommend`` -- a model is loaded and
  the group's assignment is known (so requests can be routed): a surge pod that owns no
  partition is ready. ``/ready?partitions=1`` adds ownership: partitions assigned, tables
  recovered, flow on, nothing stalled.

:class:`Health` is plain state fed by :func:`attach`'s timer; the views read it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from coldstream.core.events import INPUT_TOPICS

log = logging.getLogger(__name__)

PartitionKey = tuple[str, int]
"""``(logical topic, partition)``."""

LAG_FRESH_INTERVALS = 3
"""Lag older than this many health intervals is unknown (the broker did not answer)."""


@dataclass
class _Partition:
    assigned_at: float
    baseline: int | None
    """Next offset to process when the partition was (re)assigned (its position then)."""
    lag: int | None = None
    lag_at: float | None = None
    lag_since: float | None = None
    """Since when the lag has been positive without interruption."""
    held_at: float | None = None
    """Last time the worker was not consuming (recovery, flow off): that is not a stall."""


@dataclass(frozen=True, slots=True)
class Stall:
    topic: str
    partition: int
    lag: int
    seconds_since_progress: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "lag": self.lag,
            "seconds_since_progress": round(self.seconds_since_progress, 1),
        }


class Health:
    """Per-partition lag and progress of one worker; the stall and liveness verdicts."""

    def __init__(
        self,
        *,
        stall_after_s: float,
        liveness_after_s: float,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stall_after_s = stall_after_s
        self.liveness_after_s = liveness_after_s
        self.interval_s = interval_s
        self.clock = clock
        self.partitions: dict[PartitionKey, _Partition] = {}
        self.observed_at: float | None = None

    # -- feeding ---------------------------------------------------------------------------
    def assign(
        self, positions: Mapping[PartitionKey, int | None], now: float | None = None
    ) -> None:
        """The current assignment with each partition's position; new partitions start
        here, revoked ones are dropped."""
        now = self.clock() if now is None else now
        for key in list(self.partitions):
            if key not in positions:
                del self.partitions[key]
        for key, pos in positions.items():
            if key not in self.partitions:
                self.partitions[key] = _Partition(assigned_at=now, baseline=pos)

    def observe(
        self,
        ends: Mapping[PartitionKey, int],
        progress: Mapping[PartitionKey, tuple[int, float]],
        *,
        consuming: bool,
        now: float | None = None,
    ) -> None:
        """Record the broker's end offsets (``ends``: the offset the next record will get)
        against the processed positions (``progress``: last processed offset and when)."""
        now = self.clock() if now is None else now
        self.observed_at = now
        for key, st in self.partitions.items():
            if not consuming:
                st.held_at = now
            end = ends.get(key)
            if end is None:
                continue
            nxt = self._next_offset(key, st, progress)
            if nxt is None:
                continue
            st.lag, st.lag_at = max(0, int(end) - nxt), now
            if st.lag > 0:
                if st.lag_since is None:
                    st.lag_since = now
            else:
                st.lag_since = None

    @staticmethod
    def _next_offset(
        key: PartitionKey, st: _Partition, progress: Mapping[PartitionKey, tuple[int, float]]
    ) -> int | None:
        done = progress.get(key)
        if done is not None and done[1] >= st.assigned_at:
            return done[0] + 1
        return st.baseline

    # -- verdicts ----------------------------------------------------------------------------
    def _fresh(self, st: _Partition, now: float) -> bool:
        return st.lag_at is not None and now - st.lag_at <= LAG_FRESH_INTERVALS * self.interval_s

    def seconds_since_progress(
        self,
        key: PartitionKey,
        progress: Mapping[PartitionKey, tuple[int, float]],
        now: float | None = None,
    ) -> float | None:
        """Seconds a lagging partition has gone without progress (0 when it has no lag,
        ``None`` when its lag is unknown)."""
        now = self.clock() if now is None else now
        st = self.partitions[key]
        if not self._fresh(st, now):
            return None
        if not st.lag or st.lag_since is None:
            return 0.0
        marks = [st.assigned_at, st.lag_since]
        done = progress.get(key)
        if done is not None:
            marks.append(done[1])
        if st.held_at is not None:
            marks.append(st.held_at)
        return max(0.0, now - max(marks))

    def stalled(
        self, progress: Mapping[PartitionKey, tuple[int, float]], now: float | None = None
    ) -> list[Stall]:
        """The owned partitions that are stalled, by topic and partition."""
        now = self.clock() if now is None else now
        out = []
        for key in sorted(self.partitions):
            secs = self.seconds_since_progress(key, progress, now)
            st = self.partitions[key]
            if secs is not None and st.lag and secs >= self.stall_after_s:
                out.append(Stall(key[0], key[1], st.lag, secs))
        return out

    def liveness(
        self,
        progress: Mapping[PartitionKey, tuple[int, float]],
        *,
        consuming: bool,
        now: float | None = None,
    ) -> tuple[bool, float | None]:
        """``(live, seconds input has waited with no batch)``. Not live only when fresh lag
        is positive, the worker is consuming and no record at all was processed for
        ``liveness_after_s`` since the input started waiting."""
        now = self.clock() if now is None else now
        waiting = [
            st
            for st in self.partitions.values()
            if self._fresh(st, now) and st.lag and st.lag_since
        ]
        if not consuming or not waiting:
            return True, None
        marks = [min(st.lag_since for st in waiting if st.lag_since is not None)]
        marks += [st.held_at for st in waiting if st.held_at is not None]
        last = max((t for _, t in progress.values()), default=None)
        if last is not None:
            marks.append(last)
        waited = max(0.0, now - max(marks))
        return waited < self.liveness_after_s, waited


# ------------------------------------------------------------------------------ the worker


def consuming(app: Any) -> bool:
    """Tables recovered and flow control on (a worker that is recovering or rebalancing
    is making progress of another kind)."""
    try:
        recovered = bool(app.tables.recovery.completed.is_set())
        return recovered and bool(app.flow_control.is_active())
    except Exception:  # noqa: BLE001 - not started yet
        return False


def input_partitions(app: Any, logical: Mapping[str, str]) -> list[Any]:
    """The worker's assigned input partitions (``TP``s of clicks, purchases, forget-requests)."""
    try:
        assigned = app.consumer.assignment()
    except Exception:  # noqa: BLE001 - consumer not started yet
        return []
    return [tp for tp in assigned if logical.get(tp.topic) in INPUT_TOPICS]


def attach(w: Any, health: Health) -> None:
    """Register the timer that feeds ``health`` and exports the stall gauges."""
    app, s, m = w.app, w.settings, w.metrics
    timeout = max(1.0, min(10.0, 2 * s.health_interval_s))
    exported: set[PartitionKey] = set()
    try:  # every input partition exports 0 until owned (alerts take max across replicas)
        from coldstream.core.topics import load_topics

        specs = load_topics()
        for topic in (t for t in INPUT_TOPICS if t in specs):
            for p in range(specs[topic].partitions):
                m.partition_stalled.labels(topic, str(p)).set(0)
                m.partition_seconds_since_progress.labels(topic, str(p)).set(0)
    except Exception:  # noqa: BLE001 - no topics file: series appear on assignment
        pass

    async def tick() -> None:
        tps = input_partitions(app, w.logical)
        keys = {tp: (w.logical[tp.topic], tp.partition) for tp in tps}
        new = [tp for tp in tps if keys[tp] not in health.partitions]
        positions: dict[PartitionKey, int | None] = {}
        for tp in new:
            try:
                positions[keys[tp]] = await asyncio.wait_for(app.consumer.position(tp), timeout)
            except Exception:  # noqa: BLE001 - unknown yet: the next tick asks again
                continue
        health.assign(
            {
                **{k: st.baseline for k, st in health.partitions.items() if k in keys.values()},
                **positions,
            }
        )
        ends_tp = await asyncio.wait_for(app.consumer.highwaters(*tps), timeout) if tps else {}
        ends = {keys[tp]: int(v) for tp, v in ends_tp.items() if tp in keys and v is not None}
        progress = dict(w.progress)
        health.observe(ends, progress, consuming=consuming(app))
        now = health.clock()
        seen = set()
        for key in health.partitions:
            secs = health.seconds_since_progress(key, progress, now)
            stalled = secs is not None and secs >= health.stall_after_s
            m.partition_stalled.labels(key[0], str(key[1])).set(1 if stalled else 0)
            m.partition_seconds_since_progress.labels(key[0], str(key[1])).set(secs or 0.0)
            seen.add(key)
        for key in exported - seen:  # revoked: another worker reports it now
            m.partition_stalled.labels(key[0], str(key[1])).set(0)
            m.partition_seconds_since_progress.labels(key[0], str(key[1])).set(0)
        exported.clear()
        exported.update(seen)

    @app.timer(interval=s.health_interval_s, name="health")
    async def health_timer() -> None:
        try:
            await tick()
        except Exception as e:  # noqa: BLE001 - a failed look (broker away) is no crash
            log.info("health: end offsets unavailable (%r); lag left unknown", e)
