"""Kubernetes manifests: schema validation of every rendered resource, and the properties a
rolling deploy depends on (strategy, probes, drain, security, GPUs, autoscaling cap)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy._deploy_helpers import OVERLAYS, REPO, build, find, run_tool

K8S_VERSIONS = ("1.30.0", "1.37.0")  # oldest supported, newest schema kubernetes-validate has
# Custom resources: kubernetes-validate has no schema for them (it warns and passes), so
# they are checked below against shapes written from the CRD docs instead.
CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("kafka.strimzi.io/v1beta2", "Kafka"),
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"),
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"),
    ("kafka.strimzi.io/v1beta2", "KafkaUser"),
}
# Secrets the manifests mount but never define: the Strimzi cluster operator writes the CA;
# the keys are created out of band (docs/operations.md, "Secrets"): no placeholder value is
# ever applied by kubectl apply.
EXTERNAL_SECRETS = {
    "coldstream-cluster-ca-cert",
    "coldstream-signing-key",
    "coldstream-verify-keys",
}


def _is_custom(doc: dict[str, Any]) -> bool:
    return (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS


def _validate(
    kubernetes_validate: str, docs: list[dict[str, Any]], tmp_path: Path, version: str
) -> tuple[int, str]:
    path = tmp_path / f"core-{version}.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    res = run_tool([kubernetes_validate, "--strict", "-k", version, str(path)])
    return res.returncode, res.stdout + res.stderr


# --------------------------------------------------------------------------- schema validation


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_resources_pass_kubernetes_validate_strict(
    rendered: dict[str, list[dict[str, Any]]],
    kubernetes_validate: str,
    tmp_path: Path,
    overlay: str,
    version: str,
) -> None:
    docs = rendered[overlay]
    core = [d for d in docs if not _is_custom(d)]
    assert len(core) >= 10, "too few core resources rendered"
    rc, out = _validate(kubernetes_validate, core, tmp_path, version)
    assert rc == 0, out
    # every core resource had a schema (a WARN means "no schema": nothing was checked)
    assert "WARN" not in out and "ERROR" not in out, out
    assert out.count("INFO") == len(core), out
    unknown = {(d["apiVersion"], d["kind"]) for d in docs if _is_custom(d)} - CUSTOM_KINDS
    assert not unknown


def test_kubernetes_validate_strict_rejects_unknown_fields(
    rendered: dict[str, list[dict[str, Any]]],
    kubernetes_validate: str,
    tmp_path: Path,
) -> None:
    """The validation above can fail: a typo'd field is refused."""
    dep = copy.deepcopy(find(rendered["cpu"], "Deployment", "coldstream-worker"))
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    rc, out = _validate(kubernetes_validate, [dep], tmp_path, K8S_VERSIONS[0])
    assert rc != 0 and "readinessProbes" in out, out


# Shapes of the custom resources: every key we use, with its type; unknown keys are errors.
# From the CRD references: KEDA 2.x (keda.sh/v1alpha1), prometheus-operator
# (monitoring.coreos.com/v1), Strimzi 0.45+ (kafka.strimzi.io/v1beta2).
STR, INT, BOOL, ANY = str, int, bool, object
META = {"name": STR, "namespace": STR, "labels": {STR: STR}, "annotations": {STR: STR}}
RULE = {
    "alert": STR,
    "record": STR,
    "expr": STR,
    "for": STR,
    "labels": {STR: STR},
    "annotations": {STR: STR},
}
SHAPES: dict[str, dict[Any, Any]] = {
    "ScaledObject": {
        "spec": {
            "scaleTargetRef": {"apiVersion": STR, "kind": STR, "name": STR},
            "minReplicaCount": INT,
            "maxReplicaCount": INT,
            "pollingInterval": INT,
            "cooldownPeriod": INT,
            "idleReplicaCount": INT,
            "advanced": {
                "restoreToOriginalReplicaCount": BOOL,
                "horizontalPodAutoscalerConfig": {"name": STR, "behavior": ANY},
            },
            "triggers": [
                {
                    "type": STR,
                    "name": STR,
                    "metadata": {STR: STR},
                    "authenticationRef": {"name": STR, "kind": STR},
                }
            ],
        }
    },
    "TriggerAuthentication": {
        "spec": {
            "secretTargetRef": [{"parameter": STR, "name": STR, "key": STR}],
        }
    },
    "ServiceMonitor": {
        "spec": {
            "selector": {"matchLabels": {STR: STR}},
            "namespaceSelector": ANY,
            "endpoints": [{"port": STR, "path": STR, "interval": STR, "scrapeTimeout": STR}],
        }
    },
    "PrometheusRule": {"spec": {"groups": [{"name": STR, "interval": STR, "rules": [RULE]}]}},
    "Kafka": {
        "spec": {
            "kafka": {
                "version": STR,
                "metadataVersion": STR,
                "authorization": {"type": STR},
                "config": {STR: ANY},
                "listeners": [
                    {
                        "name": STR,
                        "port": INT,
                        "type": STR,
                        "tls": BOOL,
                        "authentication": {"type": STR},
                    }
                ],
            },
            "entityOperator": {"topicOperator": ANY, "userOperator": ANY},
        }
    },
    "KafkaNodePool": {
        "spec": {
            "replicas": INT,
            "roles": [STR],
            "resources": ANY,
            "storage": {
                "type": STR,
                "volumes": [
                    {"id": INT, "type": STR, "size": STR, "deleteClaim": BOOL, "kraftMetadata": STR}
                ],
            },
        }
    },
    "KafkaTopic": {
        "spec": {"topicName": STR, "partitions": INT, "replicas": INT, "config": {STR: ANY}}
    },
    "KafkaUser": {
        "spec": {
            "authentication": {"type": STR},
            "authorization": {
                "type": STR,
                "acls": [
                    {
                        "resource": {"type": STR, "name": STR, "patternType": STR},
                        "operations": [STR],
                        "host": STR,
                    }
                ],
            },
        }
    },
}


def shape_errors(obj: Any, shape: Any, path: str = "") -> list[str]:
    if shape is ANY:
        return []
    if isinstance(shape, dict):
        if not isinstance(obj, dict):
            return [f"{path}: expected a mapping, got {type(obj).__name__}"]
        if STR in shape:  # a map of arbitrary keys
            return [e for k, v in obj.items() for e in shape_errors(v, shape[STR], f"{path}.{k}")]
        errors = [f"{path}.{k}: unknown field" for k in obj if k not in shape]
        return errors + [
            e
            for k, v in obj.items()
            if k in shape
            for e in shape_errors(v, shape[k], f"{path}.{k}")
        ]
    if isinstance(shape, list):
        if not isinstance(obj, list) or not obj:
            return [f"{path}: expected a non-empty list"]
        return [
            e for i, item in enumerate(obj) for e in shape_errors(item, shape[0], f"{path}[{i}]")
        ]
    if shape is INT and isinstance(obj, bool) or not isinstance(obj, shape):
        return [f"{path}: expected {shape.__name__}, got {obj!r}"]
    return []


def custom_resource_errors(doc: dict[str, Any]) -> list[str]:
    shape = {"apiVersion": STR, "kind": STR, "metadata": META, **SHAPES[doc["kind"]]}
    return shape_errors(doc, shape, doc["kind"] + "/" + doc["metadata"]["name"])


def _strimzi_docs(kustomize: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(build(kustomize, "kafka/strimzi")) if d]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_have_the_documented_shape(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    custom = [d for d in rendered[overlay] if _is_custom(d)]
    assert {d["kind"] for d in custom} == {
        "ScaledObject",
        "TriggerAuthentication",
        "ServiceMonitor",
        "PrometheusRule",
    }
    for doc in custom:
        assert custom_resource_errors(doc) == []


def test_strimzi_resources_have_the_documented_shape(kustomize: str) -> None:
    docs = _strimzi_docs(kustomize)
    assert {d["kind"] for d in docs} == {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"}
    for doc in docs:
        assert _is_custom(doc)
        assert custom_resource_errors(doc) == []


def test_shape_check_catches_a_typo(rendered: dict[str, list[dict[str, Any]]]) -> None:
    so = copy.deepcopy(find(rendered["cpu"], "ScaledObject"))
    so["spec"]["maxReplicas"] = so["spec"].pop("maxReplicaCount")
    so["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 2000  # KEDA wants strings
    errors = custom_resource_errors(so)
    assert any("maxReplicas: unknown field" in e for e in errors)
    assert any("lagThreshold: expected str" in e for e in errors)


# --------------------------------------------------------------------------- rolling deploys


def _pod(dep: dict[str, Any]) -> dict[str, Any]:
    return dep["spec"]["template"]["spec"]


def _container(dep: dict[str, Any], name: str) -> dict[str, Any]:
    (c,) = [c for c in _pod(dep)["containers"] if c["name"] == name]
    return c


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_rolls_without_losing_capacity(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    dep = find(rendered[overlay], "Deployment", "coldstream-worker")
    strategy = dep["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert strategy["rollingUpdate"]["maxSurge"] >= 1
    c = _container(dep, "worker")
    web = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert web == {"web": 6066}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "web"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "web"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    # the liveness probe must not kill a worker that is merely not ready (e.g. rebalancing)
    live = c["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= 30


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_advertise_the_pod_address_and_probe_api_readiness(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    c = _container(find(rendered[overlay], "Deployment", "coldstream-worker"), "worker")
    env = {e["name"]: e for e in c["env"]}
    # the address the other replicas forward /recommend to: the pod's own, not 127.0.0.1
    assert env["COLDSTREAM_ADVERTISED_HOST"] == {
        "name": "COLDSTREAM_ADVERTISED_HOST",
        "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
    }
    # readiness is readiness to serve the API, not partition ownership (/ready?partitions=1):
    # a surge pod beyond the partition count becomes ready and a maxUnavailable: 0 rollout
    # goes on
    assert "?" not in c["readinessProbe"]["httpGet"]["path"]
    from stream_app.settings import Settings

    assert "advertised_host" in Settings.model_fields


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_prestop_and_drain(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    dep = find(rendered[overlay], "Deployment", "coldstream-worker")
    c = _container(dep, "worker")
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0].endswith("sleep"), command
    pre_stop = int(command[1])
    drain = int(dep["metadata"]["annotations"]["coldstream.io/drain-seconds"])
    grace = _pod(dep)["terminationGracePeriodSeconds"]
    assert pre_stop >= 3, "preStop must outlast endpoint removal"
    assert grace >= pre_stop + drain + 10, (grace, pre_stop, drain)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_locked_down(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    deps = [d for d in rendered[overlay] if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deps} == {"coldstream-worker", "coldstream-trainer"}
    for dep in deps:
        pod = _pod(dep)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] >= 10000
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            for key in ("cpu", "memory"):
                assert key in c["resources"]["requests"] and key in c["resources"]["limits"]
            assert re.fullmatch(r".+:\d+\.\d+\.\d+-" + overlay, c["image"]), c["image"]
        # the model store is a volume (never in the image); only the trainer writes it
        mounts = {m["mountPath"]: m for c in pod["containers"] for m in c["volumeMounts"]}
        assert "/models" in mounts and "/tmp" in mounts
        assert mounts["/models"].get("readOnly", False) is (
            dep["metadata"]["name"] == "coldstream-worker"
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gpus_only_in_the_gpu_overlay_and_only_in_limits(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    for dep in (d for d in rendered[overlay] if d["kind"] == "Deployment"):
        pod = _pod(dep)
        for c in pod["containers"]:
            assert "nvidia.com/gpu" not in c["resources"].get("requests", {})
            gpus = c["resources"]["limits"].get("nvidia.com/gpu")
            if overlay == "gpu":
                assert gpus == 1
                assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
                assert {
                    "key": "nvidia.com/gpu",
                    "operator": "Exists",
                    "effect": "NoSchedule",
                } in pod["tolerations"]
            else:
                assert gpus is None
                assert "nodeSelector" not in pod and "tolerations" not in pod


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_trainer_is_a_single_writer(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    dep = find(rendered[overlay], "Deployment", "coldstream-trainer")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    c = _container(dep, "trainer")
    assert c["ports"] == [{"name": "metrics", "containerPort": 6067, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}


def test_disruption_budget_and_model_store(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["cpu"]
    pdb = find(docs, "PodDisruptionBudget")
    worker = find(docs, "Deployment", "coldstream-worker")
    assert pdb["spec"]["selector"]["matchLabels"] == worker["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["maxUnavailable"] == 1
    pvc = find(docs, "PersistentVolumeClaim", "coldstream-model-store")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


# --------------------------------------------------------------------------- autoscaling


def test_keda_scales_on_lag_up_to_the_partition_count(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    from coldstream.core.topics import load_topics

    topics = load_topics(REPO / "kafka" / "topics.yaml")
    docs = rendered["cpu"]
    so = find(docs, "ScaledObject")
    cm = next(
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("coldstream-settings")
    )
    assert so["spec"]["scaleTargetRef"]["name"] == "coldstream-worker"
    assert so["spec"]["maxReplicaCount"] == topics["clicks"].partitions
    pdb = find(docs, "PodDisruptionBudget")
    assert so["spec"]["minReplicaCount"] > pdb["spec"]["maxUnavailable"]
    triggers = so["spec"]["triggers"]
    assert {t["metadata"]["topic"] for t in triggers} == {"clicks", "purchases"}
    for t in triggers:
        assert t["type"] == "kafka"
        assert topics[t["metadata"]["topic"]].partitions <= so["spec"]["maxReplicaCount"]
        assert t["metadata"]["consumerGroup"] == cm["data"]["COLDSTREAM_APP_ID"]
        assert t["metadata"]["bootstrapServers"] == cm["data"]["COLDSTREAM_BOOTSTRAP"]
        assert t["metadata"]["allowIdleConsumers"] == "false"
        find(docs, "TriggerAuthentication", t["authenticationRef"]["name"])
    assert "replicas" not in find(docs, "Deployment", "coldstream-worker")["spec"], (
        "KEDA owns the worker's replica count"
    )


# --------------------------------------------------------------------------- settings, secrets


def _env_names(c: dict[str, Any]) -> set[str]:
    return {e["name"] for e in c.get("env", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_and_settings_are_wired(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    # no Secret is rendered: nothing with a placeholder value reaches the cluster
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"] == []
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    assert all(k.startswith("COLDSTREAM_") for k in cm["data"])
    assert cm["data"]["COLDSTREAM_DEVICE"] == {"cpu": "cpu", "gpu": "auto"}[overlay]
    assert "COLDSTREAM_MODEL_HMAC_KEY" not in cm["data"]
    assert cm["data"]["COLDSTREAM_ALLOW_UNSIGNED_CHECKPOINTS"] == "false"
    for dep in (d for d in docs if d["kind"] == "Deployment"):
        pod = _pod(dep)
        for c in pod["containers"]:
            assert {"COLDSTREAM_SASL_USERNAME", "COLDSTREAM_SASL_PASSWORD"} <= _env_names(c)
            assert "COLDSTREAM_MODEL_HMAC_KEY" not in _env_names(c)
            for e in c["env"]:
                if "value" in e:  # plain values only for what is not secret (a user name)
                    assert not re.search(r"PASSWORD|KEY|SECRET|TOKEN", e["name"]), e
                elif "secretKeyRef" in e["valueFrom"]:
                    assert e["valueFrom"]["secretKeyRef"]["name"]  # from a Secret, by name
                else:  # the downward API (pod IP), never a secret
                    assert set(e["valueFrom"]) == {"fieldRef"}, e
            assert c["envFrom"] == [{"configMapRef": {"name": cm["metadata"]["name"]}}]
        for v in pod["volumes"]:
            if "secret" in v:
                assert v["secret"]["secretName"] in EXTERNAL_SECRETS


def _secret_mounts(dep: dict[str, Any]) -> dict[str, str]:
    """Secret name -> mount path in the deployment's (only) container."""
    pod = _pod(dep)
    by_volume = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    [c] = pod["containers"]
    return {
        by_volume[m["name"]]: m["mountPath"] for m in c["volumeMounts"] if m["name"] in by_volume
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_trainer_holds_the_private_key(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    cm = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    worker = _secret_mounts(find(docs, "Deployment", "coldstream-worker"))
    trainer = _secret_mounts(find(docs, "Deployment", "coldstream-trainer"))
    assert "coldstream-signing-key" not in worker  # a web-facing worker can verify, not sign
    assert worker["coldstream-verify-keys"] == cm["COLDSTREAM_VERIFY_KEYS_FILE"]
    assert trainer["coldstream-verify-keys"] == cm["COLDSTREAM_VERIFY_KEYS_FILE"]
    key_file = cm["COLDSTREAM_TRAINER_SIGNING_KEY_FILE"]
    assert key_file.startswith(trainer["coldstream-signing-key"] + "/")


def test_worker_settings_exist_in_stream_app_settings(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    from stream_app.settings import Settings

    cm = next(d for d in rendered["cpu"] if d["kind"] == "ConfigMap")
    known = {Settings.env_var(name) for name in Settings.model_fields}
    worker_keys = {k for k in cm["data"] if not k.startswith("COLDSTREAM_TRAINER_")}
    assert worker_keys - known == set()
    assert cm["data"]["COLDSTREAM_WEB_PORT"] == "6066"


def test_trainer_settings_exist_in_trainer_settings(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    from trainer.settings import TrainerSettings

    prefix = TrainerSettings.ENV_PREFIX
    known = {TrainerSettings.env_var(name) for name in TrainerSettings.model_fields}
    cm = next(d for d in rendered["gpu"] if d["kind"] == "ConfigMap")
    trainer_keys = {k for k in cm["data"] if k.startswith(prefix)}
    assert trainer_keys and trainer_keys - known == set()
    assert cm["data"][prefix + "METRICS_PORT"] == "6067"
    # the trainer reads the worker's store, broker and topic variables (one ConfigMap)
    assert TrainerSettings.env_var("model_store") == "COLDSTREAM_MODEL_STORE"
    assert cm["data"]["COLDSTREAM_MODEL_STORE"] == "/models"


# --------------------------------------------------------------------------- monitoring


def test_service_monitor_scrapes_the_services(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["cpu"]
    sm = find(docs, "ServiceMonitor")
    selector = sm["spec"]["selector"]["matchLabels"]
    services = [
        d
        for d in docs
        if d["kind"] == "Service" and selector.items() <= d["metadata"]["labels"].items()
    ]
    assert {s["metadata"]["name"] for s in services} == {"coldstream-worker", "coldstream-trainer"}
    ports = {p["name"] for s in services for p in s["spec"]["ports"]}
    assert {e["port"] for e in sm["spec"]["endpoints"]} == ports
    assert all(e["path"] == "/metrics" for e in sm["spec"]["endpoints"])


def test_prometheus_rule_carries_the_rules_file(rendered: dict[str, list[dict[str, Any]]]) -> None:
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "rules.yaml").read_text())
    pr = find(rendered["cpu"], "PrometheusRule")
    assert pr["spec"]["groups"] == rules["groups"]


def test_network_policies_admit_named_peers_only(rendered: dict[str, list[dict[str, Any]]]) -> None:
    # a rule with ports but no `from` admits every pod in the cluster (the finding of the
    # reliability audit): each rule names its peers
    policies = [d for d in rendered["cpu"] if d["kind"] == "NetworkPolicy"]
    assert {p["metadata"]["name"] for p in policies} == {"coldstream-worker", "coldstream-trainer"}
    for p in policies:
        assert p["spec"]["policyTypes"] == ["Ingress"]
        for rule in p["spec"]["ingress"]:
            assert rule.get("from"), f"{p['metadata']['name']}: an ingress rule without `from`"
            for peer in rule["from"]:
                assert peer.get("podSelector", {}).get("matchLabels"), peer
    worker = next(p for p in policies if p["metadata"]["name"] == "coldstream-worker")
    peers = [
        peer["podSelector"]["matchLabels"] for r in worker["spec"]["ingress"] for peer in r["from"]
    ]
    assert {"coldstream.io/recommend-client": "true"} in peers
    assert {"app.kubernetes.io/name": "prometheus"} in peers
