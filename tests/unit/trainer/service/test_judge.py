"""The rollout judge: its confidence sequence covers a planted difference under continuous
looking, the rule promotes / rolls back / gives up, forgotten users leave no trace, and its
state survives a JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coldstream.core.rollout import assign, verify_decision
from coldstream.core.signing import Signer
from trainer.service.judge import (
    Judge,
    JudgeConfig,
    _interval,
    hit_interval,
    rule_code,
    rule_codes,
)

ALPHA = 0.05


@pytest.mark.parametrize(("p0", "delta"), [(0.2, 0.0), (0.15, -0.02), (0.3, 0.03)])
def test_the_sequence_covers_the_true_difference_at_every_look(p0: float, delta: float) -> None:
    rng = np.random.default_rng(7)
    runs, steps, share = 200, 20_000, 0.1
    arm = rng.random((runs, steps)) < share
    hit = rng.random((runs, steps)) < np.where(arm, p0 + delta, p0)
    n1 = np.cumsum(arm, axis=1)
    h1 = np.cumsum(arm & hit, axis=1)
    n0 = np.cumsum(~arm, axis=1)
    h0 = np.cumsum(~arm & hit, axis=1)
    _, lo, hi = hit_interval(h1, n1, h0, n0, ALPHA, 0.02)
    looked = n1 >= 200  # from the guard's minimum sample on, after every observation
    missed = (looked & ((lo > delta) | (hi < delta))).any(axis=1)
    assert missed.mean() <= ALPHA, missed.mean()
    # and it is not vacuous: by the end it is narrower than the margin on each side
    assert np.median(hi[:, -1] - lo[:, -1]) < 0.07


def test_a_fixed_sample_interval_would_not_cover_under_peeking() -> None:
    """The control: a 95% fixed-n interval looked at after every observation misses more
    often than alpha (what the confidence sequence is for)."""
    rng = np.random.default_rng(3)
    runs, steps = 200, 20_000
    arm = rng.random((runs, steps)) < 0.1
    hit = rng.random((runs, steps)) < 0.2
    n1, n0 = np.cumsum(arm, axis=1), np.cumsum(~arm, axis=1)
    m1 = np.cumsum(arm & hit, axis=1) / np.maximum(n1, 1)
    m0 = np.cumsum(~arm & hit, axis=1) / np.maximum(n0, 1)
    se = np.sqrt(0.16 / np.maximum(n1, 1) + 0.16 / np.maximum(n0, 1))
    missed = ((n1 >= 200) & (np.abs(m1 - m0) > 1.96 * se)).any(axis=1)
    assert missed.mean() > ALPHA


def _stream(
    judge: Judge,
    delta: float,
    *,
    p0: float = 0.2,
    n: int = 200_000,
    start: int = 0,
    seed: int = 1,
    n_events: int = 1,
    dt: float = 0.005,
    warm_delta: float | None = None,
):
    """Users served once each (canary by the keyed hash), then their next event: a hit with
    the arm's probability. Returns the verdict and how many users were seen."""
    rng = np.random.default_rng(seed)
    draws = rng.random(n)
    t = judge.started_at + start * dt
    for i in range(start, start + n):
        u = f"u{i}"
        canary = assign(u, judge.share or 0.0, judge.rollout_id)
        cold = n_events <= judge.config.cold_max_events
        d = delta if cold or warm_delta is None else warm_delta
        p = p0 + (d if canary else 0.0)
        version, arm = (judge.candidate_version, "canary") if canary else (7, "live")
        items = ["x", "a", "y"] if draws[i - start] < p else ["x", "y"]
        judge.served(u, version, arm, items, n_events, t)
        t += dt
        v = judge.event(u, "a", t)
        if v is not None:
            return v, i + 1 - start
    return None, n


def _judge(**cfg) -> Judge:
    return Judge(
        "r-8-1", 8, 7, "canary", 0.1, started_at=1_790_000_000.0, config=JudgeConfig(**cfg)
    )


def test_a_good_candidate_is_promoted() -> None:
    v, seen = _stream(_judge(), +0.03)
    assert v is not None and v.decision == "promote" and v.rule == "non_inferior_cold"
    f = v.figures["cold"]
    assert f["lower"] > -0.02 and f["n_candidate"] >= 1000 and f["n_incumbent"] >= 1000
    assert (
        v.figures["arms"]["8/canary/cold"]["hit_rate@10"]
        > v.figures["arms"]["7/live/cold"]["hit_rate@10"]
    )


def test_a_bad_candidate_is_rolled_back_early() -> None:
    v, seen = _stream(_judge(), -0.10)
    assert v is not None and v.decision == "rollback"
    assert v.rule == "guard_severe_cold"  # before the main rule's minimum sample
    assert v.figures["cold"]["upper"] < -0.05 and v.figures["cold"]["n_candidate"] < 1000


def test_a_candidate_worse_on_warm_users_is_rolled_back_by_the_guard() -> None:
    v, _ = _stream(_judge(), 0.0, n_events=20, warm_delta=-0.06)
    assert v is not None and (v.decision, v.rule) == ("rollback", "guard_warm")
    assert v.figures["warm"]["upper"] < -0.02


def test_an_undecided_candidate_is_given_up_past_the_sample_budget() -> None:
    # between -margin and -margin/2: neither non-inferior nor clearly worse in 1500 obs
    v, _ = _stream(_judge(max_candidate=1500), -0.012)
    assert v is not None and (v.decision, v.rule) == ("give_up", "sample_budget")
    assert v.figures["cold"]["n_candidate"] == 1500
    assert v.figures["cold"]["lower"] < -0.02 < v.figures["cold"]["upper"] + 0.01


def test_a_neutral_candidate_is_given_up_past_the_time_budget() -> None:
    judge = _judge(max_seconds=30.0)  # 30 s at 200 events/s: 6000 users, ~600 canary
    v, seen = _stream(judge, 0.0)
    assert v is not None and (v.decision, v.rule) == ("give_up", "time_budget")
    assert v.figures["elapsed_s"] >= 30.0 and seen == pytest.approx(6000, abs=2)
    assert judge.check(judge.last_ts + 100) == v  # final: the first verdict stays


def test_the_scalar_rule_is_the_vectorised_rule() -> None:
    """The judge looks with plain floats, the simulation with arrays: the same rule."""
    rng = np.random.default_rng(11)
    m = 20_000
    cfg = JudgeConfig()
    n1 = rng.integers(0, 25_000, m).astype(float)
    n0 = n1 * rng.uniform(0.5, 12, m)
    h1 = np.floor(n1 * rng.uniform(0.05, 0.35, m))
    h0 = np.floor(n0 * rng.uniform(0.15, 0.30, m))
    wn1, wn0 = rng.permutation(n1), rng.permutation(n0)
    wh1, wh0 = np.floor(wn1 * rng.uniform(0.1, 0.4, m)), np.floor(wn0 * rng.uniform(0.2, 0.35, m))
    el = rng.uniform(0, 5000, m)
    vec = rule_codes((h1, n1, h0, n0), (wh1, wn1, wh0, wn0), el, cfg)
    one = [
        rule_code((h1[i], n1[i], h0[i], n0[i]), (wh1[i], wn1[i], wh0[i], wn0[i]), el[i], cfg)
        for i in range(m)
    ]
    assert np.array_equal(vec, one)
    assert set(vec.tolist()) == set(range(7))  # every rule was exercised
    d, lo, hi = hit_interval(h1, n1, h0, n0, 0.05, 0.02)
    one_iv = np.array([_interval(h1[i], n1[i], h0[i], n0[i], 0.05, 0.02) for i in range(m)])
    np.testing.assert_allclose(one_iv, np.stack([d, lo, hi], axis=1), rtol=1e-12, atol=1e-12)


def test_the_rule_matches_its_vectorised_form() -> None:
    judge = _judge()
    _stream(judge, 0.0, n=5000)
    f = judge.figures()
    cold = (f["cold"]["hit_candidate"] * f["cold"]["n_candidate"], f["cold"]["n_candidate"])
    inc = (f["cold"]["hit_incumbent"] * f["cold"]["n_incumbent"], f["cold"]["n_incumbent"])
    assert int(rule_codes((*cold, *inc), (0, 0, 0, 0), 0.0, judge.config)) == 0
    assert int(rule_codes((*cold, *inc), (0, 0, 0, 0), 1e9, judge.config)) == 6  # time_budget


def test_forgotten_users_are_excluded() -> None:
    a, b = _judge(), _judge()
    _stream(a, 0.0, n=3000)
    _stream(b, 0.0, n=3000)
    # b also sees u-gone, who hits twice (a cold and a warm observation)
    t = b.last_ts
    for n_events in (2, 9):
        b.served("u-gone", 7, "live", ["a"], n_events, t)
        t += 1
        b.event("u-gone", "a", t)
    b.served("u-gone", 7, "live", ["a"], 10, t)  # pending
    assert b.tallies != a.tallies
    b.forget("u-gone", ts=t + 1)
    assert b.tallies == a.tallies
    assert not any(k.startswith(b._user("u-gone")) for k in b.pending)
    # events at or before the request are ignored; a later one (a new user) counts again
    b.served("u-gone", 7, "live", ["a"], 1, t)
    assert b.event("u-gone", "a", t + 0.5) is None and b.tallies == a.tallies
    b.served("u-gone", 7, "live", ["a"], 1, t + 2)
    b.event("u-gone", "a", t + 3)
    assert b.tallies["7/live/cold"][0] == a.tallies["7/live/cold"][0] + 1
    assert "u-gone" not in b.to_json().decode()  # held by a keyed hash only


def test_a_shadow_is_scored_on_the_same_next_event() -> None:
    judge = Judge("r-9", 9, 7, "shadow", None, started_at=1.0)
    judge.served("u1", 7, "live", ["a", "b"], 1, 2.0)
    judge.shadow_served("u1", 9, ["b", "a"], 1, 2.0)
    judge.event("u1", "b", 3.0)
    arms = judge.figures()["arms"]
    assert arms["7/live/cold"] == {
        "n": 1,
        "hit_rate@10": 1.0,
        "ndcg@10": 0.63093,
        "ndcg@10_sd": 0.0,
    }
    assert arms["9/shadow/cold"]["ndcg@10"] == 1.0
    assert judge.figures()["cold"]["n_candidate"] == 1


def test_state_round_trips_through_json_and_decides_the_same() -> None:
    judge = _judge()
    assert _stream(judge, 0.02, n=6000)[0] is None
    raw = judge.to_json()
    json.loads(raw)  # plain JSON (a compacted topic's value)
    restored = Judge.from_json(raw)
    assert restored.to_json() == raw and restored == judge
    v1, n1 = _stream(judge, 0.02, start=6000, seed=2)
    v2, n2 = _stream(restored, 0.02, start=6000, seed=2)
    assert v1 is not None and (v1, n1) == (v2, n2)
    assert Judge.from_json(restored.to_json()).check() == v1


def test_the_verdict_is_a_signed_decision_record() -> None:
    signer = Signer.generate()
    judge = _judge()
    v, _ = _stream(judge, -0.10)
    d = verify_decision(judge.decision_record(signer), signer.keyring)
    assert (d.decision, d.rollout_id, d.candidate_version, d.incumbent_version) == (
        "rollback",
        "r-8-1",
        8,
        7,
    )
    assert v is not None and d.figures == v.figures


def test_a_manual_override_is_final() -> None:
    judge = _judge()
    _stream(judge, 0.0, n=500)
    v = judge.override("manual_abort")
    assert (v.decision, v.rule) == ("manual_abort", "manual")
    assert _stream(judge, 0.03, start=500)[0] is None  # decided: input is ignored
    assert judge.check() == v


def test_pending_stays_bounded_after_a_restore() -> None:
    # pending drops its oldest entry in O(1) (an OrderedDict), restored ones too
    judge = _judge(max_pending=5)
    t = judge.started_at
    for i in range(4):
        judge.served(f"u{i}", 7, "live", ["x"], 1, t + i)
    restored = Judge.from_json(judge.to_json())
    for i in range(8, 12):
        restored.served(f"u{i}", 7, "live", ["x"], 1, t + i)
    assert len(restored.pending) == 5
    assert restored.pending.keys() >= {restored._user(f"u{i}") for i in range(8, 12)}
