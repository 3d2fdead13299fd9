"""LoRA on the top layers only, with the stock bottom cached per item text: the adapters sit
where asked, the cached path gives the full encoder's vectors (MiniLM, and a small random
MPNet for its relative position bias), and gradients reach only the top layers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tests.unit.trainer.teacher._kinds import TEXTS
from trainer.teacher.encoder import Teacher, default_teacher_path
from trainer.teacher.lora import (
    LoraConfig,
    TopLayers,
    attach_lora,
    detach_lora,
    first_adapted_layer,
    item_vectors,
    load_adapter,
    save_adapter,
    top_layers,
)


@pytest.fixture(scope="module")
def tiny_mpnet(tmp_path_factory):
    """A random 4-layer MPNet with MiniLM's (BERT) tokenizer: a real MPNet forward pass."""
    from transformers import MPNetConfig, MPNetModel

    folder = tmp_path_factory.mktemp("tiny-mpnet")
    src = default_teacher_path()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy(src / name, folder / name)
    vocab = json.loads((src / "config.json").read_text())["vocab_size"]
    torch.manual_seed(0)
    cfg = MPNetConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        pad_token_id=0,
    )
    MPNetModel(cfg).eval().save_pretrained(folder)
    return folder


def _teacher(kind, tiny_mpnet) -> Teacher:
    return Teacher(tiny_mpnet if kind == "mpnet" else None, batch_size=4)


def _perturb(teacher: Teacher) -> None:
    """Give the (zero-effect) adapters a visible effect."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in teacher.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def test_the_adapters_sit_on_the_top_layers_only():
    teacher = Teacher(batch_size=4)  # MiniLM: 6 layers
    assert first_adapted_layer(teacher.model, 2) == 4
    assert first_adapted_layer(teacher.model, 0) == 0 and first_adapted_layer(teacher.model, 6) == 0
    attach_lora(teacher, LoraConfig(layers=2))
    adapted = {n.split(".lora_A")[0] for n, _ in teacher.model.named_parameters() if "lora_A" in n}
    assert len(adapted) == 6  # query, key, value of layers 4 and 5
    assert all(".layer.4." in n or ".layer.5." in n for n in adapted)
    assert teacher.adapter["layers"] == 2
    detach_lora(teacher)
    attach_lora(teacher, LoraConfig(layers=0))
    adapted = {n for n, _ in teacher.model.named_parameters() if "lora_A" in n}
    assert len(adapted) == 18 and teacher.adapter["layers"] == 0


@pytest.mark.parametrize("kind", ["minilm", "mpnet"])
def test_the_cached_bottom_gives_the_full_encoders_vectors(kind, tiny_mpnet):
    teacher = _teacher(kind, tiny_mpnet)
    stock = teacher.encode(TEXTS)
    start = first_adapted_layer(teacher.model, 2)
    assert np.allclose(TopLayers(teacher, TEXTS, start).encode(), stock, atol=1e-5)
    attach_lora(teacher, LoraConfig(layers=2, dropout=0.0))
    _perturb(teacher)
    full = teacher.encode(TEXTS)  # the whole encoder, adapter on
    assert not np.allclose(full, stock, atol=1e-3)
    assert np.allclose(item_vectors(teacher, TEXTS), full, atol=1e-5)
    assert np.allclose(teacher.encode(TEXTS, adapted=False), stock, atol=1e-6)


def test_gradients_reach_only_the_top_layers(tiny_mpnet):
    teacher = Teacher(batch_size=4)
    attach_lora(teacher, LoraConfig(layers=2, dropout=0.0))
    _perturb(teacher)
    top = top_layers(teacher, TEXTS, 2)
    assert top is not None and top.start == 4
    assert top_layers(teacher, TEXTS, 2) is top  # the stock bottom is computed once
    top.forward(np.array([0, 3, 5])).sum().backward()
    grads = {n: p.grad for n, p in teacher.model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())
    assert all(".layer.4." in n or ".layer.5." in n for n in grads)


def test_a_saved_adapter_keeps_its_layers(tmp_path):
    teacher = Teacher(batch_size=4)
    attach_lora(teacher, LoraConfig(layers=2, dropout=0.0))
    _perturb(teacher)
    path = save_adapter(tmp_path / "a.safetensors", teacher)
    fresh = Teacher(batch_size=4)
    assert load_adapter(path, fresh)["layers"] == 2
    assert np.allclose(item_vectors(fresh, TEXTS), item_vectors(teacher, TEXTS), atol=1e-6)
