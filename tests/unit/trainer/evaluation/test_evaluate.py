"""The cold-start protocol's steps (:class:`trainer.evaluation.evaluate.Evaluation`) on a tiny synthetic
data set with the real MiniLM teacher: a few seconds, every model, cell and report key."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.unit.trainer._world import synthetic_eval_world
from trainer.evaluation.baselines import Popularity
from trainer.evaluation.evaluate import CELLS, MODELS, EvalConfig, Evaluation
from trainer.student.features import teacher_positions
from trainer.teacher.adapt import zero_shot_logits
from trainer.teacher.encoder import teacher_features

REPORT_KEYS = [
    "protocol",
    "results",
    "validation",
    "kd_minus_ce",
    "kd_minus_uniform",
    "ce_minus_id_only",
    "timing",
    "curves",
]
METRICS = {"ndcg@10", "recall@10", "hr@10", "ndcg@20", "recall@20", "hr@20"}


@pytest.fixture(scope="module")
def teacher():
    from trainer.teacher.encoder import Teacher

    torch.set_num_threads(2)
    return Teacher(batch_size=32)


@pytest.fixture(scope="module")
def tiny():
    """95 users with data (the generator's users without events dropped), 120 items."""
    return synthetic_eval_world()


def _config(**over) -> EvalConfig:
    cfg = EvalConfig(
        device="cpu",
        progress=False,
        student={"dim": 16, "max_len": 10, "dropout": 0.0},
        train={"epochs": 2, "max_prefix": 5, "extra_per_user": 1},
        teacher_first=2,
        teacher_random_more=1,
        kd_grid=[(1.0, 2.0), (0.5, 1.0)],
        n_boot=50,
        sasrec={"epochs": 2, "dim": 16, "max_len": 10},
        ease_lambdas=[10.0, 100.0],
    )
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def test_the_steps_report_every_model_and_cell(teacher, tiny, tmp_path):
    ev = Evaluation(
        _config(cache_dir=str(tmp_path)), load=lambda: tiny, teacher=teacher, dataset="tiny"
    )
    report = ev.run()
    assert list(report) == REPORT_KEYS
    json.dumps(report, allow_nan=False)  # what write_coldstart_report writes: plain, finite
    rows = [
        *MODELS,
        "teacher_minilm_zero_shot",
        "teacher_minilm_text_kshot",
        "teacher_minilm_frozen",
    ] + [
        "student_kd_kl",
        "student_kd_kl+rank+init",
    ]
    for part in ("results", "validation"):
        assert sorted(report[part]) == sorted(rows)
        for model, cells in report[part].items():
            assert list(cells) == list(CELLS), model
            for cell, metrics in cells.items():
                assert set(metrics) == METRICS and all(0 <= v <= 1 for v in metrics.values()), (
                    model,
                    cell,
                )
    # the chosen teacher's rows are the generic ones
    assert report["results"]["teacher_adapted"] == report["results"]["teacher_minilm_frozen"]
    assert report["results"]["teacher_zero_shot"] == report["results"]["teacher_minilm_zero_shot"]
    assert report["results"]["text_kshot"] == report["results"]["teacher_minilm_text_kshot"]
    p, d = report["protocol"], ev.data
    assert p["dataset"] == "tiny" and p["users"] == 95 and p["items"] == 120
    assert p["split"]["train_users"] + p["split"]["val_users"] + p["split"]["test_users"] == 95
    assert p["test_users_per_cell"] == {c: len(es.histories) for c, es in d.sets["test"].items()}
    assert all(n > 0 for n in p["test_users_per_cell"].values())
    assert p["teacher"]["chosen"] == {"teacher": "minilm", "variant": "frozen"}
    assert "item text" in p["item_text"] and "(" in p["item_text"]
    tpos = teacher_positions(d.train_seqs, first=2, random_more=1, max_prefix=5, seed=0)
    assert (
        p["teacher"]["teacher_prefixes"] == len(tpos) == len(ev.tfeats) and p["teacher"]["tau"] > 0
    )
    assert p["train"]["epochs"] == 2 and p["train"]["teacher"] == "none"
    # EASE's lambda: the best on validation
    ease = p["baselines"]["ease"]
    assert p["baselines"]["ease_chosen"]["lambda"] == max(ease, key=lambda g: g["val"])["lambda"]
    grid = p["kd_selection"]["student_kd"]
    assert [(g["variant"], g["alpha"], g["T"]) for g in grid] == [
        (v, a, t) for v in ("kl", "kl+rank+init") for a, t in ((1.0, 2.0), (0.5, 1.0))
    ]
    best = max(grid, key=lambda g: g["val"])
    assert p["kd_selection"]["student_kd_chosen"] == {
        "variant": best["variant"],
        "alpha": best["alpha"],
        "T": best["T"],
    }
    un = p["kd_selection"]["student_uniform"]
    best_u = max(un, key=lambda g: g["val"])
    assert p["kd_selection"]["student_uniform_chosen"] == {
        "alpha": best_u["alpha"],
        "T": best_u["T"],
    }
    stages = list(report["timing"]["stages_seconds"])
    assert stages[:3] == ["data", "baselines", "sasrec"]
    assert (
        stages[-1] == "train student_uniform a=0.5 T=1.0"
        and len(stages) == 3 + 2 + 1 + 1 + 1 + 4 + 2  # CE, then ID-only, then KD and uniform
    )
    assert stages[6:8] == ["train student_ce", "train student_id_only"]
    assert {"teacher_adapted", "student_ce", "student_kd", "student_uniform", "sasrec"} <= set(
        report["curves"]
    )
    for cell in CELLS:
        assert set(report["kd_minus_ce"][cell]) >= {"mean", "ci95"}

    # a second run reads the teacher's outputs from the cache the first one wrote
    [cache] = [d for d in tmp_path.glob("enc-*") if d.is_dir()]
    assert list(cache.glob("keys-*.npy")) and list(cache.glob("vectors-*.npy"))
    encoded = teacher.texts_encoded
    again = Evaluation(_config(cache_dir=str(tmp_path)), load=lambda: tiny, teacher=teacher)
    again.prepare_data()
    again.teacher_runs()
    # every text came from the cache but the k=5 histories of the uncached timing probe
    probe = len(again.data.sets["test"]["k=5"].histories)
    assert teacher.texts_encoded - encoded == probe
    run = again.runs["minilm"]
    assert np.array_equal(run.item_vecs, ev.item_vecs) and np.array_equal(run.tfeats, ev.tfeats)
    assert np.array_equal(
        again.results["teacher_minilm_zero_shot"]["test"]["k=3"]["ndcg@10"],
        ev.results["teacher_minilm_zero_shot"]["test"]["k=3"]["ndcg@10"],
    )


def test_each_step_fills_what_the_next_one_reads(teacher, tiny):
    ev = Evaluation(_config(), load=lambda: tiny, teacher=teacher)
    ev.prepare_data()
    d = ev.data
    assert not set(d.train_u) & set(d.val_u) and not set(d.train_u) & set(d.test_u)
    assert not any(d.cold[s[0]].any() for s in d.train_seqs)  # cold items never trained on
    assert ((d.id_index < 0) == d.cold).all()

    ev.baselines()
    pop = Popularity(d.n_items, seed=0).learn([s[0] for s in d.train_seqs])
    es = d.sets["test"]["k=1"]
    direct = es.metrics(pop.score([h[0] for h in es.histories]))
    assert np.array_equal(ev.results["popularity"]["test"]["k=1"]["ndcg@10"], direct["ndcg@10"])
    assert {"itemknn", "ease", "sasrec"} <= set(ev.results)

    ev.teacher_runs()
    run = ev.runs["minilm"]
    assert run.item_vecs.shape == (d.n_items, teacher.dim)
    es = d.sets["val"]["cold_items"]
    feats = teacher_features(teacher, run.item_vecs, d.items.texts, [h[0] for h in es.histories])
    assert np.allclose(run.feats["val"]["cold_items"], feats, atol=1e-5)
    assert run.feats["test"]["cold_items_mixed"] is run.feats["test"]["cold_items"]
    zs = es.metrics(zero_shot_logits(feats, run.item_vecs))
    assert np.allclose(
        ev.results["teacher_minilm_zero_shot"]["val"]["cold_items"]["ndcg@10"], zs["ndcg@10"]
    )
    assert set(run.variants) == {"frozen"} and run.ms_per_user > 0

    ev.choose_teacher()
    assert ev.chosen == ("minilm", "frozen")
    assert ev.teacher_logits.shape == (len(ev.tpos), d.n_items) and ev.tau > 0 and ev.perplexity > 1

    ev.student_examples()
    kd_rows = ev.ex.kd_row[ev.ex.kd_row >= 0]
    assert len(kd_rows) == len(set(ev.tpos) & set(ev.positions))
    assert len(ev.ex.target) == len(ev.positions)
    model, curve, val = ev.train("model", 1.0, 2.0, "kd")
    assert len(curve) == 2 and val == max(r["val"] for r in curve) and curve[0]["kd"] > 0
    assert val == pytest.approx(ev.student_val_score(model))  # the best epoch's weights
    variant = {"name": "r", "rank_weight": 1.0, "rank_kind": "dllm2rec", "rank_k": 5, "init": True}
    model2, curve2, _ = ev.train("model", 1.0, 2.0, "kd+rank", variant)
    assert curve2[0]["loss"] > curve[0]["ce"]  # the ranking term is in the loss
