"""``train_student`` on the configured device: CPU path unchanged, CUDA path (``gpu`` marker).

A tiny world: 40 items in 4 text clusters, users click within one cluster. Two epochs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coldstream.core.student import StudentConfig
from trainer.student.training import (
    TrainConfig,
    build_examples,
    prefix_positions,
    student_scores,
    train_student,
)

N_ITEMS, TEXT_DIM = 40, 16


def _world(seed: int = 0):
    rng = np.random.default_rng(seed)
    cent = rng.standard_normal((4, TEXT_DIM))
    text = np.vstack([cent[i // 10] + 0.2 * rng.standard_normal(TEXT_DIM) for i in range(N_ITEMS)])
    seqs = []
    for _u in range(60):
        c = rng.integers(4)
        items = rng.choice(10, size=6, replace=False) + 10 * c
        seqs.append((items.astype(np.int64), np.zeros(6, np.int64)))
    pos = prefix_positions(seqs, max_prefix=5, extra_per_user=0, seed=0)
    ex = build_examples(seqs, pos, 8)
    # KD rows on half of the examples, with a fixed "teacher"
    ex.kd_row = torch.where(
        torch.arange(len(pos)) % 2 == 0, torch.arange(len(pos)) // 2, torch.full((len(pos),), -1)
    )
    teacher = torch.as_tensor(
        rng.standard_normal(((len(pos) + 1) // 2, N_ITEMS)), dtype=torch.float32
    )
    return text.astype(np.float32), ex, teacher, seqs


def _train(where, **over):
    text, ex, teacher, _ = _world()
    cfg = TrainConfig(
        epochs=2,
        batch_size=32,
        seed=3,
        teacher="model",
        alpha=1.0,
        temperature=2.0,
        patience=5,
        **over,
    )
    return train_student(
        ex,
        text_vecs=text,
        id_index=np.arange(N_ITEMS),
        catalogue=np.ones(N_ITEMS, bool),
        student_config=StudentConfig(
            n_items=N_ITEMS, text_dim=TEXT_DIM, dim=8, max_len=8, dropout=0.0
        ),
        config=cfg,
        teacher_logits=teacher,
        progress=False,
        device=where,
    )


def test_cpu_path_is_deterministic_and_returns_a_cpu_model():
    m1, c1 = _train("cpu")
    m2, c2 = _train(None, device="cpu")  # the config's device
    assert [r["loss"] for r in c1] == [r["loss"] for r in c2]
    assert all(
        torch.equal(a, b)
        for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True)
    )
    assert {p.device.type for p in m1.parameters()} == {"cpu"}
    # the losses of the training loop before device support (torch 2.13, CPU): unchanged
    assert np.allclose([r["loss"] for r in c1], [4.066931155522664, 3.871811243693034], rtol=1e-5)
    assert c1[-1]["loss"] < c1[0]["loss"] * 1.5 and np.isfinite(c1[-1]["kd"]) and c1[-1]["kd"] > 0


def test_unknown_cuda_device_is_refused_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the refusal cannot happen here")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        _train("cuda")


@pytest.mark.gpu
def test_train_student_on_cuda_matches_cpu_shapes_and_learns():
    text, ex, _, seqs = _world()
    seen_cuda = []

    def validate(model) -> float:
        seen_cuda.append(next(model.parameters()).device.type)
        s = student_scores(
            model,
            torch.as_tensor(text),
            torch.arange(N_ITEMS),
            [(q[0][:2], q[1][:2]) for q in seqs[:8]],
        )
        assert s.shape == (8, N_ITEMS) and np.isfinite(s).all()
        return -float(np.abs(s).mean())

    _, _, teacher, _ = _world()
    cfg = TrainConfig(
        epochs=2, batch_size=32, seed=3, teacher="model", alpha=1.0, temperature=2.0, patience=5
    )
    model, curve = train_student(
        ex,
        text_vecs=text,
        id_index=np.arange(N_ITEMS),
        catalogue=np.ones(N_ITEMS, bool),
        student_config=StudentConfig(
            n_items=N_ITEMS, text_dim=TEXT_DIM, dim=8, max_len=8, dropout=0.0
        ),
        config=cfg,
        teacher_logits=teacher,
        validate=validate,
        progress=False,
        device="cuda",
    )
    assert seen_cuda == ["cuda", "cuda"]  # trained (and validated) on the GPU
    assert {p.device.type for p in model.parameters()} == {"cpu"}  # handed back on the CPU
    assert len(curve) == 2 and all(np.isfinite(r["loss"]) for r in curve)
    cpu_model, cpu_curve = _train("cpu")
    assert abs(curve[0]["loss"] - cpu_curve[0]["loss"]) < 0.5  # same problem, same scale
