"""Every PromQL expression in the dashboard and the alert rules uses only metrics the app
exports (docs/architecture.md; a live scrape can be passed to the same functions)."""

from __future__ import annotations

import json

import pytest
import yaml

from deploy import dashboard
from deploy.promql import (
    PromQLSyntaxError,
    dashboard_expressions,
    deploy_expressions,
    deploy_metric_names,
    documented_metrics,
    documented_series_names,
    promql_metric_names,
    rule_expressions,
    scrape_series_names,
    unknown_metric_names,
)
from tests.deploy._deploy_helpers import REPO


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('rate(a_total{job="x", le=~"0.1|1"}[5m])', {"a_total"}),
        (
            "sum by (topic, partition) (max without (pod) (lag)) > on (topic) group_left(x) b",
            {"lag", "b"},
        ),
        ("histogram_quantile(0.99, sum by (le) (rate(h_bucket[$__rate_interval])))", {"h_bucket"}),
        ("a offset 1h and b[1d:5m] offset 2h unless bool_metric", {"a", "b", "bool_metric"}),
        ('label_replace(x, "dst", "$1", "src", "(.*)") / scalar(y) * 1e3 + inf', {"x", "y"}),
        ('{__name__="by_name", job="j"} or sum(topk(3, c))', {"by_name", "c"}),
        ("absent_over_time(m[5m]) or vector(0) ^ -2", {"m"}),
        ('count_values("v", x) @ start()', {"x"}),
        ("sum(rate(x[${interval}])) / sum(rate(y[$__interval]))", {"x", "y"}),
    ],
)
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def test_promql_refuses_what_it_cannot_check() -> None:
    with pytest.raises(PromQLSyntaxError):
        promql_metric_names('{__name__=~"coldstream_.*"}')
    with pytest.raises(PromQLSyntaxError):
        promql_metric_names("sum(rate(x[5m])")


def test_documented_metrics_are_parsed_with_types() -> None:
    metrics = documented_metrics()
    assert metrics["coldstream_event_latency_seconds"] == "histogram"
    assert metrics["coldstream_events_total"] == "counter"
    assert metrics["coldstream_trainer_model_age_seconds"] == "gauge"
    assert metrics["coldstream_trainer_cycles_total"] == "counter"
    assert len(metrics) >= 20
    series = documented_series_names()
    assert "coldstream_event_latency_seconds_bucket" in series
    assert "coldstream_event_latency_seconds" not in series


def test_dashboard_and_rules_use_only_documented_metrics() -> None:
    exprs = deploy_expressions()
    assert len(rule_expressions()) >= 8 and len(dashboard_expressions()) >= 20
    assert unknown_metric_names(documented_series_names() | dashboard.PROCESS_METRICS) == {}
    used = deploy_metric_names()
    assert used and all(n.startswith("coldstream_") or n in dashboard.PROCESS_METRICS for n in used)
    assert len(exprs) == len(rule_expressions()) + len(dashboard_expressions())


def test_the_check_reports_a_missing_metric() -> None:
    """Against a scrape that lacks a metric, the check names the expressions using it."""
    names = (documented_series_names() | dashboard.PROCESS_METRICS) - {"coldstream_consumer_lag"}
    missing = unknown_metric_names(names)
    assert "rules:ColdstreamConsumerLagHigh" in missing
    assert all(m == {"coldstream_consumer_lag"} for m in missing.values())


def test_scrape_series_names_reads_the_text_format() -> None:
    body = (
        "# HELP coldstream_events_total Input events.\n"
        "# TYPE coldstream_events_total counter\n"
        'coldstream_events_total{topic="clicks",outcome="recommended"} 3.0\n'
        "coldstream_events_created 1.7e9\n"
        'coldstream_event_latency_seconds_bucket{le="0.05"} 1.0\n'
    )
    assert scrape_series_names(body) == {
        "coldstream_events_total",
        "coldstream_events_created",
        "coldstream_event_latency_seconds_bucket",
    }


# --------------------------------------------------------------------------- dashboard


def test_dashboard_covers_the_required_views() -> None:
    doc = json.loads((REPO / "deploy/grafana/dashboards/coldstream.json").read_text())
    panels = [p for p in doc["panels"] if p["type"] != "row"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for metric in (
        "coldstream_events_total",
        "coldstream_event_latency_seconds_bucket",
        "coldstream_consumer_lag",
        "coldstream_dlq_total",
        "coldstream_model_version",
        "coldstream_online_hits_total",
        "coldstream_trainer_topk_agreement",
        "coldstream_inference_seconds_bucket",
    ):
        assert metric in exprs, metric
    for metric in (  # what a user misses first
        "coldstream_trainer_gate_ndcg",
        "coldstream_dlq_breaker_open",
        "coldstream_model_info",
        "coldstream_cold_start_recommendations_total",
        "coldstream_fallback_total",
        "coldstream_forgotten_users_total",
        "coldstream_online_segment_hits_total",
        "coldstream_assigned_partitions",
        "coldstream_rebalances_total",
        "coldstream_processed_offset",
        "coldstream_model_load_seconds",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert metric in exprs, metric
    assert "sum by (le, device)" in exprs  # inference time per device (GPU/CPU)
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert all(t["datasource"] == p["datasource"] for t in p["targets"])
        for t in p["targets"]:  # every selector follows the namespace and pod variables
            for name in promql_metric_names(t["expr"]):
                assert f"{name}{{" in t["expr"], (p["title"], t["expr"])
            assert t["expr"].count('pod=~"$pod"') == t["expr"].count('namespace=~"$namespace"')
            assert t["expr"].count('pod=~"$pod"') >= len(promql_metric_names(t["expr"]))
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24


def test_dashboard_has_datasource_namespace_and_pod_variables() -> None:
    doc = json.loads((REPO / "deploy/grafana/dashboards/coldstream.json").read_text())
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "pod"]
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert ds["current"]["value"] == dashboard.PROVISIONED_UID
    for name in ("namespace", "pod"):
        v = variables[name]
        assert v["type"] == "query" and v["includeAll"] and v["allValue"] == ".*"
        assert v["datasource"]["uid"] == "${datasource}"
    assert 'namespace=~"$namespace"' in variables["pod"]["query"]["query"]


def test_scoped_adds_the_matchers_to_every_selector() -> None:
    got = dashboard.scoped('rate(coldstream_events_total{outcome="dlq"}[5m]) / coldstream_x')
    assert got == (
        'rate(coldstream_events_total{outcome="dlq", namespace=~"$namespace", pod=~"$pod"}[5m])'
        ' / coldstream_x{namespace=~"$namespace", pod=~"$pod"}'
    )


def test_provisioned_datasource_uid_matches_the_dashboard() -> None:
    prov = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/coldstream.yaml").read_text()
    )
    (ds,) = prov["datasources"]
    assert ds["uid"] == dashboard.PROVISIONED_UID and ds["type"] == "prometheus"
    assert ds["url"] == "${PROMETHEUS_URL}"  # from Grafana's environment, not hard-coded
    dash = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/coldstream.yaml").read_text()
    )
    (provider,) = dash["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
