"""The teachers compared on the validation users of some splits, the winner alone on the rest
(``run_splits(teacher_seeds=...)``, ``coldstream evaluate --full``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from trainer.evaluation import multisplit
from trainer.evaluation.evaluate import VAL_CELLS, EvalConfig
from trainer.evaluation.multisplit import cfg_for_chosen, floors, teacher_comparison

pytestmark = pytest.mark.unit


def _cells(v: float) -> dict:
    return {c: {"ndcg@10": v} for c in (*VAL_CELLS, "cold_items_mixed")}


def _report(vals: dict[str, float]) -> dict:
    rows = {m: _cells(v) for m, v in vals.items()}
    return {"validation": rows, "results": rows}


def test_the_best_adapted_variant_pooled_over_the_compared_splits_is_chosen():
    a = _report(
        {
            "teacher_minilm_frozen": 0.20,
            "teacher_mpnet_frozen": 0.25,
            "teacher_mpnet_zero_shot": 0.9,  # never a candidate: not adapted
            "teacher_minilm_text_kshot": 0.9,
            "teacher_adapted": 0.9,
            "student_kd": 0.9,
        }
    )
    b = _report({"teacher_minilm_frozen": 0.30, "teacher_mpnet_frozen": 0.22})
    out = teacher_comparison([a, b], [0, 1])
    assert out["validation"] == {"teacher_minilm_frozen": 0.25, "teacher_mpnet_frozen": 0.235}
    assert out["chosen"] == {
        "teacher": "minilm",
        "variant": "frozen",
        "row": "teacher_minilm_frozen",
    }
    assert out["seeds"] == [0, 1]


def test_the_chosen_variant_becomes_the_only_teacher_of_the_other_splits():
    cfg = EvalConfig(teachers=["minilm", "mpnet"], teacher_path="/models/minilm", lora=True)
    mp = cfg_for_chosen(cfg, {"teacher": "mpnet", "variant": "frozen"})
    assert (mp.teachers, mp.teacher_path, mp.lora) == (["mpnet"], None, False)
    lo = cfg_for_chosen(replace(cfg, teacher_path=None), {"teacher": "minilm", "variant": "lora"})
    assert (lo.teachers, lo.lora) == (["minilm"], True)
    assert cfg_for_chosen(cfg, None) is cfg


def test_run_splits_compares_on_teacher_seeds_and_runs_the_winner_elsewhere(monkeypatch):
    seen: dict[int, EvalConfig] = {}

    def fake_run_one(cfg, seed, **_):
        seen[seed] = cfg
        vals = {"teacher_minilm_frozen": 0.2, "teacher_mpnet_frozen": 0.3}
        if len(cfg.teachers) == 1:
            vals = {f"teacher_{cfg.teachers[0]}_frozen": 0.3}
        return _report(vals), {}

    captured = {}

    def fake_combine(reports, arrays, seeds, cfg, *, comparison=None):
        captured.update(seeds=seeds, comparison=comparison, n=len(reports))
        return {"timing": {}}

    monkeypatch.setattr(multisplit, "run_one", fake_run_one)
    monkeypatch.setattr(multisplit, "combine", fake_combine)
    monkeypatch.setattr(multisplit, "data_fingerprint", lambda *_: "toy")
    cfg = EvalConfig(teachers=["minilm", "mpnet"], progress=False)
    multisplit.run_splits(cfg, [0, 1, 2], None, load=lambda: ("i", "t"), teacher_seeds=[0])
    monkeypatch.undo()
    assert seen[0].teachers == ["minilm", "mpnet"]
    assert seen[1].teachers == seen[2].teachers == ["mpnet"]
    assert captured["seeds"] == [0, 1, 2] and captured["n"] == 3
    assert captured["comparison"]["chosen"]["teacher"] == "mpnet"
    assert captured["comparison"]["seeds"] == [0]


def test_the_mpnet_floor_reads_the_comparison_when_the_pooled_rows_lack_it():
    rep = {
        "results": {"student_kd": {}},
        "validation": {},
        "kd_minus_baselines": {},
        "kd_minus_uniform": {
            c: {"mean": 0.0, "ci95": [-0.1, 0.1], "n_users": 1} for c in ("k=1", "cold_items")
        },
        "protocol": {"teacher": {"compared": ["minilm", "mpnet"]}},
        "teacher_comparison": {
            "seeds": [0],
            "validation": {"teacher_minilm_frozen": 0.26, "teacher_mpnet_frozen": 0.25},
        },
    }
    f = floors(rep)["mpnet_at_least_minilm_on_validation"]
    assert f["met"] is False and "splits [0]" in f["detail"]
    rep["teacher_comparison"]["validation"]["teacher_mpnet_frozen"] = np.float64(0.27)
    assert floors(rep)["mpnet_at_least_minilm_on_validation"]["met"] is True
