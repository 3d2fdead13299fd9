"""The trainer on a new cluster: with an empty model store it trains a first model from the
catalogue on the ``items`` topic and the events buffered on ``clicks``/``purchases`` (real
Apache Kafka, the real MiniLM teacher); before there is enough data it says what it waits for."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from coldstream.core.checkpoint import load_checkpoint
from devtools.kafka_io import new_event, produce
from trainer.service.bootstrap import first_model, read_stream
from trainer.settings import TrainerSettings

GENRES = ("jazz", "metal", "folk")


def _items(topics: dict[str, str]) -> list[tuple[str, bytes, bytes]]:
    out = []
    for g in GENRES:
        for n in range(8):
            iid = f"{g}-{n}"
            rec = {"item_id": iid, "title": f"{g.title()} album {n}", "category": g, "ts": 1.0}
            out.append((topics["items"], iid.encode(), json.dumps(rec).encode()))
    return out


def _events(topics: dict[str, str], n_users: int) -> list[tuple[str, bytes, bytes]]:
    rng = np.random.default_rng(0)
    out = []
    for u in range(n_users):
        g = GENRES[u % 3]
        for j, n in enumerate(rng.choice(8, size=5, replace=False)):
            user = f"u{u}"
            _, value = new_event(user, f"{g}-{n}", ts=1_700_000_000 + 10 * u + j)
            out.append((topics["clicks"], user.encode(), value))
    # an event on an item the catalogue does not have, and a malformed one: both left out
    _, stray = new_event("u0", "not-in-the-catalogue", ts=1_700_000_999)
    out += [(topics["clicks"], b"u0", stray), (topics["clicks"], b"u1", b"{oops")]
    return out


@pytest.mark.slow
def test_a_first_model_from_the_topics(kafka_bootstrap, topic_prefix, make_topics, tmp_path):
    topics = make_topics(kafka_bootstrap, topic_prefix)
    s = TrainerSettings(
        bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        model_store=tmp_path / "store",
        min_buffer_events=100,
        progress=False,
        threads=1,
    )
    asyncio.run(produce(kafka_bootstrap, _items(topics)))
    data = asyncio.run(read_stream(s))
    assert len(data.titles) == 24 and data.enough(100) == "0 events on catalogue items, need 100"
    with pytest.raises(TimeoutError, match="0 events on catalogue items, need 100"):
        first_model(s, poll_s=0.5, max_wait_s=1)
    asyncio.run(produce(kafka_bootstrap, _events(topics, n_users=30)))
    path = first_model(s, poll_s=0.5, max_wait_s=60)
    ck = load_checkpoint(path)
    assert sorted(ck.item_ids) == sorted(data.titles)  # the catalogue of the items topic
    assert "Jazz album 0" in ck.item_titles
    popular = ck.metrics["popular_items"]
    assert popular and "not-in-the-catalogue" not in popular
    inter, items = asyncio.run(read_stream(s)).dataset()
    assert len(inter) == 150 and "Jazz album 0 - jazz" in items.texts  # title - category
