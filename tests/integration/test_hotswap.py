"""Hot swap under a steady event stream, against Apache Kafka and a worker subprocess.

A refused update (wrong signature) and then a good one are published on ``model-updates``
while ~150 events/s flow. No event is lost or answered twice, every recommendation carries
version 1 or 2, and once a partition has produced a version-2 output no version-1 output
follows in it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict

from coldstream.core.checkpoint import manifest_sha256
from coldstream.core.model_updates import make_update
from devtools.checkpoints import make_checkpoint
from devtools.kafka_io import new_event, produce, read_until
from devtools.processes import WorkerProcess

KEY = "integration-hmac-key"
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
                _, topic, value = actions.pop(0)
                yield topic, None, value
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
    make_checkpoint(store, n_items=N_ITEMS, seed=1)
    monkeypatch.setenv("COLDSTREAM_MODEL_HMAC_KEY", KEY)  # inherited by the worker
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
        v2 = make_checkpoint(store, n_items=N_ITEMS, seed=2)
        good = make_update(
            version=2,
            checkpoint_dir=v2,
            manifest_sha256=manifest_sha256(v2),
            metrics={"gate": "test"},
            key=KEY,
        ).to_json()
        forged = make_update(
            version=2,
            checkpoint_dir=v2,
            manifest_sha256=manifest_sha256(v2),
            metrics={"gate": "test"},
            key="wrong-key",
        ).to_json()
        actions = [(3.0, topics["model-updates"], forged), (5.0, topics["model-updates"], good)]
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
    assert 'coldstream_model_swaps_total{outcome="refused"} 1.0' in metrics
    assert 'coldstream_model_swap_failures_total{reason="bad_signature"} 1.0' in metrics
    assert "coldstream_model_version 2.0" in metrics
    assert status == 200 and ready["model_version"] == "2"
    assert time.time() - t_sent < 80
