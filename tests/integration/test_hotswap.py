"""Hot swap under a steady event stream, against Apache Kafka and worker subprocesses, with
real Ed25519 keys (``coldstream keys generate``'s format).

* A forged update (signed by an unknown key), 200 KB of nested JSON on ``model-updates`` and
  on ``item-vectors``, a hand-written unsigned item vector, then a good update are published
  while ~150 events/s flow. No event is lost or answered twice, every recommendation carries
  version 1 or 2, once a partition has produced a version-2 output no version-1 output
  follows in it, the bad records are counted and the forged vector is never ranked.
* ``coldstream rollback --to 1``, exactly as docs/operations.md writes it, makes two
  running workers swap back from v2 to v1; a worker started afterwards serves v1 too.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from coldstream.core.checkpoint import manifest_sha256
from coldstream.core.model_updates import make_update
from coldstream.core.signing import Signer
from devtools.checkpoints import make_checkpoint
from devtools.kafka_io import new_event, produce, read_until
from devtools.processes import WorkerProcess
from devtools.waiting import wait_until

SIGNER = Signer.generate()
N_ITEMS = 200
RATE = 150.0
DURATION_S = 12.0


async def steady_stream(bootstrap, topics, *, rate, duration_s, n_users, actions):
    """Produce click/purchase events at ``rate``/s for ``duration_s``; at each
    ``(t, topic, value)`` of ``actions`` also send that record. Returns sent event ids."""
    sent: list[str] = []
    actions = sorted(actions, key=lambda a: a[0])

    def records():
        for i in range(int(rate * duration_s)):
            while actions and actions[0][0] * rate <= i:  # due at t: sent in event i's slot
                _, topic, value, *key = actions.pop(0)
                yield topic, (key or [None])[0], value
            user = f"u{i % n_users}"
            eid, value = new_event(user, str(1 + (i * 7) % N_ITEMS))
            sent.append(eid)
            yield topics["purchases"] if i % 5 == 4 else topics["clicks"], user.encode(), value

    await produce(
        bootstrap,
        records(),
        rate=rate,
        min_sleep_s=0.005,
        linger_ms=5,
        acks="all",
        request_timeout_ms=40_000,
    )
    return sent


def test_swap_under_steady_stream(
    kafka_bootstrap, topic_prefix, make_topics, tmp_path, monkeypatch
):
    topics = make_topics(kafka_bootstrap, topic_prefix)
    store = tmp_path / "store"
    make_checkpoint(store, n_items=N_ITEMS, seed=1, signer=SIGNER)  # CURRENT.json: v1, seq 1
    _, public = SIGNER.write(tmp_path / "keys")
    monkeypatch.setenv("COLDSTREAM_VERIFY_KEYS_FILE", str(public))  # inherited by the worker
    worker = WorkerProcess(
        log_path=tmp_path / "worker.log",
        bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        app_id=topic_prefix + "app",
        model_store=store,
        log_level="warning",
        threads=1,
    )
    with worker:
        v2 = make_checkpoint(store, n_items=N_ITEMS, seed=2, signer=SIGNER, point=False)
        good, forged = (
            make_update(
                version=2,
                seq=2,
                checkpoint_dir=v2,
                manifest_sha256=manifest_sha256(v2),
                metrics={"gate": "test"},
                signer=signer,
            ).to_json()
            for signer in (SIGNER, Signer.generate())
        )
        nested = b"[" * 200_000  # RecursionError on json.loads; the topic is re-read from 0
        hand_written = json.dumps(
            {"item_id": "evil", "model_version": "1", "vector": [3.0e38] * 32}
        ).encode()
        actions = [
            (2.0, topics["item-vectors"], nested, b"nested"),  # compacted: records need a key
            (2.5, topics["item-vectors"], hand_written, b"evil"),
            (2.8, topics["model-updates"], nested),
            (3.0, topics["model-updates"], forged),
            (5.0, topics["model-updates"], good),
        ]
        t_sent = time.time()
        sent = asyncio.run(
            steady_stream(
                kafka_bootstrap,
                topics,
                rate=RATE,
                duration_s=DURATION_S,
                n_users=40,
                actions=actions,
            )
        )
        out = asyncio.run(
            read_until(
                kafka_bootstrap,
                [topics["recommendations"]],
                count=len(sent),
                timeout_s=45,
                idle_s=2.0,
            )
        )
        metrics = worker.get_text("/metrics")
        status, ready = worker.get_json("/ready")
    log_tail = (tmp_path / "worker.log").read_text(errors="replace")[-2000:]

    values = [json.loads(r.value) for r in out]
    ids = [v["event_id"] for v in values]
    assert len(ids) == len(set(ids)) == len(sent), (len(ids), len(sent), log_tail)
    assert set(ids) == set(sent)  # no event lost, none answered twice
    versions = [v["model_version"] for v in values]
    assert set(versions) == {"1", "2"}, (set(versions), log_tail)
    by_part = defaultdict(list)
    for r, v in zip(out, values, strict=True):
        by_part[r.partition].append((r.offset, v["model_version"]))
    switched = 0
    for part, rows in by_part.items():
        seq = [ver for _, ver in sorted(rows)]
        if "2" in seq:
            first = seq.index("2")
            assert "1" not in seq[first:], f"partition {part}: version 1 after version 2"
            switched += 1
    assert switched == len(by_part)  # every partition moved on to the new model
    # the swap happened near t=5 s: a good share of outputs on each side
    share_new = versions.count("2") / len(versions)
    assert 0.2 < share_new < 0.8, share_new
    assert 'coldstream_model_swaps_total{outcome="ok"} 1.0' in metrics
    assert 'coldstream_model_swaps_total{outcome="refused"} 2.0' in metrics
    assert 'coldstream_model_swap_failures_total{reason="unknown_key"} 1.0' in metrics
    assert 'coldstream_model_swap_failures_total{reason="bad_record"} 1.0' in metrics
    vectors = 'coldstream_control_records_total{outcome="refused",reason="%s",topic="item-vectors"}'
    assert vectors % "oversize" + " 1.0" in metrics  # the 200 KB record: dropped unparsed
    assert vectors % "unsigned" + " 1.0" in metrics  # the hand-written vector
    assert "coldstream_model_version 2.0" in metrics and "coldstream_model_seq 2.0" in metrics
    assert status == 200 and ready["model_version"] == "2"
    assert not [v for v in values if "evil" in [i["item_id"] for i in v["items"]]]
    assert time.time() - t_sent < 80


def documented_rollback(version: int) -> list[str]:
    """The rollback command exactly as the runbook in docs/operations.md writes it."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    runbook = doc[doc.index("### Roll back to an earlier model") :]
    line = re.search(r"^(coldstream rollback --to )VERSION$", runbook, re.M)
    assert line, "the rollback runbook lost its command"
    return shlex.split(line.group(1) + str(version))


def test_documented_rollback_moves_every_worker_back(
    kafka_bootstrap, topic_prefix, make_topics, tmp_path, monkeypatch
):
    topics = make_topics(kafka_bootstrap, topic_prefix)
    store = tmp_path / "store"
    make_checkpoint(store, n_items=N_ITEMS, seed=1, signer=SIGNER)
    make_checkpoint(store, n_items=N_ITEMS, seed=2, signer=SIGNER)  # CURRENT.json: v2, seq 2
    private, public = SIGNER.write(tmp_path / "keys")
    monkeypatch.setenv("COLDSTREAM_VERIFY_KEYS_FILE", str(public))
    common = dict(
        bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        app_id=topic_prefix + "app",
        model_store=store,
        log_level="warning",
        threads=1,
    )
    a = WorkerProcess(log_path=tmp_path / "a" / "worker.log", **common)
    b = WorkerProcess(log_path=tmp_path / "b" / "worker.log", **common)
    with a, b:
        assert [w.get_json("/ready")[1]["model_version"] for w in (a, b)] == ["2", "2"]
        env = {
            **os.environ,
            "COLDSTREAM_TRAINER_SIGNING_KEY_FILE": str(private),
            "COLDSTREAM_BOOTSTRAP": kafka_bootstrap,
            "COLDSTREAM_TOPIC_PREFIX": topic_prefix,
            "COLDSTREAM_MODEL_STORE": str(store),
        }
        argv = documented_rollback(1)
        done = subprocess.run(
            [sys.executable, "-m", *argv], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert "CURRENT.json: v1 seq 3 (was v2 (seq 2))" in done.stdout
        wait_until(
            lambda: all(w.get_json("/ready")[1].get("model_version") == "1" for w in (a, b)),
            30,
            "both workers to swap back to v1",
        )
        eid, value = new_event("after-rollback", "5")
        asyncio.run(produce(kafka_bootstrap, [(topics["clicks"], b"after-rollback", value)]))
        out = asyncio.run(
            read_until(kafka_bootstrap, [topics["recommendations"]], count=1, timeout_s=30)
        )
        assert json.loads(out[0].value)["model_version"] == "1"
        assert all("coldstream_model_seq 3.0" in w.get_text("/metrics") for w in (a, b))
    # a worker started after the rollback serves what the pointer names
    with WorkerProcess(log_path=tmp_path / "c" / "worker.log", **common) as c:
        assert c.get_json("/ready")[1]["model_version"] == "1"
