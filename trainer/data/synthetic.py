"""Synthetic interactions for load tests: Zipf item popularity, sessions with drifting
interests, item text from a vocabulary. Vectorised numpy, streamed in chunks, so
millions of events and a 1M-item catalogue never need to be in memory at once.

* Items belong to ``n_topics`` topics; within a topic an item is drawn with probability
  proportional to ``1 / rank^zipf_a`` of its global popularity rank.
* A user's interest is a topic that drifts (with probability ``drift`` at each new
  session it jumps to another topic). A session of geometric length draws its events
  from the interest topic, except a ``noise`` share drawn from any topic.
* Item text = words of the item's topic vocabulary + generic words, so a text encoder
  can discover topics (the teacher has something to know).

Memory is ``O(chunk_size + n_items + n_users)`` whatever ``n_events`` is: the state kept
between chunks is one small integer per user (the current interest, int16) and the
popularity sampler's arrays per item; each chunk's arrays are compact (user and item int32,
ts int64, event int8). The stream is deterministic for a configuration (seed included):
1M items, 10M users and 100M events stream in about 100 MB plus one chunk
(``coldstream replay --source synthetic --items 1000000 --users 10000000 --events N``).

>>> cfg = SyntheticConfig(n_users=1000, n_items=5000, n_events=20_000)
>>> for chunk in synthetic_events(cfg): ...   # dicts of arrays: user, item, ts, event
>>> for ids, titles, texts in synthetic_items(cfg): ...
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from trainer.data.interactions import Interactions, Items

_SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ra",
    "ten",
    "vo",
    "zu",
    "shi",
    "an",
    "el",
    "or",
    "ith",
    "ber",
    "nu",
    "pa",
    "qui",
    "dor",
    "fen",
    "gal",
    "hap",
    "jor",
    "lin",
    "mor",
    "nek",
    "pol",
    "rus",
    "sol",
    "tar",
]
_GENERIC = [
    "classic",
    "new",
    "deluxe",
    "edition",
    "pack",
    "set",
    "mini",
    "pro",
    "lite",
    "max",
    "original",
    "special",
    "vintage",
    "modern",
    "premium",
    "basic",
]


@dataclass(frozen=True)
class SyntheticConfig:
    n_users: int = 10_000
    n_items: int = 100_000
    n_events: int = 1_000_000
    n_topics: int = 100
    words_per_topic: int = 12
    zipf_a: float = 1.1
    mean_session: float = 8.0
    drift: float = 0.3
    noise: float = 0.1
    purchase_rate: float = 0.1
    chunk_size: int = 200_000
    seed: int = 0
    start_ts: int = 1_700_000_000


def _vocabulary(cfg: SyntheticConfig) -> np.ndarray:
    rng = np.random.default_rng(cfg.seed + 1)
    n = cfg.n_topics * cfg.words_per_topic
    a, b = rng.integers(0, len(_SYLLABLES), (2, n))
    c = rng.integers(0, len(_SYLLABLES), n)
    words = np.char.add(
        np.char.add(np.array(_SYLLABLES)[a], np.array(_SYLLABLES)[b]), np.array(_SYLLABLES)[c]
    )
    return words.reshape(cfg.n_topics, cfg.words_per_topic)


def item_topics(cfg: SyntheticConfig) -> np.ndarray:
    return np.random.default_rng(cfg.seed + 2).integers(0, cfg.n_topics, cfg.n_items)


def synthetic_items(
    cfg: SyntheticConfig, chunk_size: int = 100_000
) -> Iterator[tuple[list[str], list[str], list[str]]]:
    """Chunks of ``(ids, titles, texts)``; ids are ``"s0"``, ``"s1"``, ... A text is
    ``"<title> - <category>"``: what :func:`trainer.teacher.encoder.catalog_text` makes of an
    ``items`` record with that title and category."""
    vocab = _vocabulary(cfg)
    topics = item_topics(cfg)
    rng = np.random.default_rng(cfg.seed + 3)
    generic = np.array(_GENERIC)
    for s in range(0, cfg.n_items, chunk_size):
        e = min(cfg.n_items, s + chunk_size)
        t = topics[s:e]
        w = rng.integers(0, cfg.words_per_topic, (e - s, 3))
        g = generic[rng.integers(0, len(generic), e - s)]
        w1, w2, w3 = vocab[t, w[:, 0]], vocab[t, w[:, 1]], vocab[t, w[:, 2]]
        ids = [f"s{i}" for i in range(s, e)]
        titles = [f"{a.title()} {b} {c}" for a, b, c in zip(w1, g, w2, strict=True)]
        texts = [f"{ti} - {c}, {d}" for ti, c, d in zip(titles, w3, vocab[t, 0], strict=True)]
        yield ids, titles, texts


def _topic_sampler(cfg: SyntheticConfig):
    topics = item_topics(cfg)
    rank = (
        np.random.default_rng(cfg.seed + 4).permutation(cfg.n_items) + 1
    )  # popularity rank of each item
    weight = 1.0 / rank.astype(np.float64) ** cfg.zipf_a
    order = np.lexsort((rank, topics))  # items grouped by topic
    cum = np.cumsum(weight[order])
    starts = np.searchsorted(topics[order], np.arange(cfg.n_topics), side="left")
    ends = np.searchsorted(topics[order], np.arange(cfg.n_topics), side="right")
    lo = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0)
    hi = np.where(ends > 0, cum[np.maximum(ends - 1, 0)], 0.0)
    nonempty = ends > starts

    def sample(topic: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        topic = np.where(nonempty[topic], topic, np.flatnonzero(nonempty)[0])
        r = lo[topic] + rng.random(len(topic)) * (hi[topic] - lo[topic])
        pos = np.minimum(np.searchsorted(cum, r, side="right"), len(cum) - 1)
        return order[pos]

    return sample


EVENT_DTYPES = {"user": np.int32, "item": np.int32, "ts": np.int64, "event": np.int8}
"""The dtypes of a chunk's arrays (int32 ids: up to 2**31 users or items)."""


def _small_int(n: int) -> type[np.signedinteger]:
    return np.int16 if n < 2**15 else np.int32


def synthetic_events(cfg: SyntheticConfig) -> Iterator[dict[str, np.ndarray]]:
    """Chunks (at most ``chunk_size`` events) of ``{"user", "item", "ts", "event"}`` arrays
    (:data:`EVENT_DTYPES`), in time order; exactly ``n_events`` events in total.
    Deterministic for a configuration. State between chunks: one interest per user."""
    if max(cfg.n_users, cfg.n_items) >= 2**31:
        raise ValueError("synthetic ids are int32: at most 2**31 - 1 users and items")
    rng = np.random.default_rng(cfg.seed)
    sample = _topic_sampler(cfg)
    interest = rng.integers(0, cfg.n_topics, cfg.n_users).astype(_small_int(cfg.n_topics))
    ts = cfg.start_ts
    done = 0
    p = 1.0 / max(cfg.mean_session, 1.0)
    while done < cfg.n_events:
        want = min(cfg.chunk_size, cfg.n_events - done)
        n_sess = max(1, int(want * p) + 1)
        lengths = rng.geometric(p, n_sess)
        lengths = lengths[: np.searchsorted(np.cumsum(lengths), want) + 1]
        lengths[-1] -= max(0, int(lengths.sum()) - want)
        lengths = lengths[lengths > 0]
        users = rng.integers(0, cfg.n_users, len(lengths))
        jump = rng.random(len(lengths)) < cfg.drift
        new_topic = rng.integers(0, cfg.n_topics, len(lengths))
        # later sessions of the same user in this chunk see the last assignment (vectorised drift)
        interest[users[jump]] = new_topic[jump]
        sess_topic = interest[users].astype(np.int64)
        user = np.repeat(users, lengths)
        topic = np.repeat(sess_topic, lengths)
        noisy = rng.random(len(user)) < cfg.noise
        topic[noisy] = rng.integers(0, cfg.n_topics, int(noisy.sum()))
        item = sample(topic, rng)
        t = ts + np.arange(len(user), dtype=np.int64)
        ts += len(user)
        event = (rng.random(len(user)) < cfg.purchase_rate).astype(np.int64)
        done += len(user)
        yield {
            "user": user.astype(EVENT_DTYPES["user"]),
            "item": item.astype(EVENT_DTYPES["item"]),
            "ts": t,
            "event": event.astype(EVENT_DTYPES["event"]),
        }


def synthetic_dataset(cfg: SyntheticConfig):
    """Small configurations only: everything in memory as ``(Interactions, Items)``."""
    chunks = list(synthetic_events(cfg))
    cat = {
        k: np.concatenate([c[k] for c in chunks]).astype(np.int64)
        for k in ("user", "item", "ts", "event")
    }
    ids, titles, texts = [], [], []
    for a, b, c in synthetic_items(cfg):
        ids += a
        titles += b
        texts += c
    inter = Interactions(
        user=cat["user"],
        item=cat["item"],
        ts=cat["ts"],
        event=cat["event"],
        user_ids=[f"u{i}" for i in range(cfg.n_users)],
    )
    return inter, Items(ids=ids, titles=titles, texts=texts)
