"""Kafka authorization in the Strimzi resources: one principal per role, least privilege.

The generated ``kafka/strimzi/users.yaml`` is checked against what each role does (written
here, independently of ``deploy.generate.ROLES``), the cluster denies what no ACL allows,
the deployments authenticate as their own role, and the operations guide's table says the
same. (``tests/integration/test_kafka_acls.py`` runs a worker on these ACLs on a broker that
enforces them.)"""

from __future__ import annotations

import re
from typing import Any

import yaml

from deploy import generate
from tests.deploy._deploy_helpers import REPO, find

USERS = REPO / "kafka" / "strimzi" / "users.yaml"

# role -> {(resource type, name, pattern): operations}: what each process does, no more
EXPECTED: dict[str, dict[tuple[str, str, str], set[str]]] = {
    "worker": {
        **{
            ("topic", t, "literal"): {"Describe", "Read"}
            for t in ("clicks", "purchases", "forget-requests", "model-updates", "item-vectors")
        },
        **{
            ("topic", t, "literal"): {"Describe", "Write"}
            for t in ("recommendations", "events-dlq")
        },
        # Faust's own topics: <app_id>-sessions-changelog, <app_id>-__assignor-__leader
        ("topic", "coldstream-", "prefix"): {
            "Create",
            "Describe",
            "DescribeConfigs",
            "Read",
            "Write",
        },
        ("group", "coldstream", "literal"): {"Read"},
    },
    "trainer": {
        **{
            ("topic", t, "literal"): {"Describe", "Read"}
            for t in ("clicks", "purchases", "items", "forget-requests", "recommendations")
        },
        **{
            ("topic", t, "literal"): {"Describe", "Write"}
            for t in ("model-updates", "item-vectors")
        },
        ("group", "coldstream-trainer", "literal"): {"Read"},
    },
    "autoscaler": {
        ("topic", "clicks", "literal"): {"Describe"},
        ("topic", "purchases", "literal"): {"Describe"},
        ("group", "coldstream", "literal"): {"Describe"},
    },
    "producer": {
        ("topic", t, "literal"): {"Describe", "Write"} for t in ("clicks", "purchases", "items")
    },
    "privacy": {("topic", "forget-requests", "literal"): {"Describe", "Write"}},
}


def _users() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(USERS.read_text()) if d]
    assert all(d["kind"] == "KafkaUser" for d in docs)
    return {d["metadata"]["name"]: d for d in docs}


def _grants(user: dict[str, Any]) -> dict[tuple[str, str, str], set[str]]:
    out: dict[tuple[str, str, str], set[str]] = {}
    for acl in user["spec"]["authorization"]["acls"]:
        r = acl["resource"]
        key = (r["type"], r["name"], r["patternType"])
        assert key not in out, f"{key} granted twice"
        out[key] = set(acl["operations"])
        assert acl["host"] == "*" and acl.get("type", "allow") == "allow"
    return out


def test_one_principal_per_role_with_exactly_its_acls() -> None:
    users = _users()
    assert set(users) == {f"coldstream-{role}" for role in EXPECTED}
    for role, want in EXPECTED.items():
        user = users[f"coldstream-{role}"]
        assert user["metadata"]["labels"] == {"strimzi.io/cluster": generate.CLUSTER}
        assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
        assert user["spec"]["authorization"]["type"] == "simple"
        assert _grants(user) == want, role


def test_no_role_holds_a_wildcard_the_cluster_or_all() -> None:
    for name, user in _users().items():
        for key, ops in _grants(user).items():
            kind, resource, _ = key
            assert kind in {"topic", "group"}, (name, key)  # no cluster, no transactionalId
            assert resource not in {"*", ""}, (name, key)
            assert "All" not in ops and not ops & {"Delete", "Alter", "AlterConfigs"}, (name, key)


def test_every_topic_has_one_writer_role() -> None:
    from coldstream.core.topics import load_topics

    writers: dict[str, list[str]] = {}
    for name, user in _users().items():
        for (kind, resource, pattern), ops in _grants(user).items():
            if kind == "topic" and pattern == "literal" and "Write" in ops:
                writers.setdefault(resource, []).append(name)
    assert set(writers) == set(load_topics())  # every topic is written by someone...
    assert all(len(w) == 1 for w in writers.values()), writers  # ...and by one role only


def test_the_cluster_denies_what_no_acl_allows() -> None:
    kafka = next(
        d
        for d in yaml.safe_load_all((REPO / "kafka/strimzi/kafka.yaml").read_text())
        if d and d["kind"] == "Kafka"
    )
    assert kafka["spec"]["kafka"]["authorization"] == {"type": "simple"}
    assert "allow.everyone.if.no.acl.found" not in kafka["spec"]["kafka"]["config"]
    assert "superUsers" not in kafka["spec"]["kafka"]["authorization"]
    assert "users.yaml" in (REPO / "kafka/strimzi/kustomization.yaml").read_text()


def test_the_groups_are_the_ones_the_processes_use() -> None:
    from trainer.settings import TrainerSettings

    settings = (REPO / "deploy/k8s/base/settings.env").read_text()
    assert f"COLDSTREAM_APP_ID={generate.APP_ID}\n" in settings
    assert "COLDSTREAM_TRAINER_GROUP_ID" not in settings  # the default is in force
    assert TrainerSettings.model_fields["group_id"].default == generate.TRAINER_GROUP


def _env(dep: dict[str, Any]) -> dict[str, Any]:
    [c] = dep["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in c["env"]}


def test_each_deployment_authenticates_as_its_role(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["cpu"]
    for role in ("worker", "trainer"):
        env = _env(find(docs, "Deployment", f"coldstream-{role}"))
        assert env["COLDSTREAM_SASL_USERNAME"]["value"] == generate.kafka_user(role)
        # the password Strimzi's User Operator wrote for that KafkaUser (never copied)
        assert env["COLDSTREAM_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": generate.kafka_user(role),
            "key": "password",
        }
    auth = find(docs, "TriggerAuthentication")
    refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
    assert refs["password"]["name"] == generate.kafka_user("autoscaler")
    assert refs["password"]["key"] == "password"


def test_the_operations_guide_lists_each_roles_access() -> None:
    text = (REPO / "docs" / "operations.md").read_text()
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"^\s*\| `(coldstream-[a-z]+)` \|.*$", text, re.M)
    }
    assert set(rows) == {f"coldstream-{r}" for r in EXPECTED}
    for role, grants in EXPECTED.items():
        row = rows[f"coldstream-{role}"]
        for _kind, resource, _pattern in grants:
            assert f"`{resource}`" in row, (role, resource)
