"""Sessions at scale against Apache Kafka: the RocksDB store survives a worker restart, and an
idle session expires with its tombstone on the changelog (real worker processes)."""

from __future__ import annotations

import asyncio
import json
import os
import time

from coldstream.core.records import event_payload
from devtools.checkpoints import dev_signer, make_checkpoint, verify_env
from devtools.kafka_io import produce, read_until
from devtools.processes import WorkerProcess


def _worker(tmp_path, kafka_bootstrap, topic_prefix, name, **options):
    return WorkerProcess(
        log_path=tmp_path / f"worker-{name}.log",
        bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        app_id=topic_prefix + "app",
        model_store=tmp_path / "store",
        env={**os.environ, **verify_env(), **options.pop("env", {})},
        **options,
    )


def _answers(kafka_bootstrap, topic, n, predicate):
    got: list[dict] = []

    def on(batch, _t):
        got.extend(v for r in batch if r.value and predicate(v := json.loads(r.value)))

    asyncio.run(
        read_until(
            kafka_bootstrap,
            [topic],
            until=lambda: len(got) >= n,
            timeout_s=90,
            on_records=on,
            keep=False,
        )
    )
    return got


def test_rocksdb_sessions_survive_a_worker_restart(
    tmp_path, kafka_bootstrap, topic_prefix, make_topics
):
    names = make_topics(kafka_bootstrap, topic_prefix)
    make_checkpoint(tmp_path / "store", n_items=50, signer=dev_signer())
    data = tmp_path / "data"
    now = time.time()
    user = topic_prefix + "u"

    def send(i: int) -> None:
        value = event_payload(user, str(1 + i), event_id=f"{user}-{i}", ts=now + i)
        asyncio.run(produce(kafka_bootstrap, [(names["clicks"], user.encode(), value)]))

    opts = dict(session_store="rocksdb", data_dir=data)
    with _worker(tmp_path, kafka_bootstrap, topic_prefix, "a", **opts):
        for i in range(3):
            send(i)
        first = _answers(
            kafka_bootstrap, names["recommendations"], 3, lambda v: v["user_id"] == user
        )
    assert [v["cold_start"] for v in first] == [True, True, True]
    assert any(p.is_dir() for p in data.rglob("*sessions*"))  # the session files are on disk
    with _worker(tmp_path, kafka_bootstrap, topic_prefix, "b", **opts):
        send(3)
        fourth = _answers(
            kafka_bootstrap, names["recommendations"], 1, lambda v: v["event_id"] == f"{user}-3"
        )
    # the new worker continued the user's session: a 4th event is no longer a cold start,
    # and none of the 4 seen items is recommended
    assert fourth[0]["cold_start"] is False
    assert not {"1", "2", "3", "4"} & {i["item_id"] for i in fourth[0]["items"]}


def test_an_idle_session_expires_and_its_tombstone_reaches_the_changelog(
    tmp_path, kafka_bootstrap, topic_prefix, make_topics
):
    names = make_topics(kafka_bootstrap, topic_prefix)
    make_checkpoint(tmp_path / "store", n_items=50, signer=dev_signer())
    idle, busy = topic_prefix + "idle", topic_prefix + "busy"
    now = time.time() - 3600
    env = {"COLDSTREAM_SESSION_TTL_S": "600", "COLDSTREAM_SESSION_EXPIRY_INTERVAL_S": "0.5"}
    with _worker(tmp_path, kafka_bootstrap, topic_prefix, "a", env=env):
        records = [
            (names["clicks"], idle.encode(), event_payload(idle, "1", event_id="i1", ts=now)),
            # stream time moves 20 minutes on: the idle user's session is older than the TTL
            (
                names["clicks"],
                busy.encode(),
                event_payload(busy, "2", event_id="b1", ts=now + 1200),
            ),
        ]
        asyncio.run(produce(kafka_bootstrap, records))
        changelog = topic_prefix + "app-sessions-changelog"
        seen: list[tuple[bytes, bytes | None]] = []

        def on(batch, _t):
            seen.extend((r.key, r.value) for r in batch)

        asyncio.run(
            read_until(
                kafka_bootstrap,
                [changelog],
                on_records=on,
                keep=False,
                timeout_s=60,
                until=lambda: (json.dumps(idle).encode(), None) in seen,
            )
        )
    keys = [k for k, _ in seen]
    assert (json.dumps(idle).encode(), None) in seen  # the tombstone
    assert keys.index(json.dumps(idle).encode()) < len(keys) - 1  # after the session itself
    assert all(v is not None for k, v in seen if k == json.dumps(busy).encode())  # busy stays
