"""The per-role Kafka principals of ``kafka/strimzi/users.yaml`` on a broker that enforces
them: a private Apache Kafka with the standard authorizer (deny unless allowed) and a SASL
listener, the ACLs created from the generated ``KafkaUser`` resources as they are.

What it proves: a real worker, authenticated as ``coldstream-worker``, runs on exactly its
ACLs (joins its group, creates its changelog, follows model-updates and item-vectors,
answers events, dead-letters bad ones); the trainer's clients run on the trainer's; KEDA's
principal reads the worker group's offsets; and each role is refused what it must not do.
SASL ``PLAIN`` stands in for SCRAM (the principal, ``User:<name>``, is the same)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError
from aiokafka.protocol.admin import CreateAclsRequest

from coldstream.core.records import event_payload
from coldstream.core.topics import create_topics, load_topics
from deploy import generate
from devtools.brokers.kafka import sasl_plain_listeners
from devtools.checkpoints import dev_signer, make_checkpoint, verify_env
from devtools.kafka_io import produce, read_until
from devtools.processes import WorkerProcess
from stream_app.settings import Settings

ROLES = [generate.kafka_user(r) for r in generate.ROLES]
PASSWORDS = {user: f"{user}-secret" for user in ROLES}
RESOURCE = {"topic": 2, "group": 3}
PATTERN = {"literal": 3, "prefix": 4}
OPERATION = {"Read": 3, "Write": 4, "Create": 5, "Describe": 8, "DescribeConfigs": 10}
ALLOW = 3


@pytest.fixture
def secured_kafka(kafka_broker_factory: Any) -> tuple[Any, str]:
    """A private Kafka: PLAINTEXT (set-up, a super user) and SASL_PLAINTEXT (the roles)."""
    ports, props = sasl_plain_listeners(PASSWORDS, admin_user=True)
    props |= {
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:ANONYMOUS;User:admin",  # the PLAINTEXT set-up port, the controller
        "allow.everyone.if.no.acl.found": "false",
    }
    broker = kafka_broker_factory(
        port=ports["port"], controller_port=ports["controller_port"], properties=props
    )
    return broker, f"127.0.0.1:{ports['sasl_port']}"


async def _create_acls(bootstrap: str) -> int:
    """Every ACL of the generated KafkaUsers, as they are, through the CreateAcls API."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    n = 0
    try:
        for user in generate.strimzi_users(load_topics()):
            principal = f"User:{user['metadata']['name']}"
            for acl in user["spec"]["authorization"]["acls"]:
                res = acl["resource"]
                for op in acl["operations"]:
                    req = CreateAclsRequest(
                        RESOURCE[res["type"]],
                        res["name"],
                        PATTERN[res["patternType"]],
                        principal,
                        acl["host"],
                        OPERATION[op],
                        ALLOW,
                    )
                    resp = await client.send(client.get_random_node(), req)
                    assert [r[0] for r in resp.creation_responses] == [0], resp
                    n += 1
    finally:
        await client.close()
    await asyncio.sleep(1.0)  # ACLs propagate through the metadata log
    return n


def _as(user: str) -> dict[str, Any]:
    return Settings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username=user,
        sasl_password=PASSWORDS[user],
    ).kafka_client_kwargs()


async def _write(bootstrap: str, user: str, topic: str, key: bytes = b"k") -> None:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **_as(user))
    await p.start()
    try:
        await p.send_and_wait(topic, b"{}", key=key)
    finally:
        await p.stop()


async def _read_one(bootstrap: str, user: str, topic: str, group: str | None = None) -> list[Any]:
    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **_as(user),
    )
    await c.start()
    try:
        if group is None:
            tps = [TopicPartition(topic, p) for p in range(load_topics()[topic].partitions)]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
        else:
            c.subscribe([topic])
        out: list[Any] = []
        for _ in range(20):
            for records in (await c.getmany(timeout_ms=500)).values():
                out += records
            if out:
                break
        return out
    finally:
        await c.stop()


def _refused(coro: Any) -> str:
    """Run a write or a read that must not be allowed: an authorization error, or (a consumer
    of a topic it may not describe) nothing read from a topic that has records."""
    try:
        got = asyncio.run(asyncio.wait_for(coro, 60))
    except (TopicAuthorizationFailedError, GroupAuthorizationFailedError) as e:
        return type(e).__name__
    assert got == [], f"allowed: {got!r}"
    return "nothing read"


def test_each_role_runs_on_its_acls_and_nothing_more(
    secured_kafka: tuple[Any, str], tmp_path: Path
) -> None:
    broker, sasl = secured_kafka
    specs = load_topics()
    asyncio.run(create_topics(broker.bootstrap, specs, replication_factor=1))  # production names
    assert asyncio.run(_create_acls(broker.bootstrap)) >= 20
    worker_user, trainer_user = generate.kafka_user("worker"), generate.kafka_user("trainer")
    producer_user = generate.kafka_user("producer")

    store = tmp_path / "store"
    make_checkpoint(store, n_items=50, signer=dev_signer())
    worker = WorkerProcess(
        env={
            **os.environ,
            **verify_env(),
            "COLDSTREAM_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "COLDSTREAM_SASL_MECHANISM": "PLAIN",
            "COLDSTREAM_SASL_USERNAME": worker_user,
            "COLDSTREAM_SASL_PASSWORD": PASSWORDS[worker_user],
            "COLDSTREAM_HOT_SWAP": "true",
        },
        log_path=tmp_path / "worker.log",
        bootstrap=sasl,
        app_id=generate.APP_ID,  # the group and the prefix the ACLs name
        model_store=store,
        threads=1,
        ready_timeout_s=120,
    )
    with worker:
        good = event_payload("acl-user", "7", event_id="a-1", ts=1.0)
        bad = json.dumps({"event_id": "a-2", "user_id": "acl-user"}).encode()
        asyncio.run(
            produce(
                sasl,
                [("clicks", b"acl-user", good), ("clicks", b"acl-user", bad)],
                **_as(producer_user),
            )
        )
        recs = asyncio.run(read_until(broker.bootstrap, ["recommendations"], count=1, timeout_s=60))
        dlq = asyncio.run(read_until(broker.bootstrap, ["events-dlq"], count=1, timeout_s=60))
        log_text = worker.log_path.read_text(errors="replace")
        assert [json.loads(r.value)["event_id"] for r in recs] == ["a-1"], log_text[-3000:]
        assert [json.loads(r.value)["event_id"] for r in dlq] == ["a-2"]
        assert "Authorization" not in log_text and "authorization" not in log_text, log_text[-3000:]

        # the worker created its own changelog under its prefix
        async def topics() -> set[str]:
            admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
            await admin.start()
            try:
                return set(await admin.list_topics())
            finally:
                await admin.close()

        assert f"{generate.APP_ID}-sessions-changelog" in asyncio.run(topics())

        # KEDA's principal reads the worker group's committed offsets...
        async def group_offsets() -> dict[Any, Any]:
            a = AIOKafkaAdminClient(
                bootstrap_servers=sasl, **_as(generate.kafka_user("autoscaler"))
            )
            await a.start()
            try:
                return dict(await a.list_consumer_group_offsets(generate.APP_ID))
            finally:
                await a.close()

        offsets = asyncio.run(group_offsets())
        assert any(tp.topic == "clicks" for tp in offsets), offsets

    # the trainer's clients: its group on its topics, its two outputs
    assert asyncio.run(_read_one(sasl, trainer_user, "clicks", generate.TRAINER_GROUP))
    asyncio.run(_write(sasl, trainer_user, "item-vectors"))
    asyncio.run(_write(sasl, trainer_user, "model-updates"))
    asyncio.run(_write(sasl, generate.kafka_user("privacy"), "forget-requests", b"acl-user"))

    # ... and what each must not do
    refusals = {
        "worker writes clicks": _refused(_write(sasl, worker_user, "clicks")),
        "worker writes model-updates": _refused(_write(sasl, worker_user, "model-updates")),
        "trainer writes recommendations": _refused(_write(sasl, trainer_user, "recommendations")),
        "trainer uses the worker's group": _refused(
            _read_one(sasl, trainer_user, "clicks", generate.APP_ID)
        ),
        "producer reads recommendations": _refused(
            _read_one(sasl, producer_user, "recommendations")
        ),
        "producer writes forget-requests": _refused(_write(sasl, producer_user, "forget-requests")),
        "privacy writes clicks": _refused(_write(sasl, generate.kafka_user("privacy"), "clicks")),
        "autoscaler reads clicks": _refused(
            _read_one(sasl, generate.kafka_user("autoscaler"), "clicks")
        ),
        "worker reads events-dlq": _refused(_read_one(sasl, worker_user, "events-dlq")),
    }
    topic_denied = {"TopicAuthorizationFailedError"}
    read_denied = topic_denied | {"nothing read"}
    for what, how in refusals.items():
        if "writes" in what:
            assert how in topic_denied, (what, how)
        elif "group" in what:
            assert how == "GroupAuthorizationFailedError", (what, how)
        else:
            assert how in read_denied, (what, how)
