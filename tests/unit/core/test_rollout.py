"""Rollout kernel: the canary assignment (stable across processes, monotone, on target), the
rollout fields inside signed model-update records, and signed decision records."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from coldstream.core.model_updates import UpdateRefused, make_update, parse_update, verify_update
from coldstream.core.rollout import (
    DECISION_KIND,
    DecisionRefused,
    arm_of,
    assign,
    is_decision_record,
    make_decision,
    unit_hash,
    verify_decision,
)
from coldstream.core.signing import Signer

SIGNER = Signer.generate()
KEYS = SIGNER.keyring
OTHER = Signer.generate()
USERS = [f"user-{i}" for i in range(2000)]


# -- assignment -----------------------------------------------------------------------


def test_assignment_is_stable_across_processes() -> None:
    here = [unit_hash(u, "r-8") for u in USERS[:200]]
    code = (
        "import json, sys\n"
        "from coldstream.core.rollout import unit_hash\n"
        "print(json.dumps([unit_hash(f'user-{i}', 'r-8') for i in range(200)]))\n"
    )
    # another interpreter, with another hash seed: Python's hash() would differ here
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert json.loads(out.stdout) == here
    assert [assign(u, 0.1, "r-8") for u in USERS[:200]] == [x < 0.1 for x in here]


def test_assignment_is_monotone_in_the_share() -> None:
    for u in USERS:
        ins = [assign(u, s, "r-8") for s in (0.01, 0.05, 0.1, 0.2, 0.5, 0.99)]
        assert ins == sorted(ins)  # False ... False True ... True
    assert not any(assign(u, 0.0, "r-8") for u in USERS)
    assert all(assign(u, 1.0, "r-8") for u in USERS)


def test_assignment_matches_the_share_and_depends_on_the_salt() -> None:
    ids = [f"u{i}" for i in range(100_000)]
    for share in (0.05, 0.1, 0.5):
        got = sum(assign(u, share, "r-8") for u in ids) / len(ids)
        assert abs(got - share) <= 0.02 * share + 0.002, (share, got)
    a = {u for u in ids[:20_000] if assign(u, 0.1, "r-8")}
    b = {u for u in ids[:20_000] if assign(u, 0.1, "r-9")}
    assert 0.05 < len(a & b) / len(a) < 0.2  # a new rollout draws a new sample (~10%)


def test_arm_of() -> None:
    inside = next(u for u in USERS if assign(u, 0.1, "r-8"))
    outside = next(u for u in USERS if not assign(u, 0.1, "r-8"))
    kw = {"share": 0.1, "rollout_id": "r-8"}
    assert arm_of(inside, candidate_arm="canary", **kw) == "canary"
    assert arm_of(outside, candidate_arm="canary", **kw) == "live"
    assert arm_of(inside, candidate_arm="shadow", share=None, rollout_id="r-8") == "live"
    assert arm_of(inside, candidate_arm=None, share=None, rollout_id=None) == "live"


# -- rollout fields in model-update records --------------------------------------------


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "store"
    (root / "v000008").mkdir(parents=True)
    return root


def _update(store, **rollout):
    return make_update(
        version=8,
        seq=4,
        checkpoint_dir=store / "v000008",
        manifest_sha256="cd" * 32,
        metrics={"ndcg@10": 0.31},
        signer=SIGNER,
        **rollout,
    )


@pytest.mark.parametrize(
    ("rollout", "arm", "share", "served"),
    [
        ({}, "live", None, 1.0),
        ({"arm": "canary", "share": 0.1, "rollout_id": "r-8-1"}, "canary", 0.1, 0.1),
        ({"arm": "shadow", "rollout_id": "r-8-1"}, "shadow", None, 0.0),
        ({"arm": "live", "rollout_id": "r-8-1"}, "live", None, 1.0),
    ],
)
def test_update_records_with_and_without_rollout_fields(store, rollout, arm, share, served):
    upd = _update(store, **rollout)
    raw = upd.to_json()
    data = json.loads(raw)
    if not rollout:  # a plain record keeps its old shape
        assert not {"arm", "share", "rollout_id"} & set(data)
    got, _ = verify_update(raw, keys=KEYS, store_root=store)
    assert (got.arm, got.share, got.served_share) == (arm, share, served)
    assert got.rollout_id == rollout.get("rollout_id")
    assert parse_update(raw) == upd and parse_update(raw).to_json() == raw


@pytest.mark.parametrize(
    "change",
    [
        {"arm": "live", "share": None},
        {"arm": "shadow", "share": None},
        {"share": 0.5},
        {"rollout_id": "r-9-1"},
    ],
)
def test_a_tampered_rollout_field_is_refused(store, change):
    data = json.loads(_update(store, arm="canary", share=0.1, rollout_id="r-8-1").to_json())
    for k, v in change.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v
    with pytest.raises(UpdateRefused) as ei:
        verify_update(json.dumps(data), keys=KEYS, store_root=store)
    assert ei.value.reason == "bad_signature"


def test_rollout_fields_cannot_be_added_to_a_signed_live_record(store):
    data = json.loads(_update(store).to_json())
    data.update({"arm": "canary", "share": 0.1, "rollout_id": "r-8-1"})
    with pytest.raises(UpdateRefused) as ei:
        verify_update(json.dumps(data), keys=KEYS, store_root=store)
    assert ei.value.reason == "bad_signature"


@pytest.mark.parametrize(
    "fields",
    [
        {"arm": "canary", "share": 1.0, "rollout_id": "r"},  # a canary needs share < 1
        {"arm": "canary", "rollout_id": "r"},  # ... and a share
        {"arm": "canary", "share": 0.0, "rollout_id": "r"},
        {"arm": "canary", "share": 1.5, "rollout_id": "r"},
        {"arm": "canary", "share": True, "rollout_id": "r"},
        {"arm": "canary", "share": "0.1", "rollout_id": "r"},
        {"arm": "shadow", "share": 0.1, "rollout_id": "r"},  # a shadow takes no share
        {"arm": "live", "share": 0.5, "rollout_id": "r"},
        {"arm": "blue", "rollout_id": "r"},
        {"arm": "canary", "share": 0.1},  # no rollout id (the salt)
        {"arm": "canary", "share": 0.1, "rollout_id": "bad id/../x"},
        {"share": 0.1, "rollout_id": "r"},
    ],
)
def test_malformed_rollout_fields_are_bad_record(store, fields):
    data = {k: v for k, v in json.loads(_update(store).to_json()).items() if k != "signature"}
    signed = SIGNER.sign("model-update", {**data, **fields})  # validly signed, still refused
    with pytest.raises(UpdateRefused) as ei:
        verify_update(signed, keys=KEYS, store_root=store)
    assert ei.value.reason == "bad_record"
    with pytest.raises(UpdateRefused):
        make_update(
            version=8,
            seq=4,
            checkpoint_dir=store / "v000008",
            manifest_sha256="cd" * 32,
            metrics={},
            signer=SIGNER,
            arm=fields.get("arm", "live"),
            share=fields.get("share"),
            rollout_id=fields.get("rollout_id"),
        )


# -- decision records -----------------------------------------------------------------


def _decision(signer=SIGNER, decision="rollback"):
    return make_decision(
        "r-8-1",
        8,
        7,
        decision,
        {"cold": {"diff": -0.08, "lower": -0.12, "upper": -0.05}, "rule": "worse_cold"},
        signer,
        decided_at=1790000300.0,
    )


def test_a_decision_is_signed_and_verified(store):
    assert is_decision_record(json.loads(_decision()))
    assert not is_decision_record(json.loads(_update(store).to_json()))
    d = verify_decision(_decision(), KEYS)
    assert (d.rollout_id, d.candidate_version, d.incumbent_version) == ("r-8-1", 8, 7)
    assert d.decision == "rollback" and not d.keeps_candidate
    assert d.figures["rule"] == "worse_cold" and d.key_id == SIGNER.key_id
    assert verify_decision(_decision(decision="manual_promote"), KEYS).keeps_candidate


@pytest.mark.parametrize(
    "change",
    [
        {"decision": "promote"},
        {"candidate_version": 9},
        {"incumbent_version": 6},
        {"rollout_id": "r-9-1"},
        {"figures": {"rule": "non_inferior_cold"}},
        {"decided_at": 1790000400.0},
    ],
)
def test_an_altered_decision_is_refused(change):
    data = json.loads(_decision())
    data.update(change)
    with pytest.raises(DecisionRefused) as ei:
        verify_decision(json.dumps(data).encode(), KEYS)
    assert ei.value.reason == "bad_signature"


def test_a_decision_signed_by_another_key_or_unsigned_is_refused():
    with pytest.raises(DecisionRefused) as ei:
        verify_decision(_decision(OTHER), KEYS)
    assert ei.value.reason == "unknown_key"
    data = json.loads(_decision())
    del data["signature"]
    with pytest.raises(DecisionRefused) as ei:
        verify_decision(data, KEYS)
    assert ei.value.reason == "unsigned"


def test_a_signature_of_another_kind_is_not_a_decision(store):
    body = {k: v for k, v in json.loads(_decision()).items() if k not in ("signature", "key_id")}
    as_update = SIGNER.sign("model-update", body)  # the same bytes, signed as an update
    with pytest.raises(DecisionRefused) as ei:
        verify_decision(as_update, KEYS)
    assert ei.value.reason == "bad_signature"
    assert verify_decision(SIGNER.sign(DECISION_KIND, body), KEYS).decision == "rollback"
    # and a decision's signature does not pass for an update record
    upd = json.loads(_update(store).to_json())
    forged = {**upd, "signature": SIGNER.sign(DECISION_KIND, upd)["signature"]}
    with pytest.raises(UpdateRefused) as ei2:
        verify_update(forged, keys=KEYS, store_root=store)
    assert ei2.value.reason == "bad_signature"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"x" * (64 * 1024 + 1), "oversize"),
        (b"not json", "bad_record"),
        (b"[1, 2]", "bad_record"),
        (b'{"rollout_id": "r", "decision": "promote"}', "bad_record"),
    ],
)
def test_malformed_decisions(raw, reason):
    with pytest.raises(DecisionRefused) as ei:
        verify_decision(raw, KEYS)
    assert ei.value.reason == reason


def test_make_decision_refuses_an_unknown_decision():
    with pytest.raises(ValueError):
        _decision(decision="maybe")
    with pytest.raises(ValueError):  # figures must be finite to be signed
        make_decision("r", 8, 7, "promote", {"x": float("nan")}, SIGNER)
