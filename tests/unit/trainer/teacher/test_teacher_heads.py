"""The adapted teacher head beside the checkpoints (save/load) and the scorer that uses it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.unit.trainer._world import FakeTeacher, make_world
from trainer.teacher.adapt import TeacherHead
from trainer.teacher.heads import (
    TeacherScorer,
    load_teacher_head,
    save_teacher_head,
    teacher_head_path,
)


def test_teacher_head_round_trip(tmp_path):
    torch.manual_seed(0)
    head = TeacherHead(8)
    for p in head.parameters():
        torch.nn.init.normal_(p)
    path = save_teacher_head(tmp_path, 3, head, 0.25)
    assert (
        path == tmp_path / "teacher-heads" / "v000003.safetensors" == teacher_head_path(tmp_path, 3)
    )
    got, tau = load_teacher_head(tmp_path, None)
    assert tau == 0.25
    x, v = np.random.rand(4, 16).astype(np.float32), np.random.rand(5, 8).astype(np.float32)
    assert np.allclose(got.score(x, v), head.score(x, v), atol=1e-6)
    assert load_teacher_head(tmp_path, 4) is None
    assert load_teacher_head(tmp_path / "empty", None) is None
    assert not list(tmp_path.glob("teacher-heads/.tmp-*"))


@pytest.fixture(scope="module")
def scorer_world():
    ids, text = make_world()
    rng = np.random.default_rng(3)
    histories = [
        rng.choice(len(ids), size=int(rng.integers(1, 6)), replace=False) for _ in range(120)
    ]
    targets = [rng.choice(len(ids), size=3, replace=False) for _ in histories]
    return ids, text, histories, targets


def test_a_fitted_head_saved_and_loaded_scores_identically(scorer_world, tmp_path):
    ids, text, histories, targets = scorer_world
    teacher = FakeTeacher()
    fitting = TeacherScorer(teacher, ids, text)
    fitting.fit_head(histories, targets, fitting.features(histories))
    assert fitting.fitted and fitting.head is not None and fitting.tau > 0
    save_teacher_head(tmp_path, 2, TeacherHead(text.shape[1]), 9.0)  # an older version
    save_teacher_head(tmp_path, 7, fitting.head, fitting.tau)
    head, tau = load_teacher_head(tmp_path)  # the newest
    assert tau == fitting.tau
    loaded = TeacherScorer(teacher, ids, text, head, tau)
    expected = fitting(histories)
    assert expected.shape == (len(histories), len(ids))
    assert np.allclose(loaded(histories), expected, atol=1e-5)
    assert not loaded.fitted  # given, not fitted
    assert load_teacher_head(tmp_path, 2)[1] == 9.0


def test_without_a_head_the_scorer_is_the_zero_shot_teacher(scorer_world):
    ids, text, histories, _ = scorer_world
    scorer = TeacherScorer(FakeTeacher(), ids, text, tau=2.0)
    feats = scorer.features(histories)
    assert feats.shape == (len(histories), 2 * text.shape[1])
    assert np.allclose(scorer(histories), feats[:, : text.shape[1]] @ text.T / 2.0)
    assert np.allclose(scorer(histories, feats), scorer(histories))
