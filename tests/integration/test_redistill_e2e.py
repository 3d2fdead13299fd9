"""Re-distillation end to end: stream -> trainer cycle -> gate -> signed update -> worker hot swap.

Apache Kafka, a trainer subprocess (``coldstream trainer``, the real MiniLM teacher on CPU)
and a worker subprocess share a model store holding v1: a *random* student over the first
300 MovieLens items (teacher text vectors). A small stream (MovieLens interactions on those
items, in time order) reaches the trainer's buffer; one cycle distils a candidate on its
older part, the gate compares it with v1 on the latest slice (never trained on) and promotes
it; the trainer writes v2 and publishes a signed ``model-updates`` record; the worker verifies
it and swaps: its later outputs carry version 2 and /metrics counts the swap.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from coldstream.core.model_updates import UpdateRefused, verify_update
from coldstream.core.pointer import read_pointer
from coldstream.core.signing import Signer
from devtools.brokers import free_port
from devtools.checkpoints import key_env, movielens_random_student
from devtools.kafka_io import new_event, produce, read_until
from devtools.processes import WorkerProcess, start_process, stop_process, wait_for_log

SIGNER = Signer.generate()
N_ITEMS = 300
N_EVENTS = 3000


def random_student_checkpoint(root: Path) -> tuple[Path, list[tuple[str, str]]]:
    """v1: a random student over the first ``N_ITEMS`` MovieLens items; and the stream."""
    path, stream = movielens_random_student(root, SIGNER, n_items=N_ITEMS)
    return path, stream[:N_EVENTS]


def test_trainer_cycle_promotes_and_worker_swaps(
    kafka_bootstrap, topic_prefix, make_topics, tmp_path, monkeypatch
):
    t_start = time.monotonic()
    topics = make_topics(kafka_bootstrap, topic_prefix)
    store = tmp_path / "store"
    _, stream = random_student_checkpoint(store)
    for name, value in key_env(tmp_path / "keys", SIGNER).items():  # both subprocesses
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("COLDSTREAM_TRAINER_CYCLE_EPOCHS", "4")
    monkeypatch.setenv("COLDSTREAM_TRAINER_DEVICE", "cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    trainer_log, trainer_port = tmp_path / "trainer.log", free_port()
    trainer = start_process(
        [
            sys.executable,
            "-m",
            "coldstream",
            "trainer",
            "--bootstrap",
            kafka_bootstrap,
            "--topic-prefix",
            topic_prefix,
            "--group-id",
            topic_prefix + "trainer",
            "--model-store",
            str(store),
            "--cycle-events",
            str(N_EVENTS - 200),
            "--cycle-seconds",
            "0",
            "--min-buffer-events",
            "500",
            "--teacher-prefixes",
            "64",
            "--metrics-port",
            str(trainer_port),
            "--threads",
            "1",
        ],
        log_path=trainer_log,
    )
    worker = WorkerProcess(
        log_path=tmp_path / "worker.log",
        bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        app_id=topic_prefix + "app",
        model_store=store,
        threads=1,
    )
    try:
        with worker:
            wait_for_log(
                trainer_log, r"trainer: consuming", proc=trainer, timeout_s=60, name="trainer"
            )
            records, first_ids = [], []
            for n, (user, item) in enumerate(stream):
                eid, value = new_event(user, item, event_id=f"s-{n}", ts=880_000_000.0 + n)
                records.append((topics["clicks"], user.encode(), value))
                first_ids.append(eid)
            asyncio.run(produce(kafka_bootstrap, records))
            m = wait_for_log(
                trainer_log,
                r"promoted and announced v(\d+)",
                proc=trainer,
                timeout_s=90,
                name="trainer",
            )
            assert m.group(1) == "2"
            # new users after the announcement: their outputs must come from v2 (swap is < 1 s)
            after_ids: list[str] = []
            deadline = time.monotonic() + 30
            seen_v2 = False
            n = 0
            while not seen_v2 and time.monotonic() < deadline:
                n += 1
                eid, value = new_event(f"late-{n}", "50")
                asyncio.run(
                    produce(kafka_bootstrap, [(topics["clicks"], f"late-{n}".encode(), value)])
                )
                after_ids.append(eid)
                time.sleep(0.5)
                status, body = worker.get_json("/ready")
                seen_v2 = status == 200 and body.get("model_version") == "2"
            eid, value = new_event("final", "50")
            asyncio.run(produce(kafka_bootstrap, [(topics["clicks"], b"final", value)]))
            out = asyncio.run(
                read_until(
                    kafka_bootstrap,
                    [topics["recommendations"], topics["model-updates"]],
                    count=len(first_ids) + len(after_ids) + 2,
                    timeout_s=40,
                    idle_s=0.5,
                )
            )
            metrics = worker.get_text("/metrics")
            with urllib.request.urlopen(
                f"http://127.0.0.1:{trainer_port}/metrics", timeout=10
            ) as r:
                trainer_metrics = r.read().decode()
    finally:
        rc = stop_process(trainer, deadline_s=10)
    tail = trainer_log.read_text(errors="replace")[-2500:]
    assert trainer.poll() is not None and rc is not None  # stopped by PID, within the deadline

    updates = [r.value for r in out if r.topic == topics["model-updates"]]
    assert len(updates) == 1, tail
    rec, path = verify_update(updates[0], keys=SIGNER.keyring, store_root=store)
    assert rec.version == 2 and path == (store / "v000002").resolve()
    ptr = read_pointer(store, SIGNER.keyring)  # the pointer moved before the announcement
    assert (ptr.version, ptr.seq, rec.seq) == (2, 2, 2)
    assert rec.metrics["promote"] is True and rec.metrics["parent_version"] == 1
    assert rec.metrics["holdout_users"] > 0 and "snapshot_at" in rec.metrics
    assert (
        rec.metrics["candidate_ndcg@10"] >= rec.metrics["current_ndcg@10"] - rec.metrics["margin"]
    )
    with pytest.raises(UpdateRefused):
        verify_update(updates[0], keys=Signer.generate().keyring, store_root=store)

    recs = {
        json.loads(r.value)["event_id"]: json.loads(r.value)
        for r in out
        if r.topic == topics["recommendations"]
    }
    assert recs[first_ids[0]]["model_version"] == "1"  # served by v1 before the cycle
    final = next(v for v in recs.values() if v["user_id"] == "final")
    assert final["model_version"] == "2", tail  # outputs now carry the new version
    # the events sent while the cycle ran: answered in order, and once by v2 never by v1 again
    # (the last of them may still be v1's: it was sent before /ready showed v2; "final" is not)
    versions = [recs[e]["model_version"] for e in after_ids if e in recs]
    assert versions and versions == sorted(versions, key=int), versions

    swaps_ok = re.search(r'coldstream_model_swaps_total\{outcome="ok"\} (\d+\.\d+)', metrics)
    assert swaps_ok and float(swaps_ok.group(1)) >= 1.0, metrics[-2000:]
    assert "coldstream_model_version 2.0" in metrics
    assert 'coldstream_trainer_cycles_total{outcome="promoted"} 1.0' in trainer_metrics
    cand = re.search(r'coldstream_trainer_gate_ndcg\{model="candidate"\} (\S+)', trainer_metrics)
    assert cand and np.isclose(float(cand.group(1)), rec.metrics["candidate_ndcg@10"], atol=1e-4)
    print(
        f"redistill e2e: gate {rec.metrics['candidate_ndcg@10']} vs {rec.metrics['current_ndcg@10']}, "
        f"{time.monotonic() - t_start:.0f} s"
    )
