"""One re-distillation cycle without a broker: its configuration, the item table, the gate
and publishing (the synthetic world of :mod:`tests.unit.trainer._world`)."""

from __future__ import annotations

from dataclasses import asdict, fields, replace

import numpy as np
import pytest
import torch

from coldstream.core.checkpoint import load_checkpoint, manifest_sha256
from coldstream.core.model_updates import make_update, verify_update
from tests.unit.trainer._world import cosine_scorer, make_buffer, make_world, random_checkpoint
from trainer.service.redistill import (
    CycleConfig,
    cycle_train_config,
    item_table,
    publish_checkpoint,
    redistill,
)
from trainer.student import pipeline
from trainer.student.training import TrainConfig

# What one cycle trained with before CycleConfig nested a TrainConfig: the TrainConfig that
# redistill() built from CycleConfig's own epochs/lr/batch_size/... (the service's effective
# defaults), field by field; KD set teacher/alpha/temperature from the cycle's.
OLD_CYCLE_TRAINING = {
    "epochs": 4,
    "batch_size": 256,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "patience": 2,
    "seed": 0,
    "max_prefix": 20,
    "extra_per_user": 2,
    "id_dropout": 0.25,
    "teacher": "none",
    "alpha": 0.0,
    "temperature": 1.0,
    "rank_weight": 0.0,
    "rank_k": 20,
    "rank_kind": "bpr",
    "max_seconds": 600.0,
    "device": "auto",
    # catalogue scale (decided: a cycle picks its path by catalogue size, exact up to 20k items)
    "softmax": "auto",
    "full_softmax_max_items": 20_000,
    "negatives": 1024,
    "teacher_topk": 100,
    # decided: a cycle's sampled KD lets the teacher score the negatives when it can
    "kd_outside": "auto",
}
OLD_CYCLE_KD = {"teacher": "model", "alpha": 1.0, "temperature": 2.0}

CFG = CycleConfig(
    holdout_share=0.2,
    margin=0.01,
    teacher_prefixes=400,
    train=cycle_train_config(epochs=8, lr=5e-3, seed=0),
)


@pytest.fixture(scope="module")
def world():
    return make_world()


def test_cycle_config_nests_the_training_config_with_the_old_defaults():
    cfg = CycleConfig()
    names = {f.name for f in fields(CycleConfig)}
    assert names == {"holdout_share", "margin", "teacher_prefixes", "alpha", "temperature", "train"}
    assert (cfg.holdout_share, cfg.margin, cfg.teacher_prefixes, cfg.alpha, cfg.temperature) == (
        0.2,
        0.01,
        1024,
        1.0,
        2.0,
    )
    assert isinstance(cfg.train, TrainConfig)
    assert set(OLD_CYCLE_TRAINING) == {
        f.name for f in fields(TrainConfig)
    }  # a new field needs a decision here
    assert asdict(cfg.train_config(kd=False)) == OLD_CYCLE_TRAINING
    assert asdict(cfg.train_config(kd=True)) == {**OLD_CYCLE_TRAINING, **OLD_CYCLE_KD}
    assert cfg.train.teacher == "none"  # train_config returns a copy
    assert CycleConfig().train is not cfg.train
    assert (
        cycle_train_config(epochs=7, seed=3).epochs == 7 and cycle_train_config(seed=3).lr == 1e-3
    )


def test_redistill_trains_with_the_cycle_training_config(world, tmp_path, monkeypatch):
    ids, text = world
    ck = load_checkpoint(random_checkpoint(tmp_path / "s", ids, text))
    seen: list[TrainConfig] = []
    real = pipeline.train_student  # the stage the cycle trains through

    def spy(*args, **kwargs):
        seen.append(kwargs["config"])
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "train_student", spy)
    cfg = CycleConfig(
        teacher_prefixes=50,
        alpha=0.5,
        temperature=3.0,
        train=cycle_train_config(epochs=1, seed=5, device="cpu"),
    )
    buf = make_buffer(ids, n_users=60, seed=4)
    kd = redistill(ck, buf, new_items={}, scorer=cosine_scorer(text), config=cfg)
    plain = redistill(ck, buf, new_items={}, scorer=None, config=cfg)
    assert asdict(seen[0]) == {
        **asdict(cfg.train),
        "teacher": "model",
        "alpha": 0.5,
        "temperature": 3.0,
    }
    assert asdict(seen[1]) == asdict(cfg.train) and seen[1].teacher == "none"
    assert kd.metrics["teacher_prefixes"] == 50 and kd.metrics["epochs"] == 1
    assert "teacher_prefixes" not in plain.metrics and plain.metrics["distill_loss"] == 0.0


def test_cycle_gate_refuses_damaged_and_promotes_good(world, tmp_path):
    ids, text = world
    store = tmp_path / "store"
    ck0 = load_checkpoint(random_checkpoint(store, ids, text))

    # 1. a cycle on real sessions beats the random current model and is promoted
    res = redistill(
        ck0, make_buffer(ids, seed=1), new_items={}, scorer=cosine_scorer(text), config=CFG
    )
    g = res.gate
    assert g.promote and g.candidate_ndcg > g.current_ndcg + 0.1, g
    assert (
        g.n_users >= 50
        and res.metrics["distill_loss"] > 0
        and 0 <= res.metrics["topk_agreement@10"] <= 1
    )
    path = publish_checkpoint(store, res, teacher={"name": "fake"})
    ck1 = load_checkpoint(path)
    assert ck1.version == 2 and ck1.metrics["candidate_ndcg@10"] == round(g.candidate_ndcg, 5)
    assert "current_ndcg@10" in ck1.metrics

    # 2. a candidate trained on shuffled labels (holdout intact) is refused
    bad = redistill(
        ck1,
        make_buffer(ids, seed=2, shuffle_train=True),
        new_items={},
        scorer=cosine_scorer(text),
        config=CFG,
    )
    assert not bad.gate.promote, bad.gate
    assert bad.gate.candidate_ndcg < bad.gate.current_ndcg - CFG.margin

    # 3. a candidate trained on fresh real sessions is promoted (not worse beyond the margin)
    good = redistill(
        ck1, make_buffer(ids, seed=3), new_items={}, scorer=cosine_scorer(text), config=CFG
    )
    assert good.gate.promote, good.gate
    assert good.gate.current_ndcg > 0.2  # the current model was good: a real comparison


def test_new_items_join_the_table_text_only(world, tmp_path):
    ids, text = world
    ck = load_checkpoint(random_checkpoint(tmp_path / "s", ids, text))
    new = {"brand-new": (text[5] * 0.9, "New thing")}
    table = item_table(ck, new)
    assert table.ids[-1] == "brand-new" and table.id_index[-1] == -1
    assert (table.id_index[: ck.config.n_items] == np.arange(ck.config.n_items)).all()
    assert table.rows([("brand-new", 1), ("unknown", 0), ("it3", 0)])[0].tolist() == [len(ids), 3]
    buf = make_buffer(ids, n_users=60, seed=4)
    buf.add("u4-0", "brand-new", 0, 1e9)
    res = redistill(
        ck,
        buf,
        new_items=new,
        scorer=cosine_scorer(table.text_vecs),
        config=CycleConfig(train=cycle_train_config(epochs=1)),
    )
    assert res.item_ids[-1] == "brand-new" and res.metrics["new_items"] == 1
    path = publish_checkpoint(tmp_path / "s", res, teacher={})
    ck2 = load_checkpoint(path)
    assert ck2.item_ids[-1] == "brand-new" and ck2.config.n_items == ck.config.n_items


def test_a_buffer_without_two_known_events_per_session_is_refused(world, tmp_path):
    ids, text = world
    ck = load_checkpoint(random_checkpoint(tmp_path / "s", ids, text))
    buf = make_buffer([f"nope{i}" for i in range(len(ids))], n_users=20)  # no item the table knows
    with pytest.raises(ValueError, match="no training session with two known events"):
        redistill(ck, buf, new_items={}, scorer=None, config=CFG)


def test_publish_is_signed_and_verifiable(world, tmp_path):
    from coldstream.core.signing import Signer

    ids, text = world
    store = tmp_path / "store"
    ck = load_checkpoint(random_checkpoint(store, ids, text))
    res = redistill(ck, make_buffer(ids, seed=1), new_items={}, scorer=None, config=CFG)
    signer = Signer.generate()
    path = publish_checkpoint(store, res, teacher={"name": "fake"}, signer=signer)
    assert load_checkpoint(path, verify_keys=signer.keyring).signed_by == signer.key_id
    upd = make_update(
        version=int(path.name[1:]),
        seq=1,
        checkpoint_dir=path,
        manifest_sha256=manifest_sha256(path),
        metrics={"candidate_ndcg@10": 0.3, "current_ndcg@10": 0.2},
        signer=signer,
    )
    rec, where = verify_update(upd.to_json(), keys=signer.keyring, store_root=store)
    assert where == path.resolve() and rec.metrics["current_ndcg@10"] == 0.2
    load_checkpoint(where, expected_sha256=rec.sha256, verify_keys=signer.keyring)


def test_a_sampled_cycle_distils_from_the_teachers_top_k_and_is_promoted(world, tmp_path):
    """softmax="sampled" (what ``auto`` picks above 20k items): the teacher's targets are its
    top-K, never a dense [prefixes x items] matrix, and the cycle still beats a random model."""
    from trainer.service.redistill import cycle_data, teacher_targets
    from trainer.teacher.topk import TopK

    ids, text = world
    ck = load_checkpoint(random_checkpoint(tmp_path / "s", ids, text))
    cfg = CycleConfig(
        teacher_prefixes=400,
        train=cycle_train_config(
            epochs=8, lr=5e-3, seed=0, softmax="sampled", negatives=32, teacher_topk=12
        ),
    )
    buf = make_buffer(ids, seed=1)
    scorer = cosine_scorer(text)
    data = cycle_data(ck, buf, {}, cfg)
    top, tpos = teacher_targets(scorer, data, cfg)
    assert isinstance(top, TopK) and top.ids.shape == (400, 12)
    dense, tpos_dense = teacher_targets(scorer, data, replace(cfg, train=cycle_train_config()))
    assert tpos == tpos_dense and torch.equal(top.logits, dense.topk(12, dim=1).values)
    assert torch.equal(dense.gather(1, top.ids), top.logits)  # the ids carry those logits
    res = redistill(ck, buf, new_items={}, scorer=scorer, config=cfg)
    assert res.gate.promote and res.gate.candidate_ndcg > res.gate.current_ndcg + 0.1, res.gate
    assert res.metrics["distill_loss"] > 0 and res.metrics["teacher_prefixes"] == 400
    assert 0 <= res.metrics["topk_agreement@10"] <= 1
