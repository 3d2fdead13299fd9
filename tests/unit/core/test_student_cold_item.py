"""A brand-new item (no id embedding) gets a vector from its text and can be recommended."""

from __future__ import annotations

import numpy as np
import torch

from coldstream.core.checkpoint import load_checkpoint, save_checkpoint
from coldstream.core.student import Student, StudentConfig


def _checkpoint(tmp_path, n_known=20, n_text_only=3):
    torch.manual_seed(0)
    model = Student(StudentConfig(n_items=n_known, text_dim=16, dim=8, max_len=10))
    rng = np.random.default_rng(0)
    ids = [f"i{i}" for i in range(n_known + n_text_only)]
    text = rng.normal(size=(len(ids), 16)).astype(np.float32)
    return (
        model,
        text,
        load_checkpoint(save_checkpoint(tmp_path, model=model, item_ids=ids, item_text_vecs=text)),
    )


def test_new_item_vector_is_the_text_projection(tmp_path):
    model, _, ck = _checkpoint(tmp_path)
    t = np.random.default_rng(1).normal(size=16).astype(np.float32)
    v = ck.item_vector_for_text(t)
    with torch.no_grad():
        expected = model.text_proj(torch.from_numpy(t)).numpy()
    assert v.shape == (8,) and np.allclose(v, expected, atol=1e-6)
    assert ck.item_vector_for_text(np.stack([t, t])).shape == (2, 8)
    # text-only rows stored in the checkpoint are placed the same way
    assert np.allclose(
        ck.item_vectors[-1], ck.item_vector_for_text(ck.item_text_vecs[-1]), atol=1e-6
    )


def test_new_item_can_be_recommended(tmp_path):
    model, _, ck = _checkpoint(tmp_path)
    history = ["i1", ("i2", "purchase")]
    u = ck.embed_users([history])[0]
    # a text vector whose projection points along the user vector (text_dim > dim: solvable)
    w = model.text_proj.weight.detach().numpy()
    b = model.text_proj.bias.detach().numpy()
    target = 10.0 * u / np.linalg.norm(u) * np.abs(ck.item_vectors).max()
    t, *_ = np.linalg.lstsq(w, target - b, rcond=None)
    v = ck.item_vector_for_text(t.astype(np.float32))
    scores = np.r_[ck.item_vectors @ u, v @ u]
    assert int(np.argmax(scores)) == len(ck.item_ids)  # the new item ranks first
    # and an item stored without an id embedding comes back from recommend()
    recs = [iid for iid, _ in ck.recommend(history, k=len(ck.item_ids))]
    assert {"i20", "i21", "i22"} <= set(recs)
