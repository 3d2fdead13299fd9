"""``fit()`` and its choice of training and validation users: only users with data (at least
two events) train or validate; too few of them is a clear error, not a numpy crash."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.data import Interactions
from trainer.data.synthetic import SyntheticConfig, synthetic_dataset
from trainer.student.features import split_users
from trainer.student.fitting import MIN_EVENTS, fit, fit_users

QUICK = {"quick": True, "train": {"epochs": 2, "max_prefix": 5}, "device": "cpu"}


def _seqs(lengths):
    return [(np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.int64)) for n in lengths]


def _without_users(inter: Interactions, users) -> Interactions:
    """The same listed users (``user_ids``), but ``users`` have no interaction left."""
    keep = ~np.isin(inter.user, users)
    return Interactions(
        user=inter.user[keep],
        item=inter.item[keep],
        ts=inter.ts[keep],
        event=inter.event[keep],
        user_ids=inter.user_ids,
    )


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_fit_users_is_the_split_of_all_users_when_every_user_has_data(seed):
    train_u, val_u = fit_users(_seqs([MIN_EVENTS + u % 5 for u in range(57)]), seed, 0.1)
    old_train, old_val, _ = split_users(57, seed, (0.9, 0.1, 0.0))  # the split fit() always made
    assert np.array_equal(train_u, old_train) and np.array_equal(val_u, old_val)


def test_fit_users_leaves_out_users_with_fewer_than_two_events():
    lengths = [0, 1, 2, 5, 0, 3, 1, 8, 2, 2, 0, 4] * 5
    train_u, val_u = fit_users(_seqs(lengths), 0, 0.1)
    eligible = {u for u, n in enumerate(lengths) if n >= 2}
    assert set(train_u) <= eligible and set(val_u) <= eligible and not set(train_u) & set(val_u)
    tr, va, _ = split_users(len(eligible), 0, (0.9, 0.1, 0.0))  # shares of the users with data
    assert (len(train_u), len(val_u)) == (len(tr), len(va)) == (32, 3)


def test_fit_refuses_when_too_few_users_have_data(tmp_path):
    inter, items = synthetic_dataset(
        SyntheticConfig(n_users=30, n_items=80, n_events=600, n_topics=5)
    )
    lonely = _without_users(inter, np.arange(1, 30))  # one user with data: no one to validate on
    with pytest.raises(
        ValueError, match=r"too few users with data to train and validate: 1 of 30 users"
    ):
        fit(lonely, items, QUICK, store_root=tmp_path, progress=False)
    with pytest.raises(ValueError, match="at least 2 events"):
        fit_users(_seqs([1, 1, 0, 1]), 0, 0.1)
    assert not list(tmp_path.iterdir())  # nothing written


def test_fit_trains_when_the_validation_users_have_no_events(tmp_path):
    """Listed users absent from the interactions exactly where the old split put its
    validation users: fit() crashed (NaN validation, or numpy's "need at least one array
    to stack" with the teacher); now it validates on users that have data."""
    from coldstream.core.checkpoint import load_checkpoint

    inter, items = synthetic_dataset(
        SyntheticConfig(n_users=60, n_items=150, n_events=3000, n_topics=10)
    )
    _, old_val, _ = split_users(len(inter.user_ids), 0, (0.9, 0.1, 0.0))
    data = _without_users(inter, old_val)
    ck = load_checkpoint(fit(data, items, QUICK, store_root=tmp_path, progress=False))
    assert ck.version == 1 and set(ck.item_ids) == set(items.ids)
    val = ck.metrics["val_ndcg@10_mean_k135"]
    assert np.isfinite(val) and val > 0
    # the id embeddings are those of the items the training users (users with data) saw
    seqs = data.sequences()
    train_u, val_u = fit_users(
        [seqs.get(u, (np.zeros(0, np.int64),) * 2) for u in range(60)], 0, 0.1
    )
    assert not set(old_val) & (set(train_u) | set(val_u))
    seen = set(np.concatenate([seqs[u][0] for u in train_u]).tolist())
    assert ck.config.n_items == len(seen)
    assert set(ck.item_ids[: ck.config.n_items]) == {items.ids[i] for i in seen}


def test_fit_on_the_sampled_path_with_the_item_cache(tmp_path):
    """``softmax="sampled"`` (what a large catalogue gets): teacher head on a sub-catalogue,
    its top-K over all items, sampled CE/KD, chunked validation; a second fit on the same
    item-vector cache encodes no item text (real MiniLM teacher)."""
    import torch

    from coldstream.core.checkpoint import load_checkpoint
    from trainer.teacher.encoder import Teacher

    torch.set_num_threads(2)
    inter, items = synthetic_dataset(
        SyntheticConfig(n_users=60, n_items=150, n_events=3000, n_topics=10)
    )
    cfg = {
        "quick": False,
        "device": "cpu",
        "train": {
            "epochs": 2,
            "max_prefix": 5,
            "softmax": "sampled",
            "negatives": 16,
            "teacher_topk": 10,
        },
        "head_items": 60,
        "teacher_prefixes_max": 100,
    }
    teacher = Teacher(batch_size=64, item_cache=tmp_path / "cache")
    ck = load_checkpoint(
        fit(inter, items, cfg, store_root=tmp_path / "s", teacher=teacher, progress=False)
    )
    m = ck.metrics
    assert m["softmax"] == "sampled" and m["teacher_head_items"] == 60
    assert m["teacher_prefixes"] == 100 and np.isfinite(m["val_ndcg@10_mean_k135"])
    assert teacher.item_vector_cache().encoded == len(set(items.texts))
    recs = ck.recommend([items.ids[3]], k=5)
    assert len(recs) == 5 and items.ids[3] not in {r for r, _ in recs}
    again = Teacher(batch_size=64, item_cache=tmp_path / "cache")  # the next run
    fit(
        inter,
        items,
        {**cfg, "quick": True},
        store_root=tmp_path / "s",
        teacher=again,
        progress=False,
    )
    assert again.item_vector_cache().encoded == 0
    assert again.texts_encoded == 0  # quick: no history either, so the encoder never ran
