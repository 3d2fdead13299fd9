"""The multi-split machinery on a tiny synthetic data set with the real MiniLM teacher (LoRA
included, tiny): every model on every split, pooled figures over all test users of all splits,
per-split figures, paired bootstraps, floors, the written report and the resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.unit.trainer._world import synthetic_eval_world
from trainer.evaluation.evaluate import CELLS, EvalConfig, Evaluation
from trainer.evaluation.multisplit import mean_ci, run_splits, split_key
from trainer.teacher.vector_cache import CachedEncoder

pytestmark = pytest.mark.slow  # about 3 min on 2 busy CPUs (LoRA, SASRec, seven students x2)


@pytest.fixture(scope="module")
def teacher():
    from trainer.teacher.encoder import Teacher

    torch.set_num_threads(2)
    return Teacher(batch_size=32)


@pytest.fixture(scope="module")
def tiny():
    return synthetic_eval_world()


def _config(cache) -> EvalConfig:
    return EvalConfig(
        device="cpu",
        progress=False,
        student={"dim": 16, "max_len": 10, "dropout": 0.0},
        train={"epochs": 2, "max_prefix": 5, "extra_per_user": 1},
        teacher_first=2,
        teacher_random_more=1,
        kd_grid=[(1.0, 2.0)],
        n_boot=100,
        lora=True,
        lora_config={"epochs": 1, "max_examples": 32, "batch_size": 16},
        sasrec={"epochs": 2, "dim": 16, "max_len": 10},
        ease_lambdas=[10.0, 100.0],
        cache_dir=str(cache),
    )


@pytest.fixture(scope="module")
def two_splits(teacher, tiny, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("report") / "r.json"
    report = run_splits(
        _config(cache),
        [0, 1],
        out,
        load=lambda: tiny,
        teachers={"minilm": teacher},
        dataset="tiny",
        splits_dir=cache / "splits",
    )
    return report, cache, out


def test_every_model_on_every_split_pooled_over_all_test_users(two_splits):
    report, _, _ = two_splits
    assert report["splits"] == [0, 1] and list(report["per_split"]) == ["0", "1"]
    for key in ("protocol", "results", "validation", "kd_minus_ce", "kd_minus_uniform", "timing"):
        assert key in report  # today's keys stay
    rows = set(report["results"])
    assert {"popularity", "itemknn", "ease", "sasrec", "student_ce", "student_uniform"} <= rows
    assert {"teacher_minilm_zero_shot", "teacher_minilm_frozen", "teacher_minilm_lora"} <= rows
    splits = report["protocol"]["splits"]
    for c in CELLS:
        n = sum(splits[s]["test_users_per_cell"][c] for s in ("0", "1"))
        assert (
            report["kd_minus_ce"][c]["n_users"] == n == report["results_ci"]["sasrec"][c]["n_users"]
        )
        assert report["protocol"]["test_users_per_cell"][c] == n
        # the pooled mean is the user-weighted mean of the per-split means
        per = [report["per_split"][s]["results"]["itemknn"][c] for s in ("0", "1")]
        w = [splits[s]["test_users_per_cell"][c] for s in ("0", "1")]
        assert report["results"]["itemknn"][c]["ndcg@10"] == pytest.approx(
            np.average(per, weights=w), abs=2e-5
        )
        ci = report["results_ci"]["student_kd"][c]
        assert ci["ci95"][0] <= ci["mean"] <= ci["ci95"][1]
        assert report["kd_minus_best_baseline"][c]["baseline"] in (
            "popularity",
            "itemknn",
            "ease",
            "sasrec",
            "text_kshot",
        )
    assert set(report["kd_minus_baselines"]) == {
        "popularity",
        "itemknn",
        "ease",
        "sasrec",
        "text_kshot",
    }
    assert {"student_id_only", "text_kshot"} <= rows and set(report["ce_minus_id_only"]) == set(
        CELLS
    )
    assert set(report["kd_variants_minus_uniform"]) == {"student_kd_kl", "student_kd_kl+rank+init"}
    f = report["floors"]
    assert {"kd_beats_itemknn", "kd_beats_ease", "kd_beats_sasrec", "kd_beats_uniform_k=1"} <= set(
        f
    )
    assert f["mpnet_at_least_minilm_on_validation"]["met"] is None  # no mpnet in this run
    for floor in f.values():
        assert floor["met"] in (True, False, None) and floor["detail"]
    # a LoRA adapter per split, kept in the cache; item-side, its item vectors chosen on
    # validation among those tried
    assert len(list((two_splits[1] / "adapters").glob("lora-minilm-seed*.safetensors"))) == 2
    lora = report["protocol"]["teacher"]["compared"]["minilm"]["lora"]
    assert lora["side"] == "items"
    tried = lora["item_vectors_tried"]
    assert set(tried) == {"0.5", "1.0", "concat"}
    assert tried[lora["item_vectors"]] == max(tried.values())


def test_the_report_is_written_with_its_plots(two_splits):
    report, _, out = two_splits
    on_disk = json.loads(out.read_text())
    assert on_disk["splits"] == [0, 1] and set(on_disk["per_split"]) == {"0", "1"}
    md = out.with_suffix(".md").read_text()
    assert "## Over splits" in md and "## Floors" in md and "(n=" in md
    assert out.with_suffix(".png").is_file() and (out.parent / "r-splits.png").is_file()


def test_a_finished_split_is_read_back_not_recomputed(two_splits, teacher, tiny, monkeypatch):
    report, cache, _ = two_splits
    assert len(list((cache / "splits").glob("split-*.json.gz"))) == 2
    monkeypatch.setattr(Evaluation, "run", lambda self: pytest.fail("recomputed a split"))
    again = run_splits(
        _config(cache),
        [0, 1],
        None,
        load=lambda: tiny,
        teachers={"minilm": teacher},
        dataset="tiny",
        splits_dir=cache / "splits",
    )
    assert again["results"] == report["results"] and again["kd_minus_ce"] == report["kd_minus_ce"]
    assert split_key(_config(cache), 0) != split_key(_config(cache), 1)


def test_mean_ci_and_combine_on_hand_made_splits():
    x = np.array([0.0, 1.0] * 50)
    ci = mean_ci(x, n_boot=500, seed=0)
    assert ci["mean"] == 0.5 and ci["n_users"] == 100 and ci["ci95"][0] < 0.5 < ci["ci95"][1]
    assert mean_ci(np.zeros(0), n_boot=10, seed=0)["n_users"] == 0


def test_the_encoder_cache_encodes_each_text_once(teacher, tmp_path):
    enc = CachedEncoder(teacher, tmp_path, "enc-test")
    a = enc.encode(["one", "two", "one"])
    assert enc.misses == 2 and enc.hits == 1
    again = CachedEncoder(teacher, tmp_path, "enc-test")
    b = again.encode(["two", "one"])
    assert again.misses == 0 and np.array_equal(b, a[[1, 0]])
    assert np.allclose(a[0], teacher.encode(["one"])[0], atol=1e-6)


def test_the_split_key_spells_out_the_lora_settings_in_force():
    from dataclasses import replace

    from trainer.teacher.lora import LoraConfig

    cfg = EvalConfig(lora=True)
    default = LoraConfig()
    # the defaults are part of the key: written out or left implicit, the same key ...
    same = replace(cfg, lora_config={"epochs": default.epochs, "side": default.side})
    assert split_key(same, 0, "d") == split_key(cfg, 0, "d")
    # ... and another setting, another key (so a changed default is never read back as new)
    other = replace(cfg, lora_config={"epochs": default.epochs + 1})
    assert split_key(other, 0, "d") != split_key(cfg, 0, "d")
