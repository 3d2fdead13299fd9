"""A synthetic world for the trainer-service tests (no broker, no real teacher).

20 topics x 10 items; an item's text vector is its topic's centroid plus noise; each user
clicks items of one topic. :func:`cosine_scorer` scores items by the cosine of the mean
history text vector (a good teacher in this world); :class:`FakeTeacher` stands in for the
encoder (deterministic vectors of the text, by hash).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from coldstream.core.checkpoint import save_checkpoint
from coldstream.core.student import Student, StudentConfig
from trainer.data import Interactions
from trainer.data.synthetic import SyntheticConfig, synthetic_dataset
from trainer.service.buffer import EventBuffer

N_TOPICS, PER_TOPIC, TEXT_DIM = 20, 10, 32


def make_world() -> tuple[list[str], np.ndarray]:
    """Item ids and their (unit) text vectors."""
    rng = np.random.default_rng(0)
    centroids = rng.standard_normal((N_TOPICS, TEXT_DIM))
    text = np.vstack(
        [centroids[t] + 0.3 * rng.standard_normal((PER_TOPIC, TEXT_DIM)) for t in range(N_TOPICS)]
    ).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    return [f"it{i}" for i in range(len(text))], text


def session_events(
    ids: Sequence[str],
    n_users: int = 300,
    per_user: int = 8,
    seed: int = 1,
    rng: np.random.Generator | None = None,
) -> list[tuple[str, str]]:
    """``(user, item)`` in arrival order: one session after the other, each in one topic
    (drawn from ``rng``, default: a generator seeded with ``seed``)."""
    rng = np.random.default_rng(seed) if rng is None else rng
    events = []
    for u in range(n_users):
        topic = rng.integers(N_TOPICS)
        items = rng.choice(PER_TOPIC, size=per_user, replace=False) + topic * PER_TOPIC
        events += [(f"u{seed}-{u}", ids[i]) for i in items]
    return events


def make_buffer(
    ids: Sequence[str],
    n_users: int = 300,
    per_user: int = 8,
    seed: int = 1,
    shuffle_train: bool = False,
    holdout_share: float = 0.2,
) -> EventBuffer:
    """A buffer of :func:`session_events`; ``shuffle_train`` damages the training part (labels
    shuffled across the catalogue), the holdout stays intact."""
    rng = np.random.default_rng(seed)
    events = session_events(ids, n_users, per_user, seed, rng)
    buf = EventBuffer(len(events))
    cut = len(events) - int(np.ceil(holdout_share * len(events)))
    for n, (user, item) in enumerate(events):
        if shuffle_train and n < cut:
            item = ids[rng.integers(len(ids))]
        buf.add(user, item, 0, float(n), event_id=f"{user}-{n}")
    return buf


def cosine_scorer(text: np.ndarray):
    def score(histories):
        u = np.stack([text[h].mean(0) if len(h) else np.zeros(text.shape[1]) for h in histories])
        return 10.0 * u @ text.T

    return score


def random_checkpoint(root, ids: Sequence[str], text: np.ndarray):
    """v1 (or the next version): a random student; the last 10 items have no id embedding."""
    torch.manual_seed(0)
    model = Student(
        StudentConfig(n_items=len(ids) - 10, text_dim=TEXT_DIM, dim=16, max_len=20, dropout=0.0)
    )
    return save_checkpoint(
        root,
        model=model,
        item_ids=list(ids),
        item_text_vecs=text,
        metrics={},
        teacher={"name": "fake"},
    )


class FakeTeacher:
    """The encoder's interface (``encode``, ``dim``, ``describe``, ``seconds``) with unit
    vectors drawn from a hash of each text."""

    dim = TEXT_DIM
    seconds = 0.0

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for n, t in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(self.dim)
            out[n] = v / np.linalg.norm(v)
        return out

    def encode_items(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Item texts (the real teacher caches them by text; the vectors are the same)."""
        return self.encode(texts, progress)

    def describe(self) -> dict:
        return {"kind": "fake", "name": "fake-teacher", "dim": self.dim}


def toy_sequences(n_users=40, n_items=30, length=12, seed=0):
    """Users whose next item is always the current one + 1 (mod ``n_items``)."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_users):
        start = rng.integers(0, n_items)
        items = (start + np.arange(length)) % n_items  # next item = current + 1
        seqs.append((items.astype(np.int64), rng.integers(0, 2, length).astype(np.int64)))
    return seqs


def toy_world(n: int = 30):
    """``(seqs, text, pos, ex, tl)``: :func:`toy_sequences`, near-one-hot item text vectors,
    every prefix up to 8, its examples, and teacher logits that know the next item."""
    from trainer.student.training import build_examples, prefix_positions

    seqs = toy_sequences(n_items=n)
    text = np.eye(n, 16, dtype=np.float32) + np.random.default_rng(0).normal(
        0, 0.1, (n, 16)
    ).astype(np.float32)
    pos = prefix_positions(seqs, max_prefix=8, extra_per_user=0, seed=0)
    ex = build_examples(seqs, pos, 8)
    ex.kd_row = torch.arange(len(pos))
    tl = torch.full((len(pos), n), -5.0)
    tl[torch.arange(len(pos)), ex.target] = 5.0  # a teacher that knows the next item
    return seqs, text, pos, ex, tl


def users_with_events(inter: Interactions) -> Interactions:
    """``inter`` without the users that have no interaction (renumbered, names kept)."""
    present, user = np.unique(inter.user, return_inverse=True)
    return Interactions(
        user=user,
        item=inter.item,
        ts=inter.ts,
        event=inter.event,
        user_ids=[inter.user_ids[u] for u in present],
    )


def synthetic_eval_world(
    n_users: int = 100, n_items: int = 120, n_events: int = 3000, n_topics: int = 6
) -> tuple[Interactions, object]:
    """The evaluation tests' synthetic dataset, users without events dropped (95 users with
    data at the defaults, 120 items)."""
    inter, items = synthetic_dataset(
        SyntheticConfig(n_users=n_users, n_items=n_items, n_events=n_events, n_topics=n_topics)
    )
    return users_with_events(inter), items
