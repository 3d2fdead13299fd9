"""Live monitoring checks: a real worker, a real promtool, a real Prometheus server.

One worker subprocess (module fixture) serves against Apache Kafka (``kafka_bootstrap``) on
unique topics with a tmp model store, exactly like ``tests/integration/test_pipeline.py``.
Its ``/metrics`` is scraped once while idle (before any event) and once after it processed
good events, malformed events (DLQ) and an unsigned ``model-updates`` record (a refused swap).

What is live and what is not:

* worker metrics: LIVE (HTTP scrapes of the running worker, and Prometheus scraping it);
* trainer metrics: NOT a running trainer service (it needs the teacher and a trained store):
  the trainer's own metrics object (``trainer.service.telemetry.TrainerMetrics``) is served over HTTP
  by ``prometheus_client.start_http_server`` in this process -- the exact call
  ``trainer.service.loop.run`` makes -- and scraped; no trainer cycle has run, and every trainer
  series still has a sample (``coldstream_trainer_cycles_total{outcome}`` is primed at 0).

A missing ``promtool`` or ``prometheus`` fails (``.ci/install-deploy-tools.sh`` installs the
Debian ``prometheus`` package, which ships both); nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from coldstream.core.records import event_payload
from coldstream.core.topics import create_topics, load_topics, prefixed
from deploy.promql import RULES_FILE, deploy_metric_names, scrape_series_names, unknown_metric_names
from devtools.brokers import free_port
from devtools.checkpoints import dev_signer, make_checkpoint, verify_env
from devtools.kafka_io import delete_topics, new_event, produce, read_until
from devtools.processes import WorkerProcess, start_process, stop_process
from devtools.waiting import wait_until
from tests.deploy._deploy_helpers import find_tool

N_ITEMS = 100
MALFORMED = [  # (logical topic, key, value, DLQ reason)
    ("clicks", b"k", b"", "empty"),
    ("clicks", b"k", b"{not json", "invalid_json"),
    ("clicks", b"k", b'["a"]', "not_object"),
    (
        "purchases",
        b"someone-else",
        event_payload("u-1", "3", event_id="m1", ts=1.0),
        "key_mismatch",
    ),
]


@dataclass
class Live:
    worker: WorkerProcess
    topics: dict[str, str]
    bootstrap: str
    idle: str  # /metrics before the first event
    busy: str  # /metrics after events, DLQ and a refused swap
    n_good: int


def _good_events(
    topics: dict[str, str], n_users: int, per_user: int, tag: str
) -> list[tuple[str, bytes, bytes]]:
    out = []
    for u in range(n_users):
        user = f"{tag}-user-{u}"
        for j in range(per_user):
            topic = "purchases" if j == per_user - 1 else "clicks"
            _, value = new_event(user, str(1 + (u * 7 + j * 3) % N_ITEMS))
            out.append((topics[topic], user.encode(), value))
    return out


def _wait_for(predicate, timeout_s: float, what: str):
    return wait_until(predicate, timeout_s, what, interval_s=0.25)


@pytest.fixture(scope="module")
def live(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("live-metrics")
    prefix = f"live-metrics-{uuid.uuid4().hex[:8]}-"
    specs = load_topics()
    topics = {logical: s.name for logical, s in prefixed(specs, prefix).items()}
    asyncio.run(create_topics(kafka_bootstrap, specs, replication_factor=1, prefix=prefix))
    store = tmp / "store"
    make_checkpoint(store, n_items=N_ITEMS, signer=dev_signer())
    worker = WorkerProcess(
        env={**os.environ, **verify_env()},  # trusts dev_signer()
        log_path=tmp / "worker.log",
        bootstrap=kafka_bootstrap,
        topic_prefix=prefix,
        app_id=prefix + "app",
        model_store=store,
        threads=1,
        ready_timeout_s=60,
    )
    try:
        worker.start()
        idle = worker.get_text("/metrics")
        good = _good_events(topics, n_users=10, per_user=4, tag="w1")
        bad = [(topics[t], k, v) for t, k, v, _ in MALFORMED]
        records = good[:20] + bad + good[20:]
        # an unsigned model-updates record: the worker must refuse it
        update = json.dumps(
            {
                "version": 2,
                "seq": 2,
                "uri": "file:///nowhere/v000002",
                "sha256": "0" * 64,
                "created_at": time.time(),
                "metrics": {},
            }
        ).encode()
        asyncio.run(produce(kafka_bootstrap, records + [(topics["model-updates"], None, update)]))
        out = asyncio.run(
            read_until(
                kafka_bootstrap,
                [topics["recommendations"], topics["events-dlq"]],
                count=len(records),
                timeout_s=45,
            )
        )
        assert len(out) == len(records), f"{len(out)} outputs for {len(records)} inputs"

        def refused_swap_visible() -> str | None:
            """The refused update counted, and the progress exported (every second)."""
            text = worker.get_text("/metrics")
            exported = re.findall(r"^coldstream_processed_offset\{[^}]*\} ([1-9]\S*)$", text, re.M)
            return text if "coldstream_model_swap_failures_total{" in text and exported else None

        busy = _wait_for(refused_swap_visible, 20, "the refused model update in /metrics")
        yield Live(worker, topics, kafka_bootstrap, idle, busy, len(good))
    finally:
        worker.stop()
        with contextlib.suppress(Exception):  # best effort: the session broker is temporary
            asyncio.run(delete_topics(kafka_bootstrap, list(topics.values())))


def _sample(text: str, series: str) -> float | None:
    m = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else None


# --------------------------------------------------------------------------- the scrape itself


def test_idle_worker_exports_labelled_series_at_zero(live: Live) -> None:
    """Before the first event the labelled series already exist with 0 (Metrics.prime), so
    ``absent_over_time(coldstream_events_total[5m])`` (consumer group empty) stays quiet on
    an idle worker and ``rate()`` has samples from the start."""
    idle = live.idle
    for series in (
        'coldstream_events_total{outcome="recommended",topic="clicks"}',
        'coldstream_events_total{outcome="dlq",topic="purchases"}',
        'coldstream_events_total{outcome="duplicate",topic="clicks"}',
        'coldstream_dlq_total{reason="invalid_json"}',
        'coldstream_model_swaps_total{outcome="ok"}',
        'coldstream_model_swaps_total{outcome="refused"}',
        'coldstream_consumer_lag{partition="0",topic="clicks"}',
        'coldstream_inference_seconds_count{device="cpu"}',
        'coldstream_online_requests_total{model_version="1"}',
        "coldstream_event_latency_seconds_count",
    ):
        assert _sample(idle, series) == 0.0, f"{series} missing or not 0 on an idle worker"
    n_parts = load_topics()["clicks"].partitions
    assert (
        len(re.findall(r'^coldstream_consumer_lag\{partition="\d+",topic="clicks"\}', idle, re.M))
        == n_parts
    )
    assert _sample(idle, "coldstream_model_version") == 1.0


def test_busy_scrape_counts_what_happened(live: Live) -> None:
    busy = live.busy
    rec = sum(
        _sample(busy, f'coldstream_events_total{{outcome="recommended",topic="{t}"}}') or 0
        for t in ("clicks", "purchases")
    )
    assert rec == live.n_good
    for _, _, _, reason in MALFORMED:
        assert _sample(busy, f'coldstream_dlq_total{{reason="{reason}"}}') == 1.0, reason
    assert _sample(busy, "coldstream_event_latency_seconds_count") == live.n_good
    assert _sample(busy, 'coldstream_model_swaps_total{outcome="refused"}') == 1.0
    assert _sample(busy, 'coldstream_model_swap_failures_total{reason="unsigned"}') == 1.0
    assert "user-" not in busy  # no user ids in labels


def test_scrape_has_process_partition_and_model_load_series(live: Live) -> None:
    """What a user misses first: process CPU/RSS, the partitions this worker owns and the
    rebalances it went through, progress per partition, how long the model took to load."""
    busy = live.busy
    assert (_sample(busy, "process_resident_memory_bytes") or 0) > 50e6
    assert (_sample(busy, "process_cpu_seconds_total") or 0) > 0
    n_parts = load_topics()["clicks"].partitions
    for topic in ("clicks", "purchases"):  # one worker: it owns every input partition
        assert _sample(busy, f'coldstream_assigned_partitions{{topic="{topic}"}}') == n_parts
    assert (_sample(busy, "coldstream_rebalances_total") or 0) >= 1
    assert (_sample(busy, "coldstream_model_load_seconds") or 0) > 0
    offsets = [
        float(v)
        for v in re.findall(
            r'^coldstream_processed_offset\{[^}]*topic="clicks"\} (\S+)$', busy, re.M
        )
    ]
    assert len(offsets) == n_parts and sum(offsets) > 0  # progress was exported
    for series in (
        'coldstream_online_segment_requests_total{segment="cold"}',
        "coldstream_cold_start_recommendations_total",
        "coldstream_forgotten_users_total",
    ):
        assert _sample(busy, series) is not None, series


@pytest.fixture(scope="session")
def promtool() -> str:
    return find_tool("promtool")


def test_promtool_check_metrics_is_clean_on_live_exposition(live: Live, promtool: str) -> None:
    res = subprocess.run(
        [promtool, "check", "metrics"], input=live.busy, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), (
        f"promtool check metrics (rc {res.returncode}):\n{res.stdout}{res.stderr}"
    )
    # the same check is not a no-op: a bad exposition is reported
    bad = "# HELP x_requests A counter.\n# TYPE x_requests counter\nx_requests 1\n"
    res = subprocess.run(
        [promtool, "check", "metrics"], input=bad, capture_output=True, text=True, timeout=60
    )
    assert res.returncode != 0 and "_total" in res.stdout + res.stderr


# --------------------------------------------------------------------------- Prometheus


class Prometheus:
    """``/usr/bin/prometheus`` on a free loopback port, tmp storage; stopped by PID with a deadline."""

    def __init__(
        self, binary: str, workdir: Path, targets: dict[str, str], rule_files: list[Path]
    ) -> None:
        self.port = free_port()
        self.workdir = workdir
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {
                    "job_name": job,
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": [target]}],
                }
                for job, target in targets.items()
            ],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / "prometheus.log"
        self.argv = [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Prometheus:
        self.proc = start_process(self.argv, log_path=self.log_path, cwd=self.workdir)
        try:
            _wait_for(self._ready, 30, "Prometheus /-/ready")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, deadline_s=10)
            self.proc = None

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"prometheus exited with {self.proc.returncode}:\n"
                f"{self.log_path.read_text(errors='replace')[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> object:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return data["result"]

    def scalar(self, expr: str) -> float | None:
        """The value of a one-element vector (None when empty or NaN)."""
        res = self.query(expr)
        if len(res) != 1:
            return None
        v = float(res[0]["value"][1])
        return None if math.isnan(v) else v


def test_prometheus_scrapes_worker_and_answers_promql(live: Live, tmp_path: Path) -> None:
    binary = find_tool("prometheus")
    t0 = time.monotonic()
    with Prometheus(
        binary, tmp_path, {"coldstream-worker": f"127.0.0.1:{live.worker.port}"}, [RULES_FILE]
    ) as prom:
        _wait_for(lambda: prom.scalar('up{job="coldstream-worker"}') == 1.0, 20, "up == 1")
        # a second wave while Prometheus watches, so that rate() sees the counters move
        before = prom.scalar("sum(coldstream_event_latency_seconds_count)")
        assert before == live.n_good
        wave = _good_events(live.topics, n_users=5, per_user=4, tag="w2")
        asyncio.run(produce(live.bootstrap, wave))
        total = live.n_good + len(wave)
        _wait_for(
            lambda: prom.scalar("sum(coldstream_event_latency_seconds_count)") == total,
            30,
            "Prometheus to see the second wave",
        )
        events = prom.scalar('sum(coldstream_events_total{outcome="recommended"})')
        assert events == total
        dlq = prom.scalar('sum(coldstream_events_total{outcome="dlq"})')
        assert dlq == len(MALFORMED)
        p99 = _wait_for(
            lambda: prom.scalar(
                "histogram_quantile(0.99, sum by (le) "
                "(rate(coldstream_event_latency_seconds_bucket[1m])))"
            ),
            15,
            "a p99 latency from rate() over the latency histogram",
        )
        assert 0 < p99 <= 10.0, p99
        rate = prom.scalar("sum(rate(coldstream_events_total[1m]))")
        assert rate is not None and rate > 0

        # the alert rules load, evaluate without error against the live series, and the
        # "consumer group empty" alert is quiet while a worker reports
        def evaluated_groups() -> list | None:
            groups = prom.api("rules")["groups"]
            done = groups and all(
                r.get("lastEvaluation", "0001").startswith("2")
                for grp in groups
                for r in grp["rules"]
            )
            return groups if done else None

        groups = _wait_for(evaluated_groups, 15, "every rule evaluated once")
        rules = {r["name"]: r for grp in groups for r in grp["rules"]}
        assert len(rules) >= 8
        bad = {n: r.get("lastError") for n, r in rules.items() if r["health"] != "ok"}
        assert not bad, bad
        assert rules["ColdstreamConsumerGroupEmpty"]["state"] == "inactive"
    assert prom.proc is None
    print(f"prometheus check: {time.monotonic() - t0:.1f} s")


# --------------------------------------------------------------------------- dashboards and rules


def _declared_series(exposition: str) -> set[str]:
    """Series names of the metric families a scrape declares (``# TYPE``), samples or not."""
    from deploy.promql import series_names

    kinds = {
        "counter": "counter",
        "gauge": "gauge",
        "histogram": "histogram",
        "summary": "summary",
        "info": "info",
        "untyped": "gauge",
    }
    fams = {}
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.MULTILINE):
        fams[name] = kinds.get(kind, "gauge")
    return series_names(fams)


def test_dashboard_and_rules_use_only_live_metrics(live: Live) -> None:
    """Every PromQL expression of deploy/grafana and deploy/prometheus/rules.yaml selects a
    series that the LIVE worker scrape has (samples), or -- for ``coldstream_trainer_*``
    only -- that the trainer's metrics object serves over HTTP (see the module docstring)."""
    from prometheus_client import start_http_server

    from trainer.service.judge_loop import JudgeMetrics
    from trainer.service.telemetry import TrainerMetrics

    trainer = TrainerMetrics()
    JudgeMetrics(trainer.registry)  # the rollout judge runs in the trainer (its registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=trainer.registry)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            trainer_text = r.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    worker_names = scrape_series_names(live.busy)
    trainer_samples = scrape_series_names(trainer_text)
    trainer_declared = {
        n for n in _declared_series(trainer_text) if n.startswith("coldstream_trainer_")
    }
    assert worker_names and trainer_samples
    assert not {n for n in worker_names if n.startswith("coldstream_trainer_")}
    judge_names = {n for n in trainer_samples if n.startswith("coldstream_rollout_")}
    assert "coldstream_rollout_hit_rate" in judge_names and not judge_names & worker_names

    # the trainer primes its labelled counters, so even before a cycle they have a sample; its
    # gate gauge (labelled by model) has none before the first gate (a 0 would read as NDCG
    # 0): it counts as live when the trainer's scrape declares it
    gate = {"coldstream_trainer_gate_ndcg"} & trainer_declared
    assert gate, "the trainer's scrape does not declare coldstream_trainer_gate_ndcg"
    missing = unknown_metric_names(worker_names | trainer_samples | gate)
    assert missing == {}, f"expressions selecting metrics nobody exports: {missing}"
    # the check covers every worker metric the deploy files use, live
    used = deploy_metric_names()
    worker_used = {
        n for n in used if not n.startswith("coldstream_trainer_") and n not in judge_names
    }
    assert worker_used and worker_used <= worker_names
    # and it can fail: without the lag gauge the lag alerts are reported
    gone = unknown_metric_names(
        (worker_names | trainer_samples | trainer_declared) - {"coldstream_consumer_lag"}
    )
    assert "rules:ColdstreamConsumerLagHigh" in gone
