"""The synthetic replay source at catalogue scale (:mod:`devtools.replay`): lazy events and
catalogue, memory independent of the stream's size, item records whose text is the
generator's."""

from __future__ import annotations

import itertools
import json
import tracemalloc

import pytest

from devtools.replay import item_records, synthetic_catalogue, synthetic_events
from trainer.data.synthetic import SyntheticConfig, synthetic_items
from trainer.teacher.encoder import catalog_text


def test_a_million_items_and_ten_million_users_stream_in_bounded_memory():
    tracemalloc.start()
    try:
        events, catalogue = synthetic_events(
            5_000, n_users=10_000_000, n_items=1_000_000, chunk_size=5_000
        )
        first = list(itertools.islice(events, 5_000))
        items = list(itertools.islice(catalogue, 3))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(first) == 5_000 and [i[0] for i in items] == ["s0", "s1", "s2"]
    assert all(e.user_id.startswith("su") and e.item_id.startswith("s") for e in first)
    assert max(int(e.user_id[2:]) for e in first) > 1_000_000  # users span the 10M range
    # the generator's state (20 MB of user interests, ~40 MB of item sampler) plus one chunk
    # of items; no list of 1M ids or 1M catalogue entries
    assert peak < 120 * 1024**2, peak / 1024**2


def test_synthetic_events_are_deterministic_for_a_seed():
    a = [e.item_id for e in synthetic_events(2_000, n_users=500, n_items=3_000, seed=4)[0]]
    b = [e.item_id for e in synthetic_events(2_000, n_users=500, n_items=3_000, seed=4)[0]]
    c = [e.item_id for e in synthetic_events(2_000, n_users=500, n_items=3_000, seed=5)[0]]
    assert a == b and a != c and len(a) == 2_000


def test_item_records_carry_the_text_the_generator_wrote():
    cfg = SyntheticConfig(n_items=50, seed=2, n_users=1, n_events=0)
    _, titles, texts = next(synthetic_items(cfg))
    records = list(item_records(synthetic_catalogue(n_items=50, seed=2), "items"))
    assert len(records) == 50 and records[0][:2] == ("items", b"s0")
    for (_, _, value), title, text in zip(records, titles, texts, strict=True):
        rec = json.loads(value)
        assert rec["title"] == title and catalog_text(rec) == text
    plain = json.loads(next(item_records([("m1", "Heat (1995)")], "items"))[2])
    assert set(plain) == {"item_id", "title", "ts"}


def test_replay_command_refuses_impossible_sizes():
    import argparse

    from coldstream.core.errors import UsageError
    from devtools.replay import add_arguments, run

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--source", "synthetic", "--items", "0"])
    with pytest.raises(UsageError, match="--items"):
        run(args)
    assert p.parse_args(["--users", "10000000"]).users == 10_000_000
