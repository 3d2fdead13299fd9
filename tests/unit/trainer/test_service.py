"""Trainer service pieces without a broker: buffer split, re-distillation cycle, gate, publish.

A synthetic world with strong structure: 20 topics x 10 items; an item's text vector is its
topic's centroid plus noise; each user clicks items of one topic. The fake teacher scores
items by the cosine of the mean history text vector (a good teacher in this world).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from coldstream.core.checkpoint import load_checkpoint, manifest_sha256, save_checkpoint
from coldstream.core.model_updates import make_update, verify_update
from coldstream.core.student import Student, StudentConfig
from trainer.buffer import EventBuffer
from trainer.service import (
    CycleConfig,
    TrainerMetrics,
    catalog_text,
    item_table,
    load_teacher_head,
    publish_checkpoint,
    redistill,
    save_teacher_head,
)

N_TOPICS, PER_TOPIC, TEXT_DIM = 20, 10, 32


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    centroids = rng.standard_normal((N_TOPICS, TEXT_DIM))
    text = np.vstack([centroids[t] + 0.3 * rng.standard_normal((PER_TOPIC, TEXT_DIM))
                      for t in range(N_TOPICS)]).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    ids = [f"it{i}" for i in range(len(text))]
    return ids, text


def _buffer(ids, n_users=300, per_user=8, seed=1, shuffle_train=False, holdout_share=0.2):
    rng = np.random.default_rng(seed)
    events = []
    for u in range(n_users):
        topic = rng.integers(N_TOPICS)
        items = rng.choice(PER_TOPIC, size=per_user, replace=False) + topic * PER_TOPIC
        events += [(f"u{seed}-{u}", ids[i], j) for j, i in enumerate(items)]
    # arrival order: one session after the other (the latest slice = the latest sessions)
    buf = EventBuffer(len(events))
    cut = len(events) - int(np.ceil(holdout_share * len(events)))
    for n, (user, item, _) in enumerate(events):
        if shuffle_train and n < cut:
            item = ids[rng.integers(len(ids))]  # damaged: labels shuffled across the catalogue
        buf.add(user, item, 0, float(n), event_id=f"{user}-{n}")
    return buf


def _scorer(text):
    def score(histories):
        u = np.stack([text[h].mean(0) if len(h) else np.zeros(text.shape[1]) for h in histories])
        return 10.0 * u @ text.T
    return score


def _random_checkpoint(root, ids, text):
    torch.manual_seed(0)
    model = Student(StudentConfig(n_items=len(ids) - 10, text_dim=TEXT_DIM, dim=16, max_len=20, dropout=0.0))
    return save_checkpoint(root, model=model, item_ids=ids, item_text_vecs=text, metrics={},
                           teacher={"name": "fake"})


CFG = CycleConfig(holdout_share=0.2, margin=0.01, epochs=8, lr=5e-3, teacher_prefixes=400, seed=0)


def test_buffer_split_never_trains_on_the_holdout():
    buf = EventBuffer(100)
    for n in range(10):
        buf.add("a", f"i{n}", 0, n)
        buf.add("b", f"j{n}", 1, n)
    assert buf.add("a", "x", event_id="e1") is True  # first time accepted
    assert buf.add("a", "x", event_id="e1") is False  # duplicate event id
    train, hold = buf.split(0.25)
    trained = {i for evs in train.values() for i, _ in evs}
    truths = {i for t in hold.truths for i in t}
    assert trained and truths and not trained & truths
    assert len(hold) == 2
    small = EventBuffer(5)
    for n in range(9):
        small.add("u", str(n))
    assert [e.item for e in small.events()] == ["4", "5", "6", "7", "8"]


def test_cycle_gate_refuses_damaged_and_promotes_good(world, tmp_path):
    ids, text = world
    store = tmp_path / "store"
    ck0 = load_checkpoint(_random_checkpoint(store, ids, text))

    # 1. a cycle on real sessions beats the random current model and is promoted
    res = redistill(ck0, _buffer(ids, seed=1), new_items={}, scorer=_scorer(text), config=CFG)
    g = res.gate
    assert g.promote and g.candidate_ndcg > g.current_ndcg + 0.1, g
    assert g.n_users >= 50 and res.metrics["distill_loss"] > 0 and 0 <= res.metrics["topk_agreement@10"] <= 1
    path = publish_checkpoint(store, res, teacher={"name": "fake"})
    ck1 = load_checkpoint(path)
    assert ck1.version == 2 and ck1.metrics["candidate_ndcg@10"] == round(g.candidate_ndcg, 5)
    assert "current_ndcg@10" in ck1.metrics

    # 2. a candidate trained on shuffled labels (holdout intact) is refused
    bad = redistill(ck1, _buffer(ids, seed=2, shuffle_train=True), new_items={}, scorer=_scorer(text),
                    config=CFG)
    assert not bad.gate.promote, bad.gate
    assert bad.gate.candidate_ndcg < bad.gate.current_ndcg - CFG.margin

    # 3. a candidate trained on fresh real sessions is promoted (not worse beyond the margin)
    good = redistill(ck1, _buffer(ids, seed=3), new_items={}, scorer=_scorer(text), config=CFG)
    assert good.gate.promote, good.gate
    assert good.gate.current_ndcg > 0.2  # the current model was good: a real comparison


def test_new_items_join_the_table_text_only(world, tmp_path):
    ids, text = world
    ck = load_checkpoint(_random_checkpoint(tmp_path / "s", ids, text))
    new = {"brand-new": (text[5] * 0.9, "New thing")}
    table = item_table(ck, new)
    assert table.ids[-1] == "brand-new" and table.id_index[-1] == -1
    assert (table.id_index[: ck.config.n_items] == np.arange(ck.config.n_items)).all()
    buf = _buffer(ids, n_users=60, seed=4)
    buf.add("u4-0", "brand-new", 0, 1e9)
    res = redistill(ck, buf, new_items=new, scorer=_scorer(table.text_vecs), config=CycleConfig(epochs=1))
    assert res.item_ids[-1] == "brand-new" and res.metrics["new_items"] == 1
    path = publish_checkpoint(tmp_path / "s", res, teacher={})
    ck2 = load_checkpoint(path)
    assert ck2.item_ids[-1] == "brand-new" and ck2.config.n_items == ck.config.n_items


def test_publish_is_signed_and_verifiable(world, tmp_path):
    ids, text = world
    store = tmp_path / "store"
    path = _random_checkpoint(store, ids, text)
    upd = make_update(version=1, checkpoint_dir=path, manifest_sha256=manifest_sha256(path),
                      metrics={"candidate_ndcg@10": 0.3, "current_ndcg@10": 0.2}, key="k")
    rec, where = verify_update(upd.to_json(), key="k", store_root=store)
    assert where == path.resolve() and rec.metrics["current_ndcg@10"] == 0.2
    load_checkpoint(where, expected_sha256=rec.sha256)


def test_teacher_head_round_trip(tmp_path):
    from trainer.adapt import TeacherHead

    torch.manual_seed(0)
    head = TeacherHead(8)
    for p in head.parameters():
        torch.nn.init.normal_(p)
    save_teacher_head(tmp_path, 3, head, 0.25)
    got, tau = load_teacher_head(tmp_path, None)
    assert tau == 0.25
    x, v = np.random.rand(4, 16).astype(np.float32), np.random.rand(5, 8).astype(np.float32)
    assert np.allclose(got.score(x, v), head.score(x, v), atol=1e-6)
    assert load_teacher_head(tmp_path, 4) is None
    assert not list(tmp_path.glob("teacher-heads/.tmp-*"))


def test_catalog_text_and_metrics_names():
    assert catalog_text({"item_id": "9", "title": "Alien (1979)", "category": ["Horror", "Sci-Fi"],
                         "description": "In space."}) == "Alien (1979) - Horror, Sci-Fi. In space."
    m = TrainerMetrics()
    for outcome in ("promoted", "rejected", "failed"):  # primed at 0 before any cycle
        assert m.registry.get_sample_value("coldstream_trainer_cycles_total", {"outcome": outcome}) == 0.0
    m.cycles.labels("promoted").inc()
    m.new_items.inc(2)
    from prometheus_client import generate_latest
    text = generate_latest(m.registry).decode()
    for name in ("coldstream_trainer_cycles_total", "coldstream_trainer_cycle_seconds",
                 "coldstream_trainer_distill_loss", "coldstream_trainer_topk_agreement",
                 "coldstream_trainer_model_age_seconds", "coldstream_trainer_buffer_events",
                 "coldstream_trainer_new_items_total"):
        assert name in text, name
    assert json.dumps(m.registry.get_sample_value("coldstream_trainer_new_items_total")) == "2.0"
