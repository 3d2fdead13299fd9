"""The judge process's own logic without a broker (its Kafka loop runs in
tests/integration/test_rollout_kafka.py): records applied in timestamp order across topics,
bad ones counted and skipped, forgotten users left out, the state and the offsets saved
together and restored, and a verdict that ends the rollout with the judge's signed record."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from coldstream.core.pointer import read_pointer
from coldstream.core.rollout import verify_decision
from tests.unit.trainer.service.test_promote import env  # noqa: F401 - the key fixture
from tests.unit.trainer.service.test_rollout_cli import store  # noqa: F401 - v1 live, v2
from trainer.service import rollout
from trainer.service.judge import JudgeConfig
from trainer.service.judge_loop import STATE_FILE, JudgeMetrics, JudgeRunner
from trainer.settings import get_settings

T0 = 1_790_000_000.0
CFG = JudgeConfig(min_candidate=20, min_incumbent=20, guard_min=10, max_seconds=1e9)


@pytest.fixture
def runner(store, tmp_path):  # noqa: F811 - the fixture imported above
    settings = get_settings().with_overrides(model_store=store)
    r, _ = rollout.start(settings, 2, share=0.5, publish=False, now=T0)
    run = JudgeRunner(
        settings,
        config=CFG,
        metrics=JudgeMetrics(CollectorRegistry()),
        reports=tmp_path / "decisions",
    )
    from trainer.service.judge import Judge

    run.judge = Judge(r.rollout_id, 2, 1, "canary", 0.5, started_at=T0, config=CFG)
    return run, settings, store


class Feed:
    """Records as the consumer hands them over (a unit test of the judge's handling)."""

    def __init__(self, run):
        self.run, self.offsets = run, {}

    def put(self, role, value, ts, partition=0):
        topic = self.run.names[role]
        off = self.offsets.get((topic, partition), 0)
        self.offsets[(topic, partition)] = off + 1
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        msg = SimpleNamespace(
            value=raw, timestamp=int(ts * 1000), offset=off, partition=partition, topic=topic
        )
        self.run.hold(topic, msg)


def _rec(user, version, arm, items, cold=True):
    return {
        "event_id": "e",
        "user_id": user,
        "items": [{"item_id": i, "score": 1.0} for i in items],
        "model_version": str(version),
        "cold_start": cold,
        "produced_at": 0.0,
        "latency_ms": 1.0,
        "fallback": None,
        "arm": arm,
    }


def test_records_apply_in_timestamp_order_across_topics(runner):
    run, _, _ = runner
    feed = Feed(run)
    # the click (t=2) is read before the recommendation (t=1) it follows
    feed.put("clicks", {"user_id": "a", "item_id": "5"}, T0 + 2)
    feed.put("recommendations", _rec("a", 1, "live", ["5", "6"]), T0 + 1)
    feed.put("clicks", b"{oops", T0 + 3)
    assert run.release(T0 + 2.5) is None  # held back delay_s (2 s): nothing old enough
    assert run.counts == {}
    run.release(T0 + 10)
    assert run.counts == {
        ("recommendations", "applied"): 1,
        ("clicks", "applied"): 1,
        ("clicks", "bad"): 1,
    }
    assert run.judge.counts(1, "live", "cold") == (1.0, 1.0)  # one hit in one observation


def test_a_forgotten_user_is_left_out(runner):
    run, _, _ = runner
    feed = Feed(run)
    feed.put("recommendations", _rec("a", 1, "live", ["5"]), T0 + 1)
    feed.put("forget-requests", {"user_id": "a"}, T0 + 2)
    feed.put("clicks", {"user_id": "a", "item_id": "5"}, T0 + 3)
    run.release(T0 + 10)
    assert run.judge.counts(1, "live", "cold") == (0.0, 0.0)


def test_state_and_offsets_survive_a_restart(runner):
    run, settings, root = runner
    feed = Feed(run)
    feed.put("recommendations", _rec("a", 1, "live", ["5"]), T0 + 1)
    feed.put("clicks", {"user_id": "a", "item_id": "5"}, T0 + 2)
    feed.put("recommendations", _rec("b", 2, "canary", ["7"]), T0 + 20)  # still held
    run.release(T0 + 10)
    run.save()
    again = JudgeRunner(settings, config=CFG)
    offsets = again.restore(run.judge.rollout_id)
    names = run.names
    assert offsets == {(names["recommendations"], 0): 1, (names["clicks"], 0): 1}
    assert again.judge.to_json() == run.judge.to_json()
    assert again.restore("r-other") is None
    assert (root / STATE_FILE).is_file()


def test_a_bad_candidate_is_rolled_back_with_the_judges_signed_record(runner):
    run, settings, root = runner
    feed = Feed(run)
    ts = T0
    for i in range(40):  # users who click the live model's first item; the canary misses
        for arm, version in (("live", 1), ("canary", 2)):
            ts += 1
            user = f"{arm}-{i}"
            feed.put("recommendations", _rec(user, version, arm, ["5", "6"]), ts)
            feed.put(
                "clicks", {"user_id": user, "item_id": "5" if arm == "live" else "9"}, ts + 0.5
            )
    verdict = run.release(ts + 10)
    assert verdict is not None and verdict.decision == "rollback", verdict
    records = asyncio.run(run.act(verdict, publish=False))
    keys = get_settings().signer().keyring
    d = verify_decision(records[0], keys)
    assert d.decision == "rollback" and d.rollout_id.startswith("r-2-")
    assert d.figures["cold"]["hit_candidate"] == 0.0 and d.figures["cold"]["hit_incumbent"] == 1.0
    assert len(records) == 1 and rollout.running(root) is None
    assert read_pointer(root, keys).version == 1 and not (root / STATE_FILE).exists()
    assert run.judge is None
    report = json.loads(next((run.reports).glob("*.json")).read_text())
    assert report["decision"] == "rollback" and report["rule"] in (
        "guard_severe_cold",
        "worse_cold",
    )
    reg = run.metrics.registry
    assert reg.get_sample_value("coldstream_rollout_decisions_total", {"decision": "rollback"}) == 1
    assert (
        reg.get_sample_value("coldstream_rollout_hit_rate", {"arm": "live", "cohort": "cold"})
        == 1.0
    )
