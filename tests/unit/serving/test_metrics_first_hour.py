"""The series a user misses first exist before the first event (primed), with Prometheus
names, on the worker's own registry: cold-start share, forget count, hit rate cold vs warm,
partitions, rebalances, progress, model load time, process CPU and memory."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry

from stream_app.metrics import Metrics


def test_new_series_are_there_at_start() -> None:
    m = Metrics(CollectorRegistry())
    m.set_model("3", 100)
    text = m.exposition().decode()
    for series in (
        "coldstream_cold_start_recommendations_total 0.0",
        "coldstream_forgotten_users_total 0.0",
        'coldstream_online_segment_hits_total{segment="cold"} 0.0',
        'coldstream_online_segment_requests_total{segment="warm"} 0.0',
        'coldstream_assigned_partitions{topic="clicks"} 0.0',
        "coldstream_rebalances_total 0.0",
        'coldstream_processed_offset{partition="5",topic="purchases"} 0.0',
        "coldstream_model_load_seconds 0.0",
    ):
        assert f"\n{series}\n" in text, series
    assert re.search(r"^process_resident_memory_bytes \d", text, re.M)
    assert re.search(r"^process_cpu_seconds_total \d", text, re.M)


def test_two_registries_do_not_collide() -> None:
    """Each Metrics object has its own process collector: tests and workers build several."""
    a, b = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    a.rebalances.inc()
    assert "coldstream_rebalances_total 1.0" in a.exposition().decode()
    assert "coldstream_rebalances_total 0.0" in b.exposition().decode()
