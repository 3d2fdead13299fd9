"""The full-stack compose file (deploy/compose/) is valid by the Compose Specification's own
JSON schema (vendored: tests/deploy/schemas/, nothing downloads here) and hangs together:
images built from deploy/docker/, every mounted file there, the settings it sets are real
coldstream settings, topics made by `coldstream topics create`, Prometheus scraping the two
services (promtool checks its config), Grafana provisioned with the dashboard. No container
engine runs in CI, so nothing is started."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from deploy import generate
from stream_app.settings import Settings
from tests.deploy._deploy_helpers import REPO, find_tool
from trainer.settings import TrainerSettings

COMPOSE = REPO / "deploy" / "compose" / "docker-compose.yml"
SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"


@pytest.fixture(scope="module")
def doc() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    schema = json.loads(SCHEMA.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_the_compose_file_is_valid_by_the_compose_schema(doc, validator) -> None:
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_the_schema_check_can_fail(doc, validator) -> None:
    bad = copy.deepcopy(doc)
    bad["services"]["worker"]["depends_on"]["topics"]["condition"] = "when_it_feels_like_it"
    bad["services"]["grafana"]["portz"] = ["3000"]
    messages = [e.message for e in validator.iter_errors(bad)]
    assert len(messages) >= 2, messages


def test_the_stack_has_every_part(doc) -> None:
    assert set(doc["services"]) >= {
        "kafka", "topics", "keys", "train", "worker", "trainer", "prometheus", "grafana"
    }  # fmt: skip
    assert doc["services"]["kafka"]["image"] == f"apache/kafka:{generate.kafka_version()}"
    assert all(
        p.startswith("127.0.0.1:") for s in doc["services"].values() for p in s.get("ports", [])
    )


def test_images_are_built_from_the_dockerfiles(doc) -> None:
    dockerfile = None
    for name in ("worker", "trainer"):
        build = doc["services"][name]["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == REPO
        dockerfile = context / build["dockerfile"]
        assert re.search(rf"^FROM .* AS {build['target']}$", dockerfile.read_text(), re.M)
    built = {s["image"] for s in (doc["services"]["worker"], doc["services"]["trainer"])}
    for name, s in doc["services"].items():  # the one-shot jobs reuse the built images
        if s.get("image", "").startswith("coldstream-"):
            assert s["image"] in built, name


def test_topics_come_from_coldstream_topics_create_and_processes_wait(doc) -> None:
    s = doc["services"]
    assert s["topics"]["entrypoint"] == ["coldstream", "topics", "create"]
    for name in ("worker", "trainer"):
        assert s[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert float(s[name]["environment"]["COLDSTREAM_BROKER_WAIT_S"]) > 0


def test_every_environment_variable_is_a_coldstream_setting(doc) -> None:
    known = {Settings.env_var(n) for n in Settings.model_fields} | {
        TrainerSettings.env_var(n) for n in TrainerSettings.model_fields
    }
    for name in ("topics", "train", "worker", "trainer"):
        env = doc["services"][name]["environment"]
        unknown = {k for k in env if k.startswith("COLDSTREAM_") and k not in known}
        assert not unknown, (name, unknown)


def test_every_mounted_file_is_there(doc) -> None:
    for name, s in doc["services"].items():
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                assert (COMPOSE.parent / src).exists(), (name, src)


def test_prometheus_scrapes_both_services_and_promtool_accepts_it(doc, tmp_path) -> None:
    config = yaml.safe_load((COMPOSE.parent / "prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    s = doc["services"]
    assert targets == {
        f"worker:{s['worker']['environment']['COLDSTREAM_WEB_PORT']}",
        f"trainer:{s['trainer']['environment']['COLDSTREAM_TRAINER_METRICS_PORT']}",
    }
    mounts = dict(v.split(":")[:2] for v in s["prometheus"]["volumes"] if v.startswith("."))
    assert {"/etc/prometheus/rules.yaml", "/etc/prometheus/prometheus.yml"} <= set(mounts.values())
    # promtool on a copy whose rule path points at the mounted file's source
    rules = (
        COMPOSE.parent / next(k for k, v in mounts.items() if v.endswith("rules.yaml"))
    ).resolve()
    config["rule_files"] = [str(rules)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    res = subprocess.run(
        [find_tool("promtool"), "check", "config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_grafana_is_provisioned_with_the_dashboard(doc) -> None:
    g = doc["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in g["volumes"])
    provider = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/coldstream.yaml").read_text()
    )
    (p,) = provider["providers"]
    assert mounts["../grafana/dashboards"] == p["options"]["path"]
    assert mounts["../grafana/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"
    assert g["environment"]["PROMETHEUS_URL"] == "http://prometheus:9090"
