"""SASL end to end: a serving worker talks to Apache Kafka over a SASL_PLAINTEXT listener only.

A private Apache Kafka 3.9 (KRaft, ``kafka_broker_factory``) gets a third listener ``SASL``
(``SASL_PLAINTEXT``, mechanism ``PLAIN``, users ``admin`` and ``alice`` in the listener's JAAS
config); the controller and inter-broker listeners stay ``PLAINTEXT``, and so does the client
``PLAINTEXT`` listener used for the readiness probe and topic set-up. The worker subprocess
gets ``COLDSTREAM_SECURITY_PROTOCOL=SASL_PLAINTEXT``, ``COLDSTREAM_SASL_MECHANISM=PLAIN``, user
``alice`` and the SASL port as its only bootstrap, with hot swap on: its Faust consumer,
producer and admin client (``faust.SASLCredentials``) and the model-updates/item-vectors
followers of ``stream_app/control.py`` (``Settings.kafka_client_kwargs()``) all authenticate.

What it proves: an event produced over SASL yields its recommendation, read back with a SASL
consumer; a client with a wrong password, and a client that skips SASL, cannot bootstrap.
SCRAM is covered by the unit tests of the client arguments only (PLAIN is what the broker
here offers).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

import pytest

from devtools.brokers.kafka import sasl_plain_listeners
from devtools.checkpoints import dev_signer, make_checkpoint, verify_env
from devtools.kafka_io import bootstrap_fails, new_event, produce, read_until
from devtools.processes import WorkerProcess
from stream_app.settings import Settings

USERS = {"admin": "admin-secret", "alice": "alice-secret"}


@pytest.fixture
def sasl_kafka(kafka_broker_factory):
    """A private Apache Kafka with PLAINTEXT and SASL_PLAINTEXT listeners: ``(broker, sasl_bootstrap)``."""
    ports, props = sasl_plain_listeners(USERS)
    broker = kafka_broker_factory(
        port=ports["port"], controller_port=ports["controller_port"], properties=props
    )
    return broker, f"127.0.0.1:{ports['sasl_port']}"


def _sasl_kwargs(username: str, password: str) -> dict:
    return Settings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username=username,
        sasl_password=password,
    ).kafka_client_kwargs()


def test_worker_over_sasl(sasl_kafka, make_topics, topic_prefix, tmp_path, monkeypatch, caplog):
    broker, sasl_bootstrap = sasl_kafka
    t0 = time.monotonic()
    props = broker.server_properties()
    assert props["listener.security.protocol.map"].split(",") == [
        "CONTROLLER:PLAINTEXT",
        "PLAINTEXT:PLAINTEXT",
        "SASL:SASL_PLAINTEXT",
    ]
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["controller.listener.names"] == "CONTROLLER"

    topics = make_topics(
        broker.bootstrap,
        topic_prefix,  # topic set-up over the PLAINTEXT port
        names=[
            "clicks",
            "purchases",
            "recommendations",
            "events-dlq",
            "model-updates",
            "item-vectors",
            "forget-requests",
        ],
    )
    store = tmp_path / "store"
    make_checkpoint(store, n_items=50, signer=dev_signer())
    monkeypatch.setenv("COLDSTREAM_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("COLDSTREAM_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("COLDSTREAM_SASL_USERNAME", "alice")
    monkeypatch.setenv("COLDSTREAM_SASL_PASSWORD", USERS["alice"])
    monkeypatch.setenv("COLDSTREAM_HOT_SWAP", "true")
    worker = WorkerProcess(
        env={**os.environ, **verify_env()},  # trusts dev_signer()
        log_path=tmp_path / "worker.log",
        bootstrap=sasl_bootstrap,
        topic_prefix=topic_prefix,
        app_id=topic_prefix + "app",
        model_store=store,
        threads=1,
        ready_timeout_s=60,
    )
    alice = _sasl_kwargs("alice", USERS["alice"])
    with worker:
        ready_s = worker.ready_s
        eid, value = new_event("sasl-user", "7")
        asyncio.run(produce(sasl_bootstrap, [(topics["clicks"], b"sasl-user", value)], **alice))
        out = asyncio.run(
            read_until(sasl_bootstrap, [topics["recommendations"]], count=1, timeout_s=30, **alice)
        )
        log_text = worker.log_path.read_text()
        assert len(out) == 1, f"no recommendation over SASL; worker log:\n{log_text[-3000:]}"
        rec = json.loads(out[0].value)
        assert (
            rec["event_id"] == eid and rec["user_id"] == "sasl-user" and out[0].key == b"sasl-user"
        )
        assert rec["items"] and "7" not in {i["item_id"] for i in rec["items"]}
        metrics = worker.get_text("/metrics")
        assert 'coldstream_events_total{outcome="recommended",topic="clicks"} 1.0' in metrics
        # the control followers (own aiokafka consumers) authenticated too: no failed task
        assert not any(
            s in log_text
            for s in ("does not exist", "Authentication failed", "Unable to bootstrap")
        ), log_text[-3000:]
        assert USERS["alice"] not in log_text  # the password is never logged

    # a wrong password is refused by the broker; a client that skips SASL cannot bootstrap
    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        err = asyncio.run(
            bootstrap_fails(sasl_bootstrap, **_sasl_kwargs("alice", "wrong-password"))
        )
    assert "bootstrap" in err.lower(), err
    assert (
        "SaslAuthenticationFailed" in caplog.text and "Invalid username or password" in caplog.text
    ), (err, caplog.text)
    err = asyncio.run(bootstrap_fails(sasl_bootstrap, security_protocol="PLAINTEXT"))
    assert "bootstrap" in err.lower() or "timeout" in err.lower(), err
    # ... while alice still gets in (the refusals were about credentials, not the broker)
    asyncio.run(produce(sasl_bootstrap, [(topics["clicks"], b"sasl-user", value)], **alice))
    print(f"SASL worker ready in {ready_s:.1f} s; test body {time.monotonic() - t0:.1f} s")
