"""Prometheus metrics of the serving worker, in one object built against a registry.

Names follow ``docs/architecture.md`` (binding). No label carries a user or item id.
Histograms are fed once per micro-batch: :class:`BatchHistogram` adds a whole batch of
values with one numpy pass instead of one Python ``observe`` per event.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
"""Event-to-publish latency buckets, seconds: 1 ms to 10 s."""
COMPUTE_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

CONTENT_TYPE = CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4"
"""Exposition content type without the charset parameter (aiohttp refuses it there)."""


class Metrics:
    """All serving metrics; pass a fresh ``CollectorRegistry`` in tests."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self.events = Counter(
            "coldstream_events",
            "Input events by topic and outcome",
            ["topic", "outcome"],
            registry=r,
        )
        self.dlq = Counter(
            "coldstream_dlq", "Events sent to the DLQ, by reason", ["reason"], registry=r
        )
        self.batch_size = Histogram(
            "coldstream_batch_size", "Events per micro-batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.event_latency = BatchHistogram(
            "coldstream_event_latency_seconds",
            "Input record timestamp to recommendation publish",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "coldstream_inference_seconds",
            "Student encode time per batch",
            ["device"],
            buckets=COMPUTE_BUCKETS,
            registry=r,
        )
        self.search = Histogram(
            "coldstream_search_seconds",
            "Index search time per batch",
            buckets=COMPUTE_BUCKETS,
            registry=r,
        )
        self.model_info = Info("coldstream_model", "Served model", registry=r)
        self.model_version = Gauge("coldstream_model_version", "Served model version", registry=r)
        self.model_swaps = Counter(
            "coldstream_model_swaps", "Model swaps by outcome", ["outcome"], registry=r
        )
        self.model_swap_failures = Counter(
            "coldstream_model_swap_failures",
            "Refused model swaps by reason",
            ["reason"],
            registry=r,
        )
        self.index_items = Gauge("coldstream_index_items", "Items in the serving index", registry=r)
        self.index_recall = Gauge(
            "coldstream_index_recall",
            "Recall@10 of the serving index against exact search, measured on a sample of the "
            "model's queries when the index was built",
            registry=r,
        )
        self.index_info = Info(
            "coldstream_index", "Serving index: kind, device and parameters", registry=r
        )
        self.active_sessions = Gauge(
            "coldstream_active_sessions", "Users in the local session table", registry=r
        )
        self.consumer_lag = Gauge(
            "coldstream_consumer_lag",
            "Messages behind the high watermark",
            ["topic", "partition"],
            registry=r,
        )
        self.online_hits = Counter(
            "coldstream_online_hits",
            "Next events found in the previous top-K",
            ["model_version"],
            registry=r,
        )
        self.online_requests = Counter(
            "coldstream_online_requests",
            "Next events checked against the previous top-K",
            ["model_version"],
            registry=r,
        )
        self.fallback = Counter(
            "coldstream_fallback", "Recommendations served by a fallback", ["reason"], registry=r
        )
        self.dlq_breaker_open = Gauge(
            "coldstream_dlq_breaker_open",
            "Input partitions the DLQ circuit breaker holds paused (0: none)",
            registry=r,
        )
        # -- control plane (stream_app/control.py, the start-up model choice) ---------------
        self.control_records = Counter(
            "coldstream_control_records",
            "model-updates / item-vectors records by outcome (applied, skipped, refused) and "
            "reason",
            ["topic", "outcome", "reason"],
            registry=r,
        )
        self.model_seq = Gauge(
            "coldstream_model_seq",
            "Sequence number of the served model pointer (updates must carry a higher one)",
            registry=r,
        )
        self._candidate_primed: set[str] = set()
        self.rollout_candidate = Gauge(
            "coldstream_rollout_candidate_version",
            "Model version held as a rollout's candidate beside the live one, by arm "
            "(canary, shadow); 0: none",
            ["arm"],
            registry=r,
        )
        self.model_start_fallback = Gauge(
            "coldstream_model_start_fallback",
            "1: the worker started on a fallback checkpoint, not the store's pointer",
            ["reason"],
            registry=r,
        )
        self.send_failures = Counter(
            "coldstream_output_send_failures",
            "Output records (recommendations, DLQ, changelog) that could not be delivered",
            registry=r,
        )
        self.fetch_rewinds = Counter(
            "coldstream_fetch_rewinds",
            "Input fetches that delivered a record other than the one its partition had to "
            "deliver next: rewound (a record ahead, after a rebalance's seek: sought back, "
            "nothing skipped), forced (taken after repeated rewinds never brought the missing "
            "offsets) or restarted (a record behind with no seek: the broker's log starts "
            "again lower, it lost data; read on from there) or before_seek (a record of a "
            "partition a rebalance assigned, before its seek to the committed offset: "
            "dropped, read again after the seek)",
            ["outcome"],
            registry=r,
        )
        self.output_too_large = Counter(
            "coldstream_output_too_large",
            "Output records the producer or broker refused for size, by topic and what became "
            "of them (shrunk: re-sent without the raw payload; dead_lettered: a DLQ record "
            "replaced a recommendation; dropped: counted, not sent)",
            ["topic", "outcome"],
            registry=r,
        )
        self.bad_record_timestamps = Counter(
            "coldstream_bad_record_timestamps",
            "Input records whose record timestamp was implausible (<= 0, far in the future or "
            "older than the latency clamp): latency measured from arrival instead",
            registry=r,
        )
        self.empty_rankings = Counter(
            "coldstream_empty_rankings",
            "Events the model ranked to no item (e.g. non-finite scores): answered from the "
            "popularity fallback",
            registry=r,
        )
        self.sessions_expired = Counter(
            "coldstream_sessions_expired",
            "Idle sessions deleted by the expiry timer (with changelog tombstones)",
            registry=r,
        )
        self.model_errors = Counter(
            "coldstream_model_errors",
            "Micro-batches whose ranking failed (answered from the popularity fallback)",
            registry=r,
        )
        # -- what a user misses first (docs/architecture.md, Metrics) ------------------------
        self.cold_start = Counter(
            "coldstream_cold_start_recommendations",
            "Recommendations for cold-start users (at most cold_start_events events); "
            "share: divide by the recommended events",
            registry=r,
        )
        self.forgotten = Counter(
            "coldstream_forgotten_users", "Users forgotten (forget requests applied)", registry=r
        )
        self.segment_hits = Counter(
            "coldstream_online_segment_hits",
            "Next events found in the previous top-K, by user segment (cold: the previous "
            "recommendation was a cold-start one)",
            ["segment"],
            registry=r,
        )
        self.segment_requests = Counter(
            "coldstream_online_segment_requests",
            "Next events checked against the previous top-K, by user segment",
            ["segment"],
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "coldstream_assigned_partitions",
            "Input partitions assigned to this worker",
            ["topic"],
            registry=r,
        )
        self.rebalances = Counter(
            "coldstream_rebalances", "Partition assignments this worker received", registry=r
        )
        self.processed_offset = Gauge(
            "coldstream_processed_offset",
            "Offset of the last input record processed, per partition (progress)",
            ["topic", "partition"],
            registry=r,
        )
        self.model_load_seconds = Gauge(
            "coldstream_model_load_seconds",
            "Seconds the served model took to load (checkpoint read, verify, index build)",
            registry=r,
        )
        # -- health and the API (stream_app/health.py, stream_app/web.py) --------------------
        self.partition_stalled = Gauge(
            "coldstream_partition_stalled",
            "1 while an owned input partition has lag but its processed position has not moved "
            "for stall_after_s (0: progressing, caught up, or not owned)",
            ["topic", "partition"],
            registry=r,
        )
        self.partition_seconds_since_progress = Gauge(
            "coldstream_partition_seconds_since_progress",
            "Seconds an owned input partition has had lag without progress (0 when caught up)",
            ["topic", "partition"],
            registry=r,
        )
        self.recommend_requests = Counter(
            "coldstream_recommend_requests",
            "GET /recommend answers by how they were made (local, forwarded, or the fallback "
            "reason: owner_unreachable, no_owner, overloaded)",
            ["outcome"],
            registry=r,
        )
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes

    def set_index(self, report: Any) -> None:
        """Export an index build (``stream_app.index.IndexReport``): its kind and parameters
        (``coldstream_index_info``) and build-time recall (``coldstream_index_recall``)."""
        if report is None:
            return
        self.index_info.info(report.labels())
        if report.recall_at_10 is not None:
            self.index_recall.set(report.recall_at_10)

    def set_model(self, version: str, n_items: int) -> None:
        self.model_info.info({"version": version})
        with contextlib.suppress(ValueError):
            self.model_version.set(float(version))
        self.index_items.set(n_items)
        self.prime(model_version=version)

    def prime(
        self, *, devices: Sequence[str] | None = None, model_version: str | None = None
    ) -> None:
        """Create the known label values at 0, so that labelled series exist before the first
        event (an idle worker still exports ``coldstream_events_total`` etc.; otherwise
        ``absent_over_time`` alerts fire and ``rate()`` has nothing to work on). Idempotent;
        :meth:`set_model` calls it (worker start-up and every swap).

        ``devices``: values of ``coldstream_inference_seconds{device}``; default ``cpu``, plus
        ``cuda`` when torch is already imported and sees a GPU. Lag partitions come from
        ``kafka/topics.yaml`` (a worker reports 0 for partitions it does not own; the rules
        take ``max`` across replicas)."""
        from coldstream.core.events import REASONS

        topics = ("clicks", "purchases")
        for topic in (*topics, "forget-requests"):
            for outcome in ("recommended", "dlq", "duplicate"):
                self.events.labels(topic, outcome)
        for reason in REASONS:
            self.dlq.labels(reason)
        for outcome in ("ok", "refused"):
            self.model_swaps.labels(outcome)
        for arm in ("canary", "shadow"):  # 0 until a rollout's candidate is held
            if arm not in self._candidate_primed:
                self.rollout_candidate.labels(arm).set(0.0)
                self._candidate_primed.add(arm)
        for reason in ("popular", "model_error", "empty_ranking"):
            self.fallback.labels(reason)
        for out_topic, outcomes in (
            ("recommendations", ("dead_lettered",)),
            ("events-dlq", ("shrunk", "dropped")),
        ):
            for outcome in outcomes:
                self.output_too_large.labels(out_topic, outcome)
        for outcome in ("rewound", "forced", "restarted", "before_seek"):
            self.fetch_rewinds.labels(outcome)
        for segment in ("cold", "warm"):
            self.segment_hits.labels(segment)
            self.segment_requests.labels(segment)
        for topic in topics:
            self.assigned_partitions.labels(topic)
        if devices is None:
            devices = ["cpu"]
            torch = sys.modules.get("torch")
            with contextlib.suppress(Exception):
                if torch is not None and torch.cuda.is_available():
                    devices.append("cuda")
        for device in devices:
            self.inference.labels(device)
        if model_version is not None:
            self.online_hits.labels(model_version)
            self.online_requests.labels(model_version)
        try:
            from coldstream.core.topics import load_topics

            specs = load_topics()
            partitions = {t: specs[t].partitions for t in topics}
        except Exception:  # noqa: BLE001 - no topics file: lag series appear on assignment
            partitions = {}
        for topic, n in partitions.items():
            for p in range(n):
                self.consumer_lag.labels(topic, str(p))
                self.processed_offset.labels(topic, str(p))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class BatchHistogram(Collector):
    """A Prometheus histogram fed a whole micro-batch of values at once (numpy), through the
    client's public collector API: it keeps its own bucket counts and exposes them as a
    ``HistogramMetricFamily``. Same exposition as ``Histogram`` with ``observe`` per value
    (a unit test compares them), without touching the client's private bucket counters."""

    def __init__(
        self,
        name: str,
        documentation: str,
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name, self.documentation = name, documentation
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds) or not bounds:
            raise ValueError("buckets must be sorted and non-empty")
        if bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self._bounds = np.asarray(bounds, dtype=np.float64)
        self._counts = np.zeros(len(bounds), dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe_many(self, values: Sequence[float] | np.ndarray) -> None:
        """Add many observations in one numpy pass (bucket ``i`` counts ``v <= bounds[i]``)."""
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            return
        counts = np.bincount(
            np.searchsorted(self._bounds, v, side="left"), minlength=len(self._bounds)
        )
        with self._lock:
            self._counts += counts[: len(self._bounds)]
            self._sum += float(v.sum())

    def observe(self, value: float) -> None:
        self.observe_many([value])

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> list[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric(
            [],
            buckets=[
                (floatToGoString(b), c)
                for b, c in zip(self._bounds.tolist(), cumulative, strict=True)
            ],
            sum_value=total,
        )
        return [family]


def observe_many(histogram: BatchHistogram, values: Sequence[float] | np.ndarray) -> None:
    """``histogram.observe_many(values)`` (kept as a function for call sites that read well)."""
    histogram.observe_many(values)
