"""Metric names in the exposition (docs/architecture.md) and per-batch histogram feeding."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream_app.metrics import LATENCY_BUCKETS, BatchHistogram, Metrics

DOC_NAMES = {
    "coldstream_events_total",
    "coldstream_dlq_total",
    "coldstream_batch_size",
    "coldstream_event_latency_seconds",
    "coldstream_inference_seconds",
    "coldstream_search_seconds",
    "coldstream_model_info",
    "coldstream_model_version",
    "coldstream_model_swaps_total",
    "coldstream_model_swap_failures_total",
    "coldstream_index_items",
    "coldstream_active_sessions",
    "coldstream_consumer_lag",
    "coldstream_online_hits_total",
    "coldstream_online_requests_total",
    "coldstream_fallback_total",
}


def _samples(m: Metrics) -> dict[str, float]:
    out = {}
    for fam in text_string_to_metric_families(m.exposition().decode()):
        for s in fam.samples:
            out[s.name + str(sorted(s.labels.items()))] = s.value
    return out


def test_exposition_has_documented_names():
    m = Metrics(CollectorRegistry())
    m.events.labels("clicks", "recommended").inc(3)
    m.dlq.labels("invalid_json").inc()
    m.inference.labels("cpu").observe(0.01)
    m.consumer_lag.labels("clicks", "0").set(5)
    m.model_swaps.labels("ok").inc()
    m.model_swap_failures.labels("checksum_mismatch").inc()
    m.online_hits.labels("1").inc()
    m.online_requests.labels("1").inc()
    m.fallback.labels("popular").inc()
    m.set_model("7", 1682)
    text = m.exposition().decode()
    names = {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}
    for name in DOC_NAMES:
        assert any(n == name or n.startswith(name + "_") for n in names) or name in names, name
    assert 'coldstream_model_info{version="7"} 1.0' in text
    assert "coldstream_model_version 7.0" in text
    labels = {
        k for fam in text_string_to_metric_families(text) for s in fam.samples for k in s.labels
    }
    assert not {"user", "user_id", "item_id", "event_id"} & labels


def test_latency_buckets_span_1ms_to_10s():
    assert LATENCY_BUCKETS[0] == 0.001 and LATENCY_BUCKETS[-1] == 10.0
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)


def test_registry_is_replaceable():
    a, b = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    a.events.labels("clicks", "dlq").inc()
    assert b"coldstream_events_total{" not in b.exposition()


def test_observe_many_equals_observe():
    values = np.r_[np.random.default_rng(0).exponential(0.05, 500), [0.001, 0.002, 10.0, 50.0, 0.0]]
    r1, r2 = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("h", "x", buckets=LATENCY_BUCKETS, registry=r1)
    h2 = BatchHistogram("h", "x", buckets=LATENCY_BUCKETS, registry=r2)
    for v in values:
        h1.observe(v)
    h2.observe_many(values[:100])
    h2.observe_many([])
    h2.observe_many(values[100:])
    s1 = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in r1.collect()
        for s in f.samples
        if not s.name.endswith("_created")
    }
    s2 = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in r2.collect()
        for s in f.samples
        if not s.name.endswith("_created")
    }
    assert s1.keys() == s2.keys()
    for key in s1:
        assert s1[key] == pytest.approx(s2[key]), key
    assert (
        generate_latest(r1).replace(b"_created", b"").split(b"\n")[:3]
        == generate_latest(r2).split(b"\n")[:3]
    )
