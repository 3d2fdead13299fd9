"""The sampled-vs-full comparison (:mod:`trainer.evaluation.softmax_compare`) on a small synthetic world
with the real MiniLM teacher: with every item a negative and the whole catalogue as the
teacher's top-K the two paths are the same computation, so every difference is ~0."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.data.synthetic import SyntheticConfig, synthetic_dataset
from trainer.evaluation.softmax_compare import (
    CELLS,
    STUDENTS,
    CompareConfig,
    compare,
    markdown,
    split,
)


def test_split_is_the_one_coldstream_evaluate_makes():
    from trainer.evaluation.evaluate import EvalData

    inter, items = synthetic_dataset(SyntheticConfig(n_users=80, n_items=200, n_events=4000))
    ours = split(inter, items, seed=3, cold_share=0.1)
    theirs = EvalData.split(inter, items, seed=3, cold_share=0.1)
    assert np.array_equal(ours.cold, theirs.cold) and np.array_equal(ours.id_index, theirs.id_index)
    for part in ("val", "test"):
        for c in CELLS:
            assert np.array_equal(ours.sets[part][c].users, theirs.sets[part][c].users)


def _tiny(tmp_path, *, epochs: int, **over) -> CompareConfig:
    """A comparison small enough for the synthetic world of these tests."""
    return CompareConfig(
        item_cache=str(tmp_path / "cache"),
        train={"max_prefix": 6, "extra_per_user": 0, "epochs": epochs, "id_dropout": 0.0},
        student={"dim": 16, "max_len": 10, "dropout": 0.0},
        teacher_first=2,
        teacher_random_more=0,
        kd_grid=[(1.0, 2.0)],
        n_boot=200,
        progress=False,
        **over,
    )


@pytest.mark.slow
def test_exact_sampled_settings_make_the_two_paths_agree(tmp_path):
    inter, items = synthetic_dataset(
        SyntheticConfig(n_users=70, n_items=120, n_events=2500, n_topics=8, seed=2)
    )
    cfg = _tiny(
        tmp_path,
        epochs=2,
        negatives=-1,  # every item once: the sampled losses are the full ones
        teacher_topk=120,  # the whole catalogue
    )
    report = compare(cfg, data=(inter, items))
    assert set(report["ndcg@10"]) == {*STUDENTS, "kd_sampled_tail", "kd_sampled_renorm"}
    # no tail (the whole catalogue in the top-K): the three KD variants are one loss
    for kind in ("ce", "kd", "kd_tail", "kd_renorm"):
        for c in CELLS:
            r = report["sampled_minus_full"][kind][c]
            assert abs(r["mean"]) < 0.02, (kind, c, r)
            assert r["ci95"][0] <= r["mean"] <= r["ci95"][1]
    assert report["protocol"]["teacher"]["topk_teacher_mass"] == pytest.approx(1.0, abs=1e-4)
    assert report["kd_chosen"]["kd_full"]["alpha"] == 1.0
    assert "| kd: sampled - full |" in markdown(report)


@pytest.mark.slow
def test_splits_are_pooled_over_every_test_user_of_every_split(tmp_path):
    from trainer.evaluation.softmax_compare import compare_splits

    inter, items = synthetic_dataset(
        SyntheticConfig(n_users=70, n_items=120, n_events=2500, n_topics=8, seed=2)
    )
    cfg = _tiny(tmp_path, epochs=1, negatives=16, teacher_topk=10, ablations=("renorm",))
    report = compare_splits(cfg, [0, 1], data=(inter, items))
    splits = report["per_split"]
    assert [s["seed"] for s in splits] == [0, 1] and report["splits"] == [0, 1]
    for c in CELLS:
        n = [s["sampled_minus_full"]["kd"][c]["n_users"] for s in splits]
        pooled = report["sampled_minus_full"]["kd"][c]
        assert pooled["n_users"] == sum(n) == report["protocol"]["test_users_per_cell"][c]
        # the pooled mean is the user-weighted mean of the splits' means
        want = sum(
            s["sampled_minus_full"]["kd"][c]["mean"] * k for s, k in zip(splits, n, strict=True)
        ) / sum(n)
        assert pooled["mean"] == pytest.approx(want, abs=1e-4)
        means = [s["ndcg@10"]["ce_full"][c] for s in splits]
        assert report["ndcg@10"]["ce_full"][c] == pytest.approx(
            sum(m * k for m, k in zip(means, n, strict=True)) / sum(n), abs=1e-4
        )
    assert set(report["sampled_minus_full"]) == {"ce", "kd", "kd_renorm"}
