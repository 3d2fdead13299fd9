"""Alert rules: promtool checks and unit tests, coverage of every alert, runbooks."""

from __future__ import annotations

import re

import yaml

from tests.deploy._deploy_helpers import REPO, run_tool

RULES = REPO / "deploy" / "prometheus" / "rules.yaml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "rules.test.yaml"
OPERATIONS = REPO / "docs" / "operations.md"

REQUIRED_ALERTS = {
    "ColdstreamConsumerLagHigh",
    "ColdstreamConsumerGroupEmpty",
    "ColdstreamConsumerStalled",
    "ColdstreamPartitionStalled",
    "ColdstreamDLQRatioHigh",
    "ColdstreamLatencyP99High",
    "ColdstreamModelTooOld",
    "ColdstreamModelSwapFailures",
    "ColdstreamOnlineHitRateDropping",
}


def _alerts() -> dict[str, dict]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def test_promtool_check_rules(promtool: str) -> None:
    res = run_tool([promtool, "check", "rules", str(RULES)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in res.stdout


def test_promtool_unit_tests_pass(promtool: str) -> None:
    res = run_tool([promtool, "test", "rules", str(RULE_TESTS)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_promtool_unit_tests_can_fail(promtool: str, tmp_path) -> None:
    """A wrong expectation makes `promtool test rules` fail (the suite is not vacuous)."""
    doc = yaml.safe_load(RULE_TESTS.read_text())
    doc["rule_files"] = [str(RULES)]
    case = next(c for t in doc["tests"] for c in t.get("alert_rule_test", []) if c["exp_alerts"])
    case["exp_alerts"] = []
    path = tmp_path / "broken.test.yaml"
    path.write_text(yaml.safe_dump(doc))
    res = run_tool([promtool, "test", "rules", str(path)])
    assert res.returncode != 0 and "FAILED" in res.stdout + res.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    alerts = set(_alerts())
    assert alerts >= REQUIRED_ALERTS
    assert alerts - firing == set(), "alerts without a firing test"
    assert alerts - quiet == set(), "alerts without a not-firing test"


def test_every_alert_has_severity_summary_and_runbook() -> None:
    text = OPERATIONS.read_text()
    anchors = {_anchor(h) for h in re.findall(r"^#+\s+(.+)$", text, re.M)}
    for name, rule in _alerts().items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name
        url = rule["annotations"]["runbook_url"]
        assert url == f"docs/operations.md#{name.lower()}", url
        assert name.lower() in anchors, f"no runbook section '{name}' in docs/operations.md"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    h = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return h.replace(" ", "-")


def test_latency_objective_is_50_ms() -> None:
    expr = _alerts()["ColdstreamLatencyP99High"]["expr"]
    assert "histogram_quantile(0.99" in expr
    assert re.search(r">\s*0\.05\s*$", expr.strip())
