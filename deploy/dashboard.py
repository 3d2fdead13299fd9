"""The Grafana dashboard, as data: ``build()`` returns the JSON model.

Written to ``deploy/grafana/dashboards/coldstream.json`` by ``python -m deploy.generate``.
Every query uses only metrics listed in docs/architecture.md (checked in tests/deploy) or the
process metrics of prometheus_client's process collector (:data:`PROCESS_METRICS`), and every
one is checked against a live scrape (tests/integration/test_live_metrics.py).

Template variables: ``datasource`` (any Prometheus; default the provisioned one,
``PROVISIONED_UID`` of ``deploy/grafana/provisioning/datasources/coldstream.yaml``),
``namespace`` and ``pod`` (multi-value, "All" by default; outside Kubernetes the labels are
absent and "All" still matches). Every selector carries ``{namespace=~"$namespace",
pod=~"$pod"}``.
"""

from __future__ import annotations

import re
from typing import Any

PROVISIONED_UID = "coldstream-prometheus"
"""The uid of the provisioned Prometheus datasource: the ``datasource`` variable's default."""
DATASOURCE_UID = "${datasource}"
DATASOURCE = {"type": "prometheus", "uid": DATASOURCE_UID}
RI = "$__rate_interval"
SEL = 'namespace=~"$namespace", pod=~"$pod"'
"""The template variables' label matchers, added to every selector (:func:`scoped`)."""
PROCESS_METRICS = {"process_cpu_seconds_total", "process_resident_memory_bytes"}
"""Exported by ``prometheus_client.ProcessCollector`` in the worker (not coldstream_*)."""

_METRIC = re.compile(r"\b((?:coldstream|process)_[a-z0-9_]+)(\{[^}]*\})?")


def scoped(expr: str) -> str:
    """``expr`` with the namespace/pod matchers added to every metric selector."""

    def add(m: re.Match[str]) -> str:
        name, labels = m.group(1), m.group(2)
        if labels:
            inner = labels[1:-1].strip()
            return f"{name}{{{inner}, {SEL}}}" if inner else f"{name}{{{SEL}}}"
        return f"{name}{{{SEL}}}"

    return _METRIC.sub(add, expr)


def _q(expr: str, legend: str) -> dict[str, Any]:
    return {"expr": scoped(expr), "legendFormat": legend}


def _hq(q: float, metric: str, by: str = "") -> str:
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket[{RI}])))"


# (title, panel type, unit, width, queries, description)
ROWS: list[tuple[str, list[tuple[str, str, str, int, list[dict[str, Any]], str]]]] = [
    (
        "Throughput and latency",
        [
            (
                "Events per second by outcome",
                "timeseries",
                "ops",
                8,
                [
                    _q(f"sum by (outcome) (rate(coldstream_events_total[{RI}]))", "{{outcome}}"),
                ],
                "Input events: recommended, sent to the DLQ, or dropped as duplicates.",
            ),
            (
                "Event latency (event to recommendation)",
                "timeseries",
                "s",
                8,
                [
                    _q(_hq(0.5, "coldstream_event_latency_seconds"), "p50"),
                    _q(_hq(0.95, "coldstream_event_latency_seconds"), "p95"),
                    _q(_hq(0.99, "coldstream_event_latency_seconds"), "p99"),
                ],
                "Objective: p99 below 50 ms (alert ColdstreamLatencyP99High).",
            ),
            (
                "Mean batch size",
                "timeseries",
                "short",
                8,
                [
                    _q(
                        f"sum(rate(coldstream_batch_size_sum[{RI}])) / "
                        f"sum(rate(coldstream_batch_size_count[{RI}]))",
                        "events per batch",
                    ),
                ],
                "Micro-batch size of the serving path.",
            ),
        ],
    ),
    (
        "Kafka",
        [
            (
                "Consumer lag by topic",
                "timeseries",
                "short",
                12,
                [
                    _q(
                        "sum by (topic) (max by (topic, partition) (coldstream_consumer_lag))",
                        "{{topic}}",
                    ),
                ],
                "Messages behind the end of the log (max over replicas per partition).",
            ),
            (
                "Dead-letter queue",
                "timeseries",
                "percentunit",
                12,
                [
                    _q(
                        f'sum(rate(coldstream_events_total{{outcome="dlq"}}[{RI}])) / '
                        f"sum(rate(coldstream_events_total[{RI}]))",
                        "DLQ ratio",
                    ),
                    _q(
                        f"sum by (reason) (rate(coldstream_dlq_total[{RI}])) / "
                        f"scalar(sum(rate(coldstream_events_total[{RI}])))",
                        "{{reason}}",
                    ),
                ],
                "Share of input events sent to events-dlq, overall and by reason.",
            ),
        ],
    ),
    (
        "Model",
        [
            (
                "Model version per pod",
                "timeseries",
                "none",
                8,
                [
                    _q("max by (pod) (coldstream_model_version)", "{{pod}}"),
                ],
                "The version each worker serves: steps show hot swaps.",
            ),
            (
                "Model swaps",
                "timeseries",
                "short",
                8,
                [
                    _q(
                        f"sum by (outcome) (increase(coldstream_model_swaps_total[{RI}]))",
                        "{{outcome}}",
                    ),
                    _q(
                        f"sum by (reason) (increase(coldstream_model_swap_failures_total[{RI}]))",
                        "failure: {{reason}}",
                    ),
                ],
                "Swaps accepted and refused, and failures by reason.",
            ),
            (
                "Model age",
                "timeseries",
                "s",
                8,
                [
                    _q("max(coldstream_trainer_model_age_seconds)", "age"),
                ],
                "Age of the newest promoted model (maximum 24 h, alert ColdstreamModelTooOld).",
            ),
            (
                "Online hit rate",
                "timeseries",
                "percentunit",
                12,
                [
                    _q(
                        "sum(rate(coldstream_online_hits_total[1h])) / "
                        "sum(rate(coldstream_online_requests_total[1h]))",
                        "all (1 h)",
                    ),
                    _q(
                        f"sum by (model_version) (rate(coldstream_online_hits_total[{RI}])) / "
                        f"sum by (model_version) (rate(coldstream_online_requests_total[{RI}]))",
                        "{{model_version}}",
                    ),
                ],
                "Share of recommendations followed by a click on a recommended item.",
            ),
            (
                "Teacher-student agreement",
                "timeseries",
                "percentunit",
                12,
                [
                    _q("max(coldstream_trainer_topk_agreement)", "top-K agreement"),
                    _q("max(coldstream_trainer_distill_loss)", "distillation loss"),
                ],
                "Overlap of the student's and the teacher's top-K on the holdout, per trainer cycle.",
            ),
        ],
    ),
    (
        "Inference",
        [
            (
                "Inference time by device",
                "timeseries",
                "s",
                12,
                [
                    _q(_hq(0.5, "coldstream_inference_seconds", "device"), "p50 {{device}}"),
                    _q(_hq(0.99, "coldstream_inference_seconds", "device"), "p99 {{device}}"),
                ],
                "Student forward pass per batch, on GPU (cuda) or CPU.",
            ),
            (
                "Index search time",
                "timeseries",
                "s",
                12,
                [
                    _q(_hq(0.5, "coldstream_search_seconds"), "p50"),
                    _q(_hq(0.99, "coldstream_search_seconds"), "p99"),
                ],
                "FAISS top-K search per batch.",
            ),
            (
                "Items in the index",
                "stat",
                "short",
                6,
                [
                    _q("max(coldstream_index_items)", "items"),
                ],
                "",
            ),
            (
                "Active sessions",
                "stat",
                "short",
                6,
                [
                    _q("sum(coldstream_active_sessions)", "sessions"),
                ],
                "",
            ),
            (
                "Fallbacks per second",
                "timeseries",
                "ops",
                12,
                [
                    _q(f"sum by (reason) (rate(coldstream_fallback_total[{RI}]))", "{{reason}}"),
                ],
                "Recommendations served by a fallback (e.g. popularity) instead of the student.",
            ),
        ],
    ),
    (
        "Cold start and quality",
        [
            (
                "Share of cold-start and fallback answers",
                "timeseries",
                "percentunit",
                8,
                [
                    _q(
                        f"sum(rate(coldstream_cold_start_recommendations_total[{RI}])) / "
                        f'sum(rate(coldstream_events_total{{outcome="recommended"}}[{RI}]))',
                        "cold-start users",
                    ),
                    _q(
                        f"sum(rate(coldstream_fallback_total[{RI}])) / "
                        f'sum(rate(coldstream_events_total{{outcome="recommended"}}[{RI}]))',
                        "fallback (popularity)",
                    ),
                ],
                "Recommendations for users with at most COLDSTREAM_COLD_START_EVENTS events, and "
                "those answered by the popularity fallback (no event on a known item).",
            ),
            (
                "Online hit rate: cold vs warm users",
                "timeseries",
                "percentunit",
                8,
                [
                    _q(
                        f"sum by (segment) (rate(coldstream_online_segment_hits_total[{RI}])) / "
                        f"sum by (segment) (rate(coldstream_online_segment_requests_total[{RI}]))",
                        "{{segment}}",
                    ),
                ],
                "Share of next events found in the previous top-K, for users whose previous "
                "recommendation was a cold-start one and for the others.",
            ),
            (
                "Users forgotten",
                "stat",
                "short",
                4,
                [_q(f"sum(increase(coldstream_forgotten_users_total[{RI}]))", "forgotten")],
                "Forget requests applied in the interval (docs/privacy.md).",
            ),
            (
                "Served model",
                "table",
                "none",
                4,
                [_q("max by (pod, version) (coldstream_model_info)", "{{version}}")],
                "The version each pod serves (coldstream_model_info), and its load time below.",
            ),
            (
                "Model load time",
                "stat",
                "s",
                8,
                [_q("max by (pod) (coldstream_model_load_seconds)", "{{pod}}")],
                "Seconds the served model took to load at start-up (checkpoint, verify, index).",
            ),
            (
                "DLQ circuit breaker",
                "timeseries",
                "short",
                8,
                [_q("max by (pod) (coldstream_dlq_breaker_open)", "{{pod}}")],
                "Input partitions the breaker holds paused (0: closed). Alert: the DLQ ratio.",
            ),
            (
                "Trainer gate: holdout NDCG@10",
                "timeseries",
                "none",
                8,
                [_q("max by (model) (coldstream_trainer_gate_ndcg)", "{{model}}")],
                "Candidate vs current model on the holdout at the last gate (promote unless the "
                "candidate is worse by more than COLDSTREAM_TRAINER_GATE_MARGIN).",
            ),
        ],
    ),
    (
        "Process and partitions",
        [
            (
                "CPU per pod",
                "timeseries",
                "percentunit",
                6,
                [_q(f"sum by (pod) (rate(process_cpu_seconds_total[{RI}]))", "{{pod}}")],
                "CPU seconds per second of each worker process (1 = one core).",
            ),
            (
                "Resident memory per pod",
                "timeseries",
                "bytes",
                6,
                [_q("max by (pod) (process_resident_memory_bytes)", "{{pod}}")],
                "RSS of each worker process (sessions grow with distinct users).",
            ),
            (
                "Assigned partitions and rebalances",
                "timeseries",
                "short",
                6,
                [
                    _q("sum by (topic) (coldstream_assigned_partitions)", "{{topic}} partitions"),
                    _q(f"sum(increase(coldstream_rebalances_total[{RI}]))", "rebalances"),
                ],
                "Input partitions owned (summed over pods) and assignments received.",
            ),
            (
                "Progress per partition",
                "timeseries",
                "ops",
                6,
                [
                    _q(
                        f"sum by (topic, partition) (rate(coldstream_processed_offset[{RI}]))",
                        "{{topic}}[{{partition}}]",
                    ),
                ],
                "Input records processed per second on each partition: a flat line on one "
                "partition while others move is a stuck partition.",
            ),
        ],
    ),
    (
        "Rollout",
        [
            (
                "Canary vs live: next-event hit rate@10",
                "timeseries",
                "percentunit",
                8,
                [
                    _q("max by (arm, cohort) (coldstream_rollout_hit_rate)", "{{arm}} {{cohort}}"),
                ],
                "The running canary's and the live model's next-event hit rate@10, cold (<= 5 "
                "events) and warm users (coldstream judge).",
            ),
            (
                "Canary minus live (cold users), always-valid interval",
                "timeseries",
                "percentunit",
                8,
                [
                    _q(
                        'max by (bound) (coldstream_rollout_hit_rate_diff{cohort="cold"})',
                        "{{bound}}",
                    ),
                ],
                "Promoted when lower > -margin after the minimum sample; rolled back when "
                "upper < -margin/2 (docs/rollout.md). n: the observations panel.",
            ),
            (
                "Rollout observations and decisions",
                "timeseries",
                "short",
                8,
                [
                    _q(
                        "max by (arm, cohort) (coldstream_rollout_observations)",
                        "n {{arm}} {{cohort}}",
                    ),
                    _q(
                        f"sum by (decision) (increase(coldstream_rollout_decisions_total[{RI}]))",
                        "{{decision}}",
                    ),
                    _q(
                        "max by (arm) (coldstream_rollout_candidate_version)",
                        "candidate held ({{arm}})",
                    ),
                ],
                "",
            ),
        ],
    ),
    (
        "Trainer",
        [
            (
                "Trainer cycles",
                "timeseries",
                "short",
                8,
                [
                    _q(
                        f"sum by (outcome) (increase(coldstream_trainer_cycles_total[{RI}]))",
                        "{{outcome}}",
                    ),
                ],
                "Re-distillation cycles: promoted, rejected by the holdout gate, failed.",
            ),
            (
                "Trainer cycle time",
                "timeseries",
                "s",
                8,
                [
                    _q(_hq(0.5, "coldstream_trainer_cycle_seconds"), "p50"),
                ],
                "",
            ),
            (
                "Replay buffer and new items",
                "timeseries",
                "short",
                8,
                [
                    _q("max(coldstream_trainer_buffer_events)", "buffered events"),
                    _q(f"sum(increase(coldstream_trainer_new_items_total[{RI}]))", "new items"),
                ],
                "",
            ),
        ],
    ),
]


def templating() -> list[dict[str, Any]]:
    """The ``datasource``, ``namespace`` and ``pod`` variables."""
    ds = {"type": "prometheus", "uid": DATASOURCE_UID}

    def query_var(name: str, query: str) -> dict[str, Any]:
        return {
            "name": name,
            "label": name,
            "type": "query",
            "datasource": ds,
            "query": {"query": query, "refId": f"{name}-var"},
            "definition": query,
            "refresh": 2,
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
        }

    return [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {
                "selected": True,
                "text": "coldstream Prometheus",
                "value": PROVISIONED_UID,
            },
            "hide": 0,
        },
        query_var("namespace", "label_values(coldstream_model_version, namespace)"),
        query_var("pod", 'label_values(coldstream_model_version{namespace=~"$namespace"}, pod)'),
    ]


def build() -> dict[str, Any]:
    """The dashboard JSON model (Grafana 10/11)."""
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        pid, y, x = pid + 1, y + 1, 0
        for title, kind, unit, width, queries, desc in row_panels:
            if x + width > 24:
                x, y = 0, y + 8
            targets = [
                {"datasource": DATASOURCE, "refId": chr(ord("A") + i), **q}
                for i, q in enumerate(queries)
            ]
            panel: dict[str, Any] = {
                "id": pid,
                "type": kind,
                "title": title,
                "description": desc,
                "datasource": DATASOURCE,
                "gridPos": {"h": 8, "w": width, "x": x, "y": y},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
                if kind == "timeseries"
                else {"reduceOptions": {"calcs": ["lastNotNull"]}},
                "targets": targets,
            }
            if title.startswith("Event latency"):
                panel["fieldConfig"]["defaults"]["thresholds"] = {
                    "mode": "absolute",
                    "steps": [{"color": "green", "value": None}, {"color": "red", "value": 0.05}],
                }
                panel["fieldConfig"]["defaults"]["custom"] = {"thresholdsStyle": {"mode": "line"}}
            panels.append(panel)
            pid, x = pid + 1, x + width
        y += 8
    return {
        "uid": "coldstream-overview",
        "title": "coldstream",
        "tags": ["coldstream"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": templating()},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }
