"""Smoke test of the serving flow on the embedded Tansu broker (what ``coldstream demo`` uses)."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time

import pytest

from devtools.checkpoints import dev_signer, make_checkpoint, verify_env
from devtools.kafka_io import new_event, produce, read_until
from devtools.processes import WorkerProcess

pytestmark = [pytest.mark.tansu]


def test_tansu_events_in_recommendations_out(tansu_bootstrap, topic_prefix, make_topics, tmp_path):
    topics = make_topics(
        tansu_bootstrap,
        topic_prefix,
    )
    store = tmp_path / "store"
    make_checkpoint(store, n_items=100, signer=dev_signer())
    with WorkerProcess(
        env={**os.environ, **verify_env()},  # trusts dev_signer()
        log_path=tmp_path / "worker.log",
        bootstrap=tansu_bootstrap,
        topic_prefix=topic_prefix,
        app_id=topic_prefix + "app",
        model_store=store,
        profile="dev",
        idempotent_producer=False,  # Tansu has no idempotent producer
    ) as worker:
        # a few events one at a time: with Faust's fixed 1500 ms fetch wait each would take
        # 0.5-1.6 s on Tansu; the worker's 10 ms fetch wait must keep them well under that
        ids = []
        for i in range(8):
            eid, value = new_event(f"t-user-{i % 3}", str(1 + i))
            ids.append(eid)
            asyncio.run(
                produce(tansu_bootstrap, [(topics["clicks"], f"t-user-{i % 3}".encode(), value)])
            )
            time.sleep(0.1)
        asyncio.run(produce(tansu_bootstrap, [(topics["clicks"], b"t", b"{broken")]))
        out = asyncio.run(
            read_until(
                tansu_bootstrap,
                [topics["recommendations"], topics["events-dlq"]],
                count=9,
                timeout_s=60,
                idle_s=1.0,
            )
        )
        assert worker.get_json("/ready")[0] == 200
    recs = [json.loads(r.value) for r in out if r.topic == topics["recommendations"]]
    dlq = [json.loads(r.value) for r in out if r.topic == topics["events-dlq"]]
    assert sorted(r["event_id"] for r in recs) == sorted(ids)
    assert [d["error"] for d in dlq] == ["invalid_json"]
    assert all(len(r["items"]) == 10 for r in recs)
    p50 = statistics.median(r["latency_ms"] for r in recs)
    assert p50 < 400, f"median event-to-publish latency {p50:.0f} ms: fetch wait not applied?"


def test_demo_command_finishes_by_itself(tmp_path):
    """``coldstream demo`` end to end (random model: training is the trainer's to test)."""
    import subprocess
    import sys

    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "coldstream",
            "demo",
            "--random-model",
            "--events",
            "150",
            "--rate",
            "300",
            "--no-live",
            "--model-store",
            str(tmp_path / "store"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "events sent 150, recommendations 150, DLQ 0" in " ".join(res.stdout.split())
    assert "/metrics" in res.stdout
