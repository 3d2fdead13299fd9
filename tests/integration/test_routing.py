"""``/recommend`` routing against Apache Kafka and real workers: the partition the worker
computes for a user is the one the producer's records land on; each worker publishes its
own address to the group; an owner that does not answer gives a local fallback in time."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from coldstream.core.records import event_payload
from coldstream.core.topics import load_topics
from devtools.checkpoints import dev_signer, make_checkpoint, verify_env
from devtools.kafka_io import produce, read_until
from devtools.processes import WorkerProcess
from stream_app.routing import partition_for


def test_the_routing_partition_is_where_the_producer_puts_a_users_records(
    kafka_bootstrap: str, make_topics, topic_prefix: str
) -> None:
    topics = make_topics(kafka_bootstrap, topic_prefix, names=["clicks"])
    n = load_topics()["clicks"].partitions
    users = [f"user-{i}" for i in range(60)] + ["ü-ユーザー", "a", "x" * 128]
    records = [
        (topics["clicks"], u.encode(), event_payload(u, "1", event_id=f"e{i}", ts=1.0))
        for i, u in enumerate(users)
    ]
    done = asyncio.run(produce(kafka_bootstrap, records, keep_metadata=True))
    landed = {u: md.partition for u, md in zip(users, done.metadata, strict=True)}
    assert landed == {u: partition_for(u.encode(), n) for u in users}
    assert len(set(landed.values())) == n  # every partition is exercised


def _worker(tmp_path: Path, name: str, bootstrap: str, prefix: str, store: Path) -> WorkerProcess:
    return WorkerProcess(
        env={**os.environ, **verify_env(), "COLDSTREAM_ROUTE_TIMEOUT_S": "0.5"},
        log_path=tmp_path / f"worker-{name}.log",
        bootstrap=bootstrap,
        topic_prefix=prefix,
        app_id=prefix + "app",
        model_store=store,
        threads=1,
        ready_timeout_s=120,
    )


def test_an_unreachable_owner_gives_a_local_fallback_in_time(
    kafka_bootstrap: str, make_topics, topic_prefix: str, tmp_path: Path
) -> None:
    topics = make_topics(kafka_bootstrap, topic_prefix)
    store = tmp_path / "store"
    make_checkpoint(store, n_items=50, signer=dev_signer())
    a = _worker(tmp_path, "a", kafka_bootstrap, topic_prefix, store)
    b = _worker(tmp_path, "b", kafka_bootstrap, topic_prefix, store)
    with a, b:
        deadline = time.monotonic() + 60
        while True:  # both in the group, the partitions split between them
            ra, rb = a.get_json("/ready")[1], b.get_json("/ready")[1]
            if ra["owned_partitions"] and rb["owned_partitions"]:
                break
            assert time.monotonic() < deadline, (ra, rb)
            time.sleep(0.5)
        assert ra["advertised_url"] == f"http://127.0.0.1:{a.port}"  # not Faust's default
        assert rb["advertised_url"] == f"http://127.0.0.1:{b.port}"
        assert not set(ra["owned_partitions"]) & set(rb["owned_partitions"])
        n = load_topics()["clicks"].partitions
        on_b = next(
            u
            for u in (f"r{i}" for i in range(1000))
            if partition_for(u.encode(), n) in rb["owned_partitions"]
        )
        asyncio.run(
            produce(
                kafka_bootstrap,
                [
                    (
                        topics["clicks"],
                        on_b.encode(),
                        event_payload(on_b, "3", event_id="r-1", ts=1.0),
                    )
                ],
            )
        )
        asyncio.run(read_until(kafka_bootstrap, [topics["recommendations"]], count=1, timeout_s=60))
        status, via_a = a.get_json(f"/recommend/{on_b}?k=4")
        assert status == 200 and via_a["fallback"] is None, via_a  # forwarded to b
        assert b.get_json(f"/recommend/{on_b}?k=4")[1] == via_a
        assert b.proc is not None
        os.kill(b.proc.pid, signal.SIGSTOP)  # b holds its partitions but answers nothing
        try:
            status, body = a.get_json(f"/recommend/{on_b}?k=4")
        finally:
            os.kill(b.proc.pid, signal.SIGCONT)
        assert status == 200 and body["fallback"] == "owner_unreachable", body
        assert len(body["items"]) == 4 and set(body) == set(via_a)
        metrics = a.get_text("/metrics")
        assert 'coldstream_recommend_requests_total{outcome="forwarded"} 1.0' in metrics
        assert 'coldstream_recommend_requests_total{outcome="owner_unreachable"} 1.0' in metrics
