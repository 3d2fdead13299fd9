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

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
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
            "1 while the DLQ circuit breaker pauses consumption",
            registry=r,
        )

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
        for topic in topics:
            for outcome in ("recommended", "dlq", "duplicate"):
                self.events.labels(topic, outcome)
        for reason in REASONS:
            self.dlq.labels(reason)
        for outcome in ("ok", "refused"):
            self.model_swaps.labels(outcome)
        self.fallback.labels("popular")
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
