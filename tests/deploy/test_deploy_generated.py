"""Derived files stay in sync with their sources: Strimzi resources and the compose file
from kafka/topics.yaml (through coldstream.core.topics) and kafka/pom.xml, the PrometheusRule
from the rules file, the dashboard from deploy/dashboard.py."""

from __future__ import annotations

import subprocess
import sys

import yaml

from deploy import generate
from tests.deploy._deploy_helpers import REPO


def test_committed_files_match_the_generator() -> None:
    stale = generate.stale_files()
    assert stale == [], (
        f"out of date: {[str(p.relative_to(REPO)) for p in stale]}; run: python -m deploy.generate"
    )


def test_generate_check_cli_reports_stale_files(tmp_path, monkeypatch) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "deploy.generate", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    # a changed source makes a file stale
    rendered = generate.render_all()
    target = REPO / "kafka/strimzi/topics.yaml"
    monkeypatch.setattr(
        generate, "render_all", lambda: {**rendered, target: rendered[target] + "# changed\n"}
    )
    assert generate.stale_files() == [target]


def _topics():
    from coldstream.core.topics import load_topics

    return load_topics(REPO / "kafka" / "topics.yaml")


def test_strimzi_topics_match_the_topic_definitions() -> None:
    docs = list(yaml.safe_load_all((REPO / "kafka/strimzi/topics.yaml").read_text()))
    topics = _topics()
    assert [d["spec"]["topicName"] for d in docs] == list(topics)
    for d in docs:
        spec = topics[d["spec"]["topicName"]]
        assert d["kind"] == "KafkaTopic"
        assert d["metadata"]["labels"]["strimzi.io/cluster"] == generate.CLUSTER
        assert d["spec"]["partitions"] == spec.partitions
        assert d["spec"]["replicas"] == spec.replication_factor
        assert d["spec"]["config"] == dict(spec.configs)


def test_strimzi_cluster_is_kraft_with_node_pools() -> None:
    docs = {
        d["kind"]: d for d in yaml.safe_load_all((REPO / "kafka/strimzi/kafka.yaml").read_text())
    }
    kafka, pool = docs["Kafka"], docs["KafkaNodePool"]
    assert kafka["metadata"]["annotations"] == {
        "strimzi.io/node-pools": "enabled",
        "strimzi.io/kraft": "enabled",
    }
    assert "zookeeper" not in kafka["spec"]
    assert kafka["spec"]["kafka"]["version"] == generate.kafka_version()
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    # enough brokers for the topics' replication and min.insync.replicas
    for spec in _topics().values():
        assert pool["spec"]["replicas"] >= spec.replication_factor
        assert int(spec.configs.get("min.insync.replicas", "1")) < spec.replication_factor
    # the manifests' bootstrap address is this cluster's TLS+SCRAM listener
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    settings = (REPO / "deploy/k8s/base/settings.env").read_text()
    assert f"COLDSTREAM_BOOTSTRAP={generate.CLUSTER}-kafka-bootstrap:{listener['port']}" in settings
    assert listener["tls"] is True and listener["authentication"]["type"] == "scram-sha-512"
    assert "COLDSTREAM_SASL_MECHANISM=SCRAM-SHA-512" in settings


def test_compose_runs_the_tested_kafka_version_in_kraft() -> None:
    doc = yaml.safe_load((REPO / "kafka/docker-compose.yml").read_text())
    kafka = doc["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{generate.kafka_version()}"
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "ZOOKEEPER" not in " ".join(env)
    assert all(p.startswith("127.0.0.1:") for p in kafka["ports"])
    script = doc["services"]["topics"]["command"][0]
    for name, spec in _topics().items():
        assert f"--topic {name} --partitions {spec.partitions} " in script
    assert "min.insync.replicas=2" not in script
