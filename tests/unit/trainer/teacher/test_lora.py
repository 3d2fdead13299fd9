"""LoRA on the real MiniLM teacher: training moves history vectors (never item vectors), and an
adapter saved and loaded onto a fresh teacher gives identical scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.unit.trainer.teacher._kinds import TEXTS, kind_histories
from trainer.teacher.encoder import Teacher
from trainer.teacher.lora import (
    LoraConfig,
    contrastive_loss,
    fit_lora,
    load_adapter,
    lora_targets,
    save_adapter,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(2)
    teacher = Teacher(batch_size=16)
    items = teacher.encode_items(TEXTS)
    # histories of one kind predict an item of the same kind
    ids, nexts = kind_histories()
    hist = ["; ".join(TEXTS[i] for i in h) for h in ids]
    pos = [p[:1] for p in nexts]
    before = teacher.encode(hist[:4])
    curve = fit_lora(
        teacher,
        hist,
        pos,
        items,
        hard=np.array([[i for i in range(6) if i not in p][:2] for p in pos]),
        config=LoraConfig(epochs=2, batch_size=16, lr=5e-3, patience=2),
    )
    path = save_adapter(tmp_path_factory.mktemp("adapter") / "adapter-v000001.safetensors", teacher)
    return teacher, items, hist, before, curve, path


def test_lora_targets_are_the_attention_projections():
    teacher = Teacher()
    names = lora_targets(teacher.model)
    assert len(names) == 3 * teacher.model.config.num_hidden_layers
    assert {n.split(".")[-1] for n in names} == {"query", "key", "value"}


def test_training_moves_histories_but_not_item_vectors(trained):
    teacher, items, hist, before, curve, _ = trained
    assert teacher.adapter is not None and teacher.adapter["kind"] == "lora"
    assert [r["epoch"] for r in curve] == [0, 1, 2]
    assert curve[2]["loss"] < curve[1]["loss"]
    teacher.clear_cache()
    assert np.allclose(teacher.encode_items(TEXTS), items, atol=1e-6)  # items: stock encoder
    assert np.allclose(teacher.encode(hist[:4], adapted=False), before, atol=1e-5)
    assert not np.allclose(teacher.encode(hist[:4]), before, atol=1e-3)


def test_an_adapter_round_trip_gives_identical_teacher_scores(trained):
    teacher, items, hist, _, _, path = trained
    fresh = Teacher(batch_size=16)
    desc = load_adapter(path, fresh)
    assert desc == teacher.adapter
    got = fresh.encode(hist) @ fresh.encode_items(TEXTS).T
    want = teacher.encode(hist) @ items.T
    assert np.allclose(got, want, atol=1e-6)


def test_an_adapter_refuses_another_base_encoder(trained, tmp_path):
    _, _, _, _, _, path = trained

    from types import SimpleNamespace

    other = SimpleNamespace(
        path=Path("all-mpnet-base-v2"),
        model=SimpleNamespace(config=SimpleNamespace(model_type="mpnet")),
        dim=768,
        adapter=None,
    )
    with pytest.raises(ValueError, match="is for model:bert"):
        load_adapter(path, other)


def test_contrastive_loss_by_hand():
    # two users, three candidates: user 0's positive is item 0, user 1's is item 1; item 2 hard
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    pos = torch.tensor([[0, -1], [1, -1]])
    hard = torch.tensor([[2], [2]])
    got = contrastive_loss(u, v, pos, hard, torch.tensor(1.0))
    l0 = -np.log(np.exp(1.0) / (np.exp(1.0) + np.exp(0.0) + np.exp(0.6)))
    l1 = -np.log(np.exp(1.0) / (np.exp(0.0) + np.exp(1.0) + np.exp(0.8)))
    assert float(got) == pytest.approx((l0 + l1) / 2, rel=1e-5)
    # a shared item is a positive for both users, never a negative
    both = torch.tensor([[0, 1], [1, -1]])
    got2 = contrastive_loss(u, v, both, hard, torch.tensor(1.0))
    z0 = np.exp(1.0) + np.exp(0.0) + np.exp(0.6)
    l0b = -0.5 * (np.log(np.exp(1.0) / z0) + np.log(np.exp(0.0) / z0))
    assert float(got2) == pytest.approx((l0b + l1) / 2, rel=1e-5)


def test_the_store_keeps_the_adapter_and_the_scorer_uses_it(trained, tmp_path):
    from trainer.teacher.heads import (
        TeacherScorer,
        load_teacher_adapter,
        load_teacher_head,
        save_teacher_adapter,
        save_teacher_head,
        teacher_adapter_path,
    )

    teacher, items, _, _, _, _ = trained
    assert save_teacher_adapter(tmp_path, 7, Teacher()) is None  # a stock teacher: nothing
    path = save_teacher_adapter(tmp_path, 7, teacher)
    assert path == teacher_adapter_path(tmp_path, 7) and path.is_file()
    from trainer.teacher.adapt import TeacherHead

    save_teacher_head(tmp_path, 7, TeacherHead(teacher.dim), 0.5)
    head, tau = load_teacher_head(tmp_path)  # the heads' glob does not take the adapter file
    fresh = Teacher(batch_size=16)
    assert load_teacher_adapter(tmp_path / "none", fresh) is None and fresh.adapter is None
    assert load_teacher_adapter(tmp_path, fresh) == path
    hist = [np.array([0, 3]), np.array([1]), np.array([2, 4, 1])]
    want = TeacherScorer(teacher, TEXTS, items, head, tau)
    got = TeacherScorer(fresh, TEXTS, fresh.encode_items(TEXTS), head, tau)
    assert got.adapted and want.adapted
    assert np.allclose(got(hist), want(hist), atol=1e-5)
    stock = TeacherScorer(Teacher(batch_size=16), TEXTS, items, head, tau)
    assert not stock.adapted and not np.allclose(stock(hist), want(hist), atol=1e-3)
