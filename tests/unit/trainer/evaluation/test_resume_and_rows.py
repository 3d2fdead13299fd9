"""The evaluation's resumable splits and its rows without the language model's knowledge, on a
toy world with a hashing teacher (no model, seconds): an interrupted multi-split run, resumed,
gives the report of an uninterrupted one; text k-shot is :class:`TextKShot` over the chosen
teacher's stock vectors; the ID-only student reads no text."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

from tests.unit.trainer._world import FakeTeacher, synthetic_eval_world
from trainer.data import Interactions
from trainer.evaluation.baselines import TextKShot
from trainer.evaluation.evaluate import CELLS, EvalConfig, Evaluation
from trainer.evaluation.multisplit import data_fingerprint, run_splits, split_key


@pytest.fixture(scope="module")
def toy():
    return synthetic_eval_world()


def _config() -> EvalConfig:
    return EvalConfig(
        device="cpu",
        progress=False,
        student={"dim": 8, "max_len": 6, "dropout": 0.0},
        train={"epochs": 1, "max_prefix": 4, "extra_per_user": 0},
        teacher_first=1,
        teacher_random_more=0,
        kd_grid=[(1.0, 2.0)],
        kd_variants=[{"name": "kl"}],
        n_boot=50,
        sasrec={"epochs": 1, "dim": 8, "max_len": 6},
        ease_lambdas=[10.0],
    )


WALL_CLOCK = {"timing", "seconds", "train_seconds", "ms_per_user"}
"""The report's wall-clock figures: the only part in which two identical runs differ."""


def _without_timing(report):
    if isinstance(report, dict):
        return {k: _without_timing(v) for k, v in report.items() if k not in WALL_CLOCK}
    if isinstance(report, list):
        return [_without_timing(v) for v in report]
    return report


def _run(toy, splits_dir, teacher=None):
    return run_splits(
        _config(),
        [0, 1],
        None,
        load=lambda: toy,
        teachers={"minilm": teacher or FakeTeacher()},
        dataset="toy",
        splits_dir=splits_dir,
    )


def test_an_interrupted_run_resumed_gives_the_same_report(toy, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    whole = _run(toy, tmp_path / "whole")
    assert len(list((tmp_path / "whole").glob("split-seed*.json.gz"))) == 2

    run = Evaluation.run

    def dies_on_the_second_split(self):
        if self.cfg.seed == 1:
            raise KeyboardInterrupt  # the run is stopped part-way
        return run(self)

    monkeypatch.setattr(Evaluation, "run", dies_on_the_second_split)
    with pytest.raises(KeyboardInterrupt):
        _run(toy, tmp_path / "resumed")
    left = sorted(p.name for p in (tmp_path / "resumed").iterdir())
    assert len(left) == 1 and left[0].startswith("split-seed0-")  # one split, no temp file

    ran = []

    def counts(self):
        ran.append(self.cfg.seed)
        return run(self)

    monkeypatch.setattr(Evaluation, "run", counts)
    resumed = _run(toy, tmp_path / "resumed")
    assert ran == [1]  # the finished split was read back, not recomputed
    assert _without_timing(resumed) == _without_timing(whole)

    # a third run reads both splits and still gives the same report
    ran.clear()
    again = _run(toy, tmp_path / "resumed")
    assert ran == [] and _without_timing(again) == _without_timing(whole)


def test_a_damaged_or_foreign_split_file_is_recomputed(toy, tmp_path, monkeypatch):
    key = split_key(_config(), 0, data_fingerprint(*toy))
    (tmp_path / f"split-{key}.json.gz").write_text('{"format": 1, "key": "trunc')  # not gzip
    ran = []
    run = Evaluation.run

    def counts(self):
        ran.append(self.cfg.seed)
        return run(self)

    monkeypatch.setattr(Evaluation, "run", counts)
    run_splits(
        _config(),
        [0],
        None,
        load=lambda: toy,
        teachers={"minilm": FakeTeacher()},
        dataset="toy",
        splits_dir=tmp_path,
    )
    assert ran == [0]
    assert (
        json.loads(gzip.decompress((tmp_path / f"split-{key}.json.gz").read_bytes()))["key"] == key
    )
    # other data, other key: a split of another data set is never read for this one
    inter, items = toy
    other = Interactions(
        user=inter.user,
        item=inter.item[::-1].copy(),
        ts=inter.ts,
        event=inter.event,
        user_ids=inter.user_ids,
    )
    assert split_key(_config(), 0, data_fingerprint(other, items)) != key


class ShiftedTeacher(FakeTeacher):
    """Other text vectors for the same texts."""

    def encode(self, texts, progress=False):
        return super().encode([f"other {t}" for t in texts], progress)


@pytest.fixture(scope="module")
def two_evaluations(toy):
    torch.set_num_threads(1)
    out = []
    for teacher in (FakeTeacher(), ShiftedTeacher()):
        ev = Evaluation(_config(), load=lambda: toy, teacher=teacher, dataset="toy")
        ev.run()
        out.append(ev)
    return out


def test_the_new_rows_are_on_every_cell_of_the_same_splits(two_evaluations):
    ev = two_evaluations[0]
    report = ev.report()
    for row in ("text_kshot", "student_id_only", "teacher_minilm_text_kshot"):
        assert set(report["results"][row]) == set(CELLS)
    assert set(report["ce_minus_id_only"]) == set(CELLS)
    # text k-shot is TextKShot over the chosen teacher's stock vectors, on the same users
    kshot = TextKShot(ev.item_vecs)
    for part, cells in ev.data.sets.items():
        for c, es in cells.items():
            want = es.metrics(kshot.score([h[0] for h in es.histories]))
            got = ev.results["text_kshot"][part][c]
            assert all(np.array_equal(got[m], want[m]) for m in want)


def test_the_id_only_student_reads_no_text(two_evaluations):
    a, b = two_evaluations
    # other item text: the CE student changes, the ID-only student does not
    assert not np.array_equal(a.item_vecs, b.item_vecs)
    for c in ("k=1", "k=3", "k=5"):
        assert np.array_equal(
            a.results["student_id_only"]["test"][c]["ndcg@10"],
            b.results["student_id_only"]["test"][c]["ndcg@10"],
        )
    assert any(
        not np.array_equal(
            a.results["student_ce"]["test"][c]["ndcg@10"],
            b.results["student_ce"]["test"][c]["ndcg@10"],
        )
        for c in CELLS
    )
    # trained like the CE student, without id-dropout (no text path to train under the ids)
    assert a.curves["student_id_only"] and "student_id_only" in a.model_names()
