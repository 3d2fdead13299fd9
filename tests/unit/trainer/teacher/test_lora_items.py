"""Item-side LoRA: the user features and the loss by hand, then training on the real MiniLM
teacher moves item vectors, keeps its side through a save and load, and the production scorer
refuses it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.unit.trainer.teacher._kinds import KIND, TEXTS, kind_histories
from trainer.teacher.encoder import Teacher
from trainer.teacher.lora import (
    LoraConfig,
    fit_lora_items,
    item_side_features,
    item_side_loss,
    load_adapter,
    save_adapter,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x)


def test_item_side_features_by_hand():
    v = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 0.0]], dtype=np.float32)
    got = item_side_features(v, [np.array([0, 1, 3]), np.array([], dtype=np.int64)], window=2)
    assert got.shape == (2, 4)
    assert np.allclose(got[0, :2], _unit(np.array([1.5, 0.5])))  # the last two: rows 1 and 3
    assert np.allclose(got[0, 2:], _unit(np.array([4.0, 1.0]) / 3))  # the whole history
    assert np.array_equal(got[1], np.zeros(4))  # no history: no user


class _FixedEncoder:
    """One fixed vector per text (a unit test of the loss, not of an encoder)."""

    def __init__(self, vecs: dict[str, list[float]]) -> None:
        self.vecs = vecs
        self.asked: list[list[str]] = []

    def forward(self, texts):
        self.asked.append(list(texts))
        return torch.nn.functional.normalize(torch.tensor([self.vecs[t] for t in texts]), dim=-1)


def test_item_side_loss_by_hand():
    texts = ["a", "b", "c", "d"]
    enc = _FixedEncoder({"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [0.6, 0.8], "d": [0.8, 0.6]})
    hist = [np.array([0]), np.array([1])]
    pos = [np.array([2]), np.array([3])]

    def encode(ids):
        return enc.forward([texts[i] for i in ids])

    got = item_side_loss(encode, hist, pos, [np.zeros(0, np.int64)] * 2, torch.tensor(1.0), 5)
    assert enc.asked == [["a", "b", "c", "d"]]  # each item the batch names, encoded once
    # user 0 is item a; its candidates are b, c, d (its own history a is never ranked)
    l0 = -np.log(np.exp(0.6) / (np.exp(0.0) + np.exp(0.6) + np.exp(0.8)))
    # user 1 is item b; candidates a, c, d
    l1 = -np.log(np.exp(0.6) / (np.exp(0.0) + np.exp(0.8) + np.exp(0.6)))
    assert float(got) == pytest.approx((l0 + l1) / 2, rel=1e-5)
    # a next item that is also in the history is no positive: that user has none and drops out
    got2 = item_side_loss(
        encode, [np.array([0]), np.array([1])], [np.array([0]), pos[1]], [np.zeros(0)] * 2,
        torch.tensor(1.0), 5,
    )  # fmt: skip
    l1b = -np.log(np.exp(0.6) / (np.exp(0.0) + np.exp(0.6)))  # user 1's candidates: a, d
    assert float(got2) == pytest.approx(l1b, rel=1e-5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(2)
    teacher = Teacher(batch_size=16)
    stock = teacher.encode(TEXTS)
    hist, pos = kind_histories()
    curve = fit_lora_items(
        teacher, TEXTS, hist, pos, config=LoraConfig(epochs=2, batch_size=8, lr=5e-3, patience=2)
    )
    path = save_adapter(tmp_path_factory.mktemp("adapter") / "adapter-v000001.safetensors", teacher)
    return teacher, stock, curve, path


def test_training_moves_item_vectors_toward_their_kind(trained):
    teacher, stock, curve, _ = trained
    assert teacher.adapter is not None and teacher.adapter["side"] == "items"
    assert [r["epoch"] for r in curve] == [0, 1, 2]
    assert curve[2]["loss"] < curve[1]["loss"]
    assert np.allclose(teacher.encode(TEXTS, adapted=False), stock, atol=1e-5)
    adapted = teacher.encode(TEXTS)
    assert not np.allclose(adapted, stock, atol=1e-3)

    def margin(v):  # mean cosine within a kind minus across kinds
        s = v @ v.T
        same = KIND[:, None] == KIND[None, :]
        off = ~np.eye(6, dtype=bool)
        return s[same & off].mean() - s[~same].mean()

    assert margin(adapted) > margin(stock)


def test_an_item_side_adapter_keeps_its_side_and_vectors(trained, tmp_path):
    teacher, _, _, path = trained
    fresh = Teacher(batch_size=16)
    desc = load_adapter(path, fresh)
    assert desc == teacher.adapter and desc["side"] == "items"
    assert np.allclose(fresh.encode(TEXTS), teacher.encode(TEXTS), atol=1e-6)


def test_the_scorer_store_refuses_an_item_side_adapter(trained, tmp_path):
    from trainer.teacher.heads import load_teacher_adapter, save_teacher_adapter

    teacher, _, _, _ = trained
    save_teacher_adapter(tmp_path, 1, teacher)
    fresh = Teacher(batch_size=16)
    with pytest.raises(ValueError, match="item-side"):
        load_teacher_adapter(tmp_path, fresh)
    assert fresh.adapter is None  # left stock
