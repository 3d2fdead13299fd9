"""The local brokers (devtools/brokers/) and topic creation against them."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from coldstream.core.records import event_payload
from coldstream.core.topics import TopicsError, create_topics, load_topics
from devtools import kafka_io
from devtools.brokers import BrokerError, KafkaBroker, TansuBroker, free_port

EVENTS = [
    (f"u{i % 5}", {"event_id": f"e{i}", "user_id": f"u{i % 5}", "item_id": str(i), "ts": 1.0 + i})
    for i in range(30)
]


async def produce(bootstrap: str, topic: str, events: list[tuple[str, dict]]) -> None:
    await kafka_io.produce(
        bootstrap,
        [(topic, key.encode(), event_payload(**value)) for key, value in events],
        acks="all",
        linger_ms=5,
        request_timeout_ms=40_000,
    )


async def consume(
    bootstrap: str, topic: str, n: int, *, group_id: str | None = None, timeout_s: float = 30.0
) -> list[tuple[str, dict, int]]:
    """Read ``n`` records from the beginning: ``(key, value, partition)``."""
    records = await kafka_io.read_until(
        bootstrap,
        [topic],
        count=n,
        timeout_s=timeout_s,
        group_id=group_id,
        fetch_max_wait_ms=100,  # Tansu answers fetches only near this wait
        poll_ms=500,
        session_timeout_ms=6000,  # Tansu: a join takes half of it
        heartbeat_interval_ms=1000,
    )
    return [(r.key.decode(), json.loads(r.value), r.partition) for r in records]


def check_round_trip(received: list[tuple[str, dict, int]]) -> None:
    assert sorted(v["event_id"] for _, v, _ in received) == sorted(v["event_id"] for _, v in EVENTS)
    for key, value, _ in received:
        assert key == value["user_id"]
    partitions_by_key: dict[str, set[int]] = {}
    for key, _, partition in received:
        partitions_by_key.setdefault(key, set()).add(partition)
    assert all(len(p) == 1 for p in partitions_by_key.values()), partitions_by_key  # keyed
    # per-key order is kept
    for key in partitions_by_key:
        ids = [int(v["event_id"][1:]) for k, v, _ in received if k == key]
        assert ids == sorted(ids), key


async def describe(bootstrap: str, names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
    finally:
        await admin.close()


# --------------------------------------------------------------------------- Apache Kafka


async def test_kafka_round_trip_with_keys(
    kafka_bootstrap: str, topic_prefix: str, make_topics: Callable[..., dict[str, str]]
) -> None:
    names = make_topics(kafka_bootstrap, topic_prefix, names=["clicks"])
    await produce(kafka_bootstrap, names["clicks"], EVENTS)
    received = await consume(
        kafka_bootstrap, names["clicks"], len(EVENTS), group_id=f"{topic_prefix}group"
    )
    check_round_trip(received)
    assert len({p for _, _, p in received}) > 1  # five keys spread over six partitions


async def test_create_topics_is_idempotent_and_matches_yaml(
    kafka_bootstrap: str, topic_prefix: str, delete_topics_after: Callable[..., None]
) -> None:
    specs = load_topics()
    delete_topics_after(kafka_bootstrap, [topic_prefix + n for n in specs])
    created = await create_topics(kafka_bootstrap, replication_factor=1, prefix=topic_prefix)
    assert sorted(created) == sorted(topic_prefix + n for n in specs)
    assert await create_topics(kafka_bootstrap, replication_factor=1, prefix=topic_prefix) == []

    counts = await describe(kafka_bootstrap, [topic_prefix + n for n in specs])
    assert counts == {topic_prefix + n: s.partitions for n, s in specs.items()}

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs(
            [
                ConfigResource(ConfigResourceType.TOPIC, topic_prefix + n)
                for n in ("items", "clicks")
            ]
        )
    finally:
        await admin.close()
    configs = {r[3]: {c[0]: c[1] for c in r[4]} for r in response.resources}
    assert configs[topic_prefix + "items"]["cleanup.policy"] == "compact"
    assert configs[topic_prefix + "clicks"]["cleanup.policy"] == "delete"
    assert (
        configs[topic_prefix + "clicks"]["retention.ms"] == specs["clicks"].configs["retention.ms"]
    )
    assert configs[topic_prefix + "clicks"]["min.insync.replicas"] == "1"  # capped to rf 1


async def test_create_topics_refuses_a_partition_mismatch(
    kafka_bootstrap: str, topic_prefix: str, delete_topics_after: Callable[..., None]
) -> None:
    clicks = load_topics()["clicks"]
    delete_topics_after(kafka_bootstrap, [topic_prefix + "clicks"])
    await create_topics(
        kafka_bootstrap, [dataclasses.replace(clicks, partitions=2)], replication_factor=1,
        prefix=topic_prefix,
    )  # fmt: skip
    with pytest.raises(TopicsError, match="has 2 partitions, topics.yaml says 6"):
        await create_topics(kafka_bootstrap, [clicks], replication_factor=1, prefix=topic_prefix)


def test_kcat_lists_the_topics(
    kafka_bootstrap: str, topic_prefix: str, make_topics: Callable[..., dict[str, str]]
) -> None:
    kcat = shutil.which("kcat")
    assert kcat, "kcat not installed: run .ci/install-kafka.sh"
    names = make_topics(kafka_bootstrap, topic_prefix)
    res = subprocess.run(
        [kcat, "-b", kafka_bootstrap, "-L", "-J"], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stderr
    listed = {t["topic"]: len(t["partitions"]) for t in json.loads(res.stdout)["topics"]}
    specs = load_topics()
    for logical, physical in names.items():
        assert listed.get(physical) == specs[logical].partitions, physical


async def test_persistent_log_dir_survives_stop_and_kill(
    tmp_path: Path, kafka_broker_factory: Callable[..., KafkaBroker]
) -> None:
    log_dir = tmp_path / "kafka"
    first = kafka_broker_factory(log_dir)
    assert first.formatted and first.format_s is not None
    await create_topics(first.bootstrap, [load_topics()["clicks"]], replication_factor=1)
    await produce(first.bootstrap, "clicks", EVENTS[:1])
    assert first.stop() in (0, 143)  # clean exit on SIGTERM, not the SIGKILL fallback (-9)
    assert not first.running

    second = kafka_broker_factory(log_dir)  # a new object on the same dir: no format, same port
    assert second.format_s is None
    assert second.bootstrap == first.bootstrap
    assert [v for _, v, _ in await consume(second.bootstrap, "clicks", 1)] == [EVENTS[0][1]]

    await produce(second.bootstrap, "clicks", EVENTS[1:2])
    pid = second.pid
    assert second.kill() == -9
    assert pid is not None and not _alive(pid)
    second.start()  # recovers after an unclean shutdown
    received = await consume(second.bootstrap, "clicks", 2)
    assert sorted(v["event_id"] for _, v, _ in received) == ["e0", "e1"]


def test_missing_jars_error_says_how_to_fetch(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path / "log", jars=tmp_path / "no-jars")
    with pytest.raises(BrokerError, match=r"no-jars.*install-kafka\.sh"):
        broker.start()
    assert not broker.running


# --------------------------------------------------------------------------- Tansu


@pytest.mark.tansu
async def test_tansu_round_trip_with_keys(
    tansu_bootstrap: str, topic_prefix: str, make_topics: Callable[..., dict[str, str]]
) -> None:
    names = make_topics(tansu_bootstrap, topic_prefix, names=["clicks"])
    assert (await describe(tansu_bootstrap, [names["clicks"]]))[names["clicks"]] == 6
    await produce(tansu_bootstrap, names["clicks"], EVENTS)
    check_round_trip(await consume(tansu_bootstrap, names["clicks"], len(EVENTS)))


@pytest.mark.tansu
def test_tansu_stops_its_process() -> None:
    with TansuBroker() as broker:
        pid = broker.pid
        assert broker.running and broker.startup_s is not None and broker.startup_s < 10
        log_path = broker.log_path
    assert pid is not None and not _alive(pid)
    assert log_path is not None and not log_path.exists()  # its temp log is removed


@pytest.mark.tansu
def test_tansu_start_failure_raises_with_the_log() -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        broker = TansuBroker(port=port, startup_timeout_s=10)
        with pytest.raises(BrokerError, match="exited with code") as info:
            broker.start()
        assert "tansu" in str(info.value)  # the tail of its log
        assert not broker.running
        assert broker.log_path is None  # its temp log is gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
