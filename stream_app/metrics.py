"""Prometheus metrics of the serving worker, in one object built against a registry.

Names follow ``docs/architecture.md`` (binding). No label carries a user or item id.
Histograms are fed once per micro-batch: :func:`observe_many` adds a whole batch of
values to a histogram with one numpy pass instead of one Python ``observe`` per event.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

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
        self.events = Counter("coldstream_events", "Input events by topic and outcome",
                              ["topic", "outcome"], registry=r)
        self.dlq = Counter("coldstream_dlq", "Events sent to the DLQ, by reason", ["reason"], registry=r)
        self.batch_size = Histogram("coldstream_batch_size", "Events per micro-batch",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.event_latency = Histogram("coldstream_event_latency_seconds",
                                       "Input record timestamp to recommendation publish",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("coldstream_inference_seconds", "Student encode time per batch",
                                   ["device"], buckets=COMPUTE_BUCKETS, registry=r)
        self.search = Histogram("coldstream_search_seconds", "Index search time per batch",
                                buckets=COMPUTE_BUCKETS, registry=r)
        self.model_info = Info("coldstream_model", "Served model", registry=r)
        self.model_version = Gauge("coldstream_model_version", "Served model version", registry=r)
        self.model_swaps = Counter("coldstream_model_swaps", "Model swaps by outcome", ["outcome"],
                                   registry=r)
        self.model_swap_failures = Counter("coldstream_model_swap_failures",
                                           "Refused model swaps by reason", ["reason"], registry=r)
        self.index_items = Gauge("coldstream_index_items", "Items in the serving index", registry=r)
        self.active_sessions = Gauge("coldstream_active_sessions", "Users in the local session table",
                                     registry=r)
        self.consumer_lag = Gauge("coldstream_consumer_lag", "Messages behind the high watermark",
                                  ["topic", "partition"], registry=r)
        self.online_hits = Counter("coldstream_online_hits", "Next events found in the previous top-K",
                                   ["model_version"], registry=r)
        self.online_requests = Counter("coldstream_online_requests",
                                       "Next events checked against the previous top-K",
                                       ["model_version"], registry=r)
        self.fallback = Counter("coldstream_fallback", "Recommendations served by a fallback",
                                ["reason"], registry=r)
        self.dlq_breaker_open = Gauge("coldstream_dlq_breaker_open",
                                      "1 while the DLQ circuit breaker pauses consumption", registry=r)

    def set_model(self, version: str, n_items: int) -> None:
        self.model_info.info({"version": version})
        with contextlib.suppress(ValueError):
            self.model_version.set(float(version))
        self.index_items.set(n_items)
        self.prime(model_version=version)

    def prime(self, *, devices: Sequence[str] | None = None, model_version: str | None = None) -> None:
        """Create the known label values at 0, so that labelled series exist before the first
        event (an idle worker still exports ``coldstream_events_total`` etc.; otherwise
        ``absent_over_time`` alerts fire and ``rate()`` has nothing to work on). Idempotent;
        :meth:`set_model` calls it (worker start-up and every swap).

        ``devices``: values of ``coldstream_inference_seconds{device}``; default ``cpu``, plus
        ``cuda`` when torch is already imported and sees a GPU. Lag partitions come from
        ``kafka/topics.yaml`` (a worker reports 0 for partitions it does not own; the rules
        take ``max`` across replicas)."""
        from stream_app.validation import REASONS

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
            from stream_app.topics import load_topics

            specs = load_topics()
            partitions = {t: specs[t].partitions for t in topics}
        except Exception:  # noqa: BLE001 - no topics file: lag series appear on assignment
            partitions = {}
        for topic, n in partitions.items():
            for p in range(n):
                self.consumer_lag.labels(topic, str(p))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def observe_many(histogram: Histogram, values: Sequence[float] | np.ndarray) -> None:
    """Add many observations to an (unlabelled or child) histogram in one pass.

    Equivalent to ``for v in values: histogram.observe(v)``, at numpy speed. Touches the
    histogram's bucket counters directly (prometheus-client >= 0.20 layout; a unit test
    checks the exposition against ``observe``)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return
    bounds = np.asarray(histogram._upper_bounds, dtype=np.float64)
    # bucket i holds values <= bounds[i] and > bounds[i-1] (non-cumulative storage)
    idx = np.searchsorted(bounds, v, side="left")
    counts = np.bincount(idx, minlength=len(bounds))
    for i, c in enumerate(counts.tolist()):
        if c:
            histogram._buckets[i].inc(c)
    histogram._sum.inc(float(v.sum()))
