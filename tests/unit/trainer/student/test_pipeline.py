"""The distillation pipeline's stages (:mod:`trainer.student.pipeline`) on toy worlds, and that
``fit``, the trainer service's cycle and the evaluation train through the same stages."""

from __future__ import annotations

import copy
import sys
from dataclasses import FrozenInstanceError, asdict

import numpy as np
import pytest
import torch

from coldstream.core.checkpoint import load_checkpoint
from coldstream.core.student import StudentConfig
from tests.unit.trainer._world import (
    FakeTeacher,
    cosine_scorer,
    make_buffer,
    make_world,
    random_checkpoint,
    toy_sequences,
    toy_world,
    users_with_events,
)
from trainer.student import pipeline
from trainer.student.training import TrainConfig, prefix_positions
from trainer.teacher.adapt import TeacherHead
from trainer.teacher.topk import TopK

N = 30


def _inputs(text: np.ndarray, n: int = N) -> pipeline.StudentInputs:
    return pipeline.StudentInputs(
        text,
        np.arange(n),
        np.ones(n, bool),
        StudentConfig(n_items=n, text_dim=text.shape[1], dim=16, max_len=8, dropout=0.0),
    )


def _tc(**over) -> TrainConfig:
    return TrainConfig(
        **{"epochs": 2, "batch_size": 64, "lr": 1e-2, "seed": 0, "device": "cpu", **over}
    )


def test_prefixes_are_the_training_prefixes_and_examples_point_to_the_teachers_rows():
    seqs = toy_sequences(n_users=20, n_items=N, length=12)
    spec = pipeline.PrefixSpec(max_prefix=6, extra_per_user=2, seed=3)
    pos = pipeline.prefixes(seqs, spec)
    pairs = pipeline.as_pairs(pos)
    assert pairs == prefix_positions(seqs, max_prefix=6, extra_per_user=2, seed=3)
    assert len(pairs) == 20 * (6 + 2)
    assert pipeline.PrefixSpec.of(TrainConfig(max_prefix=6, extra_per_user=2, seed=3)) == spec
    assert pipeline.PrefixSpec.of(TrainConfig(seed=3), seed=9).seed == 9
    with pytest.raises(FrozenInstanceError):
        spec.seed = 1  # type: ignore[misc]

    plain = pipeline.examples(seqs, pos, max_len=4)
    ex = plain.examples
    assert len(plain) == len(pairs) and ex.width == 4
    assert (ex.kd_row == -1).all() and plain.teacher_positions is None
    for e in (0, 7, len(pairs) - 1):
        u, t = pairs[e]
        assert int(ex.target[e]) == seqs[u][0][t]  # the prefix seq[:t] predicts seq[t]
        idx, _, mask = ex.batch(torch.tensor([e]))
        assert idx[0][mask[0]].tolist() == seqs[u][0][max(0, t - 4) : t].tolist()

    teacher = pairs[::3]  # the teacher scored every third prefix
    kd = pipeline.examples(seqs, pairs, max_len=4, teacher_positions=teacher).examples
    rows = kd.kd_row
    assert int((rows >= 0).sum()) == len(teacher)
    for e in np.flatnonzero(rows.numpy() >= 0):
        assert teacher[int(rows[e])] == pairs[e]
    assert torch.equal(kd.target, ex.target)


def test_teacher_targets_are_dense_on_the_full_path_and_the_top_k_on_the_sampled_one():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    items = rng.standard_normal((40, 8)).astype(np.float32)
    feats = rng.standard_normal((12, 16)).astype(np.float32)
    head = TeacherHead(8).eval()
    with torch.no_grad():  # a head that is not the zero-shot teacher
        for p in head.parameters():
            p.add_(0.1 * torch.randn_like(p))
    scores = pipeline.HeadScores(head, feats, items, tau=0.5)
    pos = [(u, 1) for u in range(12)]
    full = pipeline.teacher_targets(scores, pos, pipeline.TargetSpec("full"))
    assert isinstance(full.logits, torch.Tensor) and full.logits.dtype == torch.float32
    assert full.logits.shape == (12, 40) and len(full) == 12 and full.positions is pos
    assert torch.allclose(full.logits, torch.as_tensor(head.score(feats, items) / 0.5))
    top = pipeline.teacher_targets(scores, pos, pipeline.TargetSpec("sampled", topk=5))
    assert isinstance(top.logits, TopK) and top.logits.ids.shape == (12, 5)
    assert torch.allclose(top.logits.logits, full.logits.topk(5, dim=1).values, atol=1e-5)

    # the spec of a training configuration: its path, its K, the tail only for kd_outside=tail
    tail = pipeline.TargetSpec.of(
        _tc(softmax="sampled", kd_outside="tail", teacher_topk=7), 40, 3.0
    )
    assert tail == pipeline.TargetSpec("sampled", 7, (3.0,))
    assert pipeline.TargetSpec.of(_tc(), 40, 3.0) == pipeline.TargetSpec("full", 100, ())
    assert pipeline.TargetSpec.of(_tc(full_softmax_max_items=10), 40, 3.0).softmax == "sampled"


def test_distillation_sets_the_kd_fields_of_a_training_configuration():
    tc = _tc(rank_weight=0.3, rank_kind="bpr", rank_k=7)
    kd = pipeline.Distillation("model", 0.5, 3.0).config(tc)
    assert (kd.teacher, kd.alpha, kd.temperature) == ("model", 0.5, 3.0)
    assert (kd.rank_weight, kd.rank_kind, kd.rank_k) == (0.3, "bpr", 7)  # kept: none given
    ranked = pipeline.Distillation("model", 1.0, 2.0, 1.0, "dllm2rec", 5).config(tc)
    assert (ranked.rank_weight, ranked.rank_kind, ranked.rank_k) == (1.0, "dllm2rec", 5)
    none = pipeline.NO_KD.config(kd)
    assert asdict(none) == {**asdict(kd), "teacher": "none", "alpha": 0.0, "temperature": 1.0}
    assert tc.teacher == "none" and tc.alpha == 0.0  # a copy, not the configuration changed


def test_kd_from_a_peaked_teacher_differs_from_a_uniform_one():
    seqs, text, pos, _, peaked = toy_world(N)
    data = pipeline.examples(seqs, pos, max_len=8, teacher_positions=pos)
    uniform = torch.zeros_like(peaked)
    kd = pipeline.Distillation("model", 1.0, 1.0)
    runs = {
        name: pipeline.train(
            data,
            _inputs(text),
            _tc(),
            kd=kd,
            targets=pipeline.TeacherTargets(pos, logits),
            progress=False,
        )
        for name, logits in (("peaked", peaked), ("uniform", uniform))
    }
    p, u = runs["peaked"].curve, runs["uniform"].curve
    assert p[0]["kd"] != pytest.approx(u[0]["kd"], rel=0.05)
    # the peaked teacher agrees with the labels, the uniform one pulls away from them
    assert p[-1]["ce"] < u[-1]["ce"]
    sp, su = runs["peaked"].model.state_dict(), runs["uniform"].model.state_dict()
    assert any(not torch.equal(sp[k], su[k]) for k in sp)
    # the uniform control (equal logits) is the model teacher with all-zero logits
    control = pipeline.train(
        data, _inputs(text), _tc(), kd=pipeline.Distillation("uniform", 1.0, 1.0), progress=False
    )
    assert [r["loss"] for r in control.curve] == [r["loss"] for r in u]
    # CE only: no KD term at all
    ce = pipeline.train(data, _inputs(text), _tc(), kd=pipeline.NO_KD, progress=False)
    assert all(r["kd"] == 0.0 for r in ce.curve) and ce.curve[0]["ce"] == pytest.approx(
        ce.curve[0]["loss"]
    )


def test_train_keeps_the_best_epoch_and_stops_early():
    seqs, text, pos, _, _ = toy_world(N)
    data = pipeline.examples(seqs, pos, max_len=8)
    script = iter([0.1, 0.5, 0.2, 0.3, 0.9])
    states: list[dict] = []

    def validate(model) -> float:
        states.append(copy.deepcopy(model.state_dict()))
        return next(script)

    out = pipeline.train(
        data, _inputs(text), _tc(epochs=5, patience=2), validate=validate, progress=False
    )
    # epochs 3 and 4 are worse than epoch 2: patience 2 stops after epoch 4, before the 0.9
    assert out.epochs == 4 and [r["val"] for r in out.curve] == [0.1, 0.5, 0.2, 0.3]
    assert out.val == 0.5
    best = out.model.state_dict()
    assert all(torch.equal(best[k], states[1][k]) for k in best)
    assert not all(torch.equal(best[k], states[3][k]) for k in best)
    assert next(out.model.parameters()).device.type == "cpu" and not out.model.training


def test_train_gives_the_targets_to_a_model_teacher_only(monkeypatch):
    seqs, text, pos, _, tl = toy_world(N)
    seen: list = []
    real = pipeline.train_student

    def spy(*args, **kwargs):
        seen.append(kwargs["teacher_logits"])
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "train_student", spy)
    data = pipeline.examples(seqs, pos, max_len=8, teacher_positions=pos)
    targets = pipeline.TeacherTargets(pos, tl)
    for kind in ("model", "uniform", "none"):
        pipeline.train(
            data,
            _inputs(text),
            _tc(epochs=1),
            kd=pipeline.Distillation(kind, 1.0, 2.0),
            targets=targets,
            progress=False,
        )
    assert seen[0] is tl and seen[1] is None and seen[2] is None
    with pytest.raises(ValueError, match="no teacher rows"):
        pipeline.train(
            pipeline.examples(seqs, pos, max_len=8),
            _inputs(text),
            _tc(epochs=1),
            kd=pipeline.Distillation("model", 1.0, 2.0),
            targets=targets,
            progress=False,
        )


def test_fit_the_cycle_and_the_evaluation_run_the_same_stages(tmp_path, monkeypatch):
    """Each stage is called from fitting.py, redistill.py and evaluate.py (the teacher's
    targets: from the first two; the evaluation's chosen head gives its logits itself)."""
    from trainer.data.synthetic import SyntheticConfig, synthetic_dataset
    from trainer.evaluation.evaluate import EvalConfig, Evaluation
    from trainer.service.redistill import CycleConfig, cycle_train_config, redistill
    from trainer.student.fitting import fit

    callers: dict[str, set[str]] = {}

    def spy(name):
        real = getattr(pipeline, name)

        def wrapped(*args, **kwargs):
            callers.setdefault(name, set()).add(sys._getframe(1).f_code.co_filename)
            return real(*args, **kwargs)

        monkeypatch.setattr(pipeline, name, wrapped)

    for name in ("prefixes", "examples", "teacher_targets", "train"):
        spy(name)

    inter, items = synthetic_dataset(
        SyntheticConfig(n_users=60, n_items=80, n_events=1500, n_topics=5)
    )
    path = fit(
        inter,
        items,
        {
            "train": {"epochs": 1, "max_prefix": 5, "extra_per_user": 1},
            "device": "cpu",
            "head_epochs": 1,
            "teacher_prefixes_per_user": 6,
        },
        store_root=tmp_path / "fit",
        progress=False,
        teacher=FakeTeacher(),
    )
    ck = load_checkpoint(path)
    assert ck.metrics["teacher_prefixes"] > 0 and ck.metrics["epochs"] == 1

    ids, text = make_world()
    cycle_ck = load_checkpoint(random_checkpoint(tmp_path / "svc", ids, text))
    cfg = CycleConfig(teacher_prefixes=50, train=cycle_train_config(epochs=1, device="cpu"))
    res = redistill(
        cycle_ck,
        make_buffer(ids, n_users=60, seed=4),
        new_items={},
        scorer=cosine_scorer(text),
        config=cfg,
    )
    assert res.metrics["teacher_prefixes"] == 50

    inter = users_with_events(inter)
    ev = Evaluation(
        EvalConfig(
            device="cpu",
            progress=False,
            student={"dim": 16, "max_len": 10, "dropout": 0.0},
            train={"epochs": 1, "max_prefix": 5, "extra_per_user": 1},
            teacher_first=2,
            teacher_random_more=1,
            kd_grid=[(1.0, 2.0)],
            kd_variants=[{"name": "kl"}],
        ),
        data=(inter, items),
        teacher=FakeTeacher(),
    )
    ev.prepare_data()
    ev.teacher_runs()
    ev.choose_teacher()
    ev.students()
    assert {"student_ce", "student_kd", "student_uniform", "student_id_only"} <= set(ev.results)

    def files(name):
        return {
            f.replace("\\", "/").rsplit("/", 2)[-2] + "/" + f.rsplit("/", 1)[-1]
            for f in callers[name]
        }

    everyone = {"student/fitting.py", "service/redistill.py", "evaluation/evaluate.py"}
    assert files("prefixes") == files("examples") == files("train") == everyone
    assert files("teacher_targets") == {"student/fitting.py", "service/redistill.py"}
