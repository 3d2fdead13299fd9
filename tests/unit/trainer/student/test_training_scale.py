"""The training loop at catalogue scale (:mod:`trainer.student.training`): the sampled path against
the exact full path, the lazy id-embedding updates, and the flat example storage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coldstream.core.student import StudentConfig, pack_histories
from tests.unit.trainer._world import toy_world
from trainer.student.training import (
    FULL_SOFTMAX_MAX_ITEMS,
    TrainConfig,
    build_examples,
    prefix_position_arrays,
    prefix_positions,
    student_scores,
    train_student,
)
from trainer.teacher.topk import TopK

N_ITEMS, TEXT_DIM = 40, 16


def _world(seed: int = 0, n_users: int = 60):
    """40 items in 4 text clusters, users click within one cluster; item 39 is never used."""
    rng = np.random.default_rng(seed)
    cent = rng.standard_normal((4, TEXT_DIM))
    text = np.vstack([cent[i // 10] + 0.2 * rng.standard_normal(TEXT_DIM) for i in range(N_ITEMS)])
    seqs = []
    for _ in range(n_users):
        c = rng.integers(4)
        items = rng.choice(9 if c == 3 else 10, size=6, replace=False) + 10 * c
        seqs.append((items.astype(np.int64), rng.integers(0, 2, 6).astype(np.int64)))
    pos = prefix_positions(seqs, max_prefix=5, extra_per_user=0, seed=0)
    ex = build_examples(seqs, pos, 8)
    ex.kd_row = torch.arange(len(pos))
    teacher = torch.as_tensor(rng.standard_normal((len(pos), N_ITEMS)) * 2, dtype=torch.float32)
    return text.astype(np.float32), ex, teacher, seqs


def _train(cfg: TrainConfig, teacher, *, catalogue=None, text=None, ex=None):
    t, e, _, _ = _world()
    return train_student(
        ex if ex is not None else e,
        text_vecs=text if text is not None else t,
        id_index=np.arange(N_ITEMS),
        catalogue=np.ones(N_ITEMS, bool) if catalogue is None else catalogue,
        student_config=StudentConfig(
            n_items=N_ITEMS, text_dim=TEXT_DIM, dim=8, max_len=8, dropout=0.0
        ),
        config=cfg,
        teacher_logits=teacher,
        progress=False,
        device="cpu",
    )


def _cfg(**over) -> TrainConfig:
    base = dict(
        epochs=3,
        batch_size=32,
        seed=3,
        teacher="model",
        alpha=1.0,
        temperature=2.0,
        patience=10,
        id_dropout=0.0,
    )
    return TrainConfig(**{**base, **over})


def test_auto_picks_the_path_by_catalogue_size_and_a_setting_forces_it():
    cfg = TrainConfig()
    assert cfg.mode(FULL_SOFTMAX_MAX_ITEMS) == "full"
    assert cfg.mode(FULL_SOFTMAX_MAX_ITEMS + 1) == "sampled"
    assert TrainConfig(softmax="sampled").mode(10) == "sampled"
    assert TrainConfig(softmax="full").mode(10**6) == "full"
    with pytest.raises(ValueError, match="softmax must be one of"):
        TrainConfig(softmax="fast").mode(10)


def test_sampled_path_with_every_item_a_negative_trains_like_the_full_path():
    """negatives=-1 (every item once, no correction) and a top-K of the whole catalogue: the
    sampled losses are the full ones, so the runs agree epoch by epoch."""
    _, _, teacher, _ = _world()
    cat = np.ones(N_ITEMS, bool)
    cat[39] = False  # a cold item (no event): masked in CE on both paths, scored by KD on both
    full_m, full_c = _train(_cfg(softmax="full"), teacher, catalogue=cat)
    samp_m, samp_c = _train(
        _cfg(softmax="sampled", negatives=-1, teacher_topk=N_ITEMS), teacher, catalogue=cat
    )
    assert [r["softmax"] for r in full_c] == ["full"] * 3
    assert [r["softmax"] for r in samp_c] == ["sampled"] * 3
    for a, b in zip(full_c, samp_c, strict=True):
        assert a["ce"] == pytest.approx(b["ce"], rel=1e-4)
        assert a["kd"] == pytest.approx(b["kd"], rel=1e-4) and a["kd"] > 0
    for (name, p), q in zip(full_m.state_dict().items(), samp_m.state_dict().values(), strict=True):
        assert torch.allclose(p, q, atol=1e-4), name


def test_full_path_reads_a_top_k_teacher_as_minus_inf_outside_it():
    _, _, teacher, _ = _world()
    top = TopK.from_dense(teacher, 5)
    masked = torch.full_like(teacher, float("-inf"))
    masked.scatter_(1, top.ids, top.logits)
    _, a = _train(_cfg(softmax="full", epochs=2), top)
    _, b = _train(_cfg(softmax="full", epochs=2), masked)
    assert [r["kd"] for r in a] == pytest.approx([r["kd"] for r in b], rel=1e-6)


@pytest.mark.parametrize("rank_kind", ["bpr", "dllm2rec"])
def test_sampled_path_with_few_negatives_learns_the_next_item(rank_kind):
    n = 30
    seqs, text, pos, ex, tl = toy_world(n)
    cfg = TrainConfig(
        epochs=12,
        lr=1e-2,
        patience=100,
        teacher="model",
        alpha=0.5,
        temperature=2.0,
        id_dropout=0.0,
        batch_size=64,
        softmax="sampled",
        negatives=6,  # 6 uniform + 64 in-batch of 30 items
        teacher_topk=4,
        rank_weight=0.5,
        rank_k=3,
        rank_kind=rank_kind,
    )
    model, curve = train_student(
        ex,
        text_vecs=text,
        id_index=np.arange(n),
        catalogue=np.ones(n, bool),
        student_config=StudentConfig(n_items=n, text_dim=16, dim=16, max_len=8, dropout=0.0),
        config=cfg,
        teacher_logits=tl,
        progress=False,
    )
    assert curve[-1]["ce"] < curve[0]["ce"] and curve[-1]["kd"] < curve[0]["kd"]
    scores = student_scores(
        model, torch.as_tensor(text), torch.arange(n), [(np.array([3, 4]), np.array([0, 1]))]
    )
    assert int(np.argmax(scores[0])) == 5


def test_lazy_id_updates_above_the_threshold_leave_untouched_rows_alone():
    """Above the threshold the id embeddings are updated sparsely (SparseAdam): a row no batch
    touched keeps its initial value; the dense AdamW below it decays every row."""
    text, ex, _, seqs = _world()
    assert 39 not in np.concatenate([s[0] for s in seqs])
    init = StudentConfig(n_items=N_ITEMS, text_dim=TEXT_DIM, dim=8, max_len=8, dropout=0.0)
    torch.manual_seed(3)
    from coldstream.core.student import Student

    row0 = Student(init).id_emb.weight[39].detach().clone()  # train_student seeds the same way
    over = {"teacher": "none", "alpha": 0.0, "negatives": 0, "softmax": "sampled"}
    lazy_m, lazy_c = _train(_cfg(full_softmax_max_items=10, **over), None)
    dense_m, _ = _train(_cfg(**over), None)
    assert torch.equal(lazy_m.id_emb.weight[39], row0)
    assert not torch.equal(dense_m.id_emb.weight[39], row0)
    assert lazy_m.id_emb.sparse is False  # restored: serving and warm starts see a plain model
    assert lazy_c[-1]["ce"] < lazy_c[0]["ce"]
    touched = int(seqs[0][0][0])
    assert not torch.equal(lazy_m.id_emb.weight[touched], Student(init).id_emb.weight[touched])


def _old_prefix_positions(seqs, *, max_prefix, extra_per_user, seed):
    """The loop :func:`prefix_positions` was before it was vectorised (the reference)."""
    rng = np.random.default_rng(seed)
    out = []
    for u, (items, _) in enumerate(seqs):
        n = len(items)
        out += [(u, t) for t in range(1, min(max_prefix, n - 1) + 1)]
        if n - 1 > max_prefix and extra_per_user > 0:
            more = rng.choice(
                np.arange(max_prefix + 1, n),
                size=min(extra_per_user, n - 1 - max_prefix),
                replace=False,
            )
            out += [(u, int(t)) for t in sorted(more)]
    return out


@pytest.mark.parametrize(("max_prefix", "extra"), [(5, 3), (30, 5), (2, 0)])
def test_vectorised_prefixes_equal_the_loop_they_replaced(max_prefix, extra):
    rng = np.random.default_rng(7)
    seqs = [(np.arange(n), np.zeros(n, np.int64)) for n in rng.integers(0, 60, 200)]
    old = _old_prefix_positions(seqs, max_prefix=max_prefix, extra_per_user=extra, seed=4)
    assert prefix_positions(seqs, max_prefix=max_prefix, extra_per_user=extra, seed=4) == old
    u, t = prefix_position_arrays(seqs, max_prefix=max_prefix, extra_per_user=extra, seed=4)
    assert u.dtype == np.int64 and list(zip(u.tolist(), t.tolist(), strict=True)) == old


def test_examples_are_offsets_into_the_events_and_batch_like_pack_histories():
    rng = np.random.default_rng(1)
    seqs = [
        (rng.integers(0, 100, n).astype(np.int64), rng.integers(0, 2, n).astype(np.int64))
        for n in rng.integers(2, 40, 50)
    ]
    pos = prefix_positions(seqs, max_prefix=30, extra_per_user=3, seed=0)
    ex = build_examples(seqs, pos, max_len=12)
    # storage: one copy of the events plus per-example scalars, not [examples x max_len]
    assert len(ex.tokens) == sum(len(s[0]) for s in seqs) and ex.start.shape == (len(pos),)
    rows = [seqs[u][0][max(0, t - 12) : t] for u, t in pos]
    types = [seqs[u][1][max(0, t - 12) : t] for u, t in pos]
    idx, typ, mask = pack_histories(rows, types, 12)  # what build_examples stored before
    assert torch.equal(ex.idx, idx) and torch.equal(ex.types, typ) and torch.equal(ex.mask, mask)
    b = torch.tensor([5, 0, len(pos) - 1])
    bi, bt, bm = ex.batch(b)
    assert torch.equal(bi, idx[b]) and torch.equal(bt, typ[b]) and torch.equal(bm, mask[b])
    assert ex.target.tolist() == [int(seqs[u][0][t]) for u, t in pos]
    arr = build_examples(
        seqs, prefix_position_arrays(seqs, max_prefix=30, extra_per_user=3, seed=0), 12
    )
    assert torch.equal(arr.idx, idx) and torch.equal(arr.target, ex.target)
