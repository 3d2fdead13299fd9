"""The serving recommender: seen items excluded, unknown items tolerated, fallback, swaps,
upserts in place, costs that do not grow with churn."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from coldstream.core.checkpoint import load_checkpoint
from devtools.checkpoints import make_checkpoint
from stream_app.index import IndexConfig
from stream_app.online import WindowedCounter
from stream_app.recommender import Recommender, ServingModel

INDEXES = [
    pytest.param(IndexConfig(kind="flat"), id="flat"),
    pytest.param(IndexConfig(kind="ivf"), id="ivf-pq"),
    pytest.param(IndexConfig(kind="ivf", codes="flat"), id="ivf-flat"),
]


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("store"), n_items=60, dim=32, text_dim=24)


@pytest.fixture(params=INDEXES)
def rec(ckpt_path, request):
    return Recommender.from_checkpoint(
        ckpt_path, device="cpu", prefer_gpu_index=False, index=request.param
    )


@pytest.fixture
def flat(ckpt_path):
    return Recommender.from_checkpoint(ckpt_path, device="cpu", prefer_gpu_index=False)


def test_matches_checkpoint_recommend_and_excludes_seen(rec, ckpt_path):
    ck = load_checkpoint(ckpt_path)
    histories = [["1", "2", "3"], [("5", "purchase"), ("9", 0)], [str(i) for i in range(1, 40)]]
    out = rec.recommend_batch(histories, k=10)
    assert len(out) == 3
    for h, items in zip(histories, out, strict=True):
        seen = {e[0] if isinstance(e, tuple) else e for e in h}
        assert len(items) == 10
        assert not seen & {i for i, _ in items}
        ref = ck.recommend(h, k=10)
        assert [i for i, _ in items] == [i for i, _ in ref]
        np.testing.assert_allclose([s for _, s in items], [s for _, s in ref], rtol=1e-4, atol=1e-4)


def test_cpu_bundle_ranks_with_the_numpy_encoder(flat):
    # the parity test above compares the serving path, which on CPU encodes in numpy, with
    # the checkpoint API, which encodes in torch; a model that is not float32 keeps torch
    from coldstream.core.student import NumpyEncoder

    m = flat.model
    assert isinstance(m.numpy_encoder, NumpyEncoder)
    assert m.numpy_encoder is m.numpy_encoder  # built once per bundle
    half = ServingModel(m.version, m.checkpoint, m.catalog)
    half.checkpoint.model.half()
    try:
        assert half.numpy_encoder is None
    finally:
        half.checkpoint.model.float()


def test_history_rows_read_column_wise_equal_the_event_by_event_reading():
    # long histories of session entries take the column-wise path; anything else (short,
    # bare ids, str or bool event types, short lists, non-str ids) the per-event one: both
    # give what _entry gives, event by event
    from stream_app.recommender import _LONG, _entry, _history_rows

    slot_of = {f"i{n}": n for n in range(0, 40, 2)}  # odd items: unknown to the model

    def by_events(recent):
        pairs = [_entry(ev) for ev in recent]
        known = [(slot_of[i], t) for i, t in pairs if i in slot_of]
        return [r for r, _ in known], [t for _, t in known], [i for i, _ in pairs]

    rng = np.random.default_rng(5)
    entry = [
        [f"i{int(j)}", int(t), 1.0, f"e{n}"]
        for n, (j, t) in enumerate(
            zip(rng.integers(0, 40, 60), rng.integers(0, 2, 60), strict=True)
        )
    ]
    cases = [
        entry[: _LONG - 1],  # short
        entry[:_LONG],
        entry,  # long, some unknown items
        [e for e in entry if e[0] in slot_of],  # long, all known
        [*entry[:20], "i4", 6],  # bare ids among the entries
        [*entry[:20], ["i2", "purchase", 1.0, "x"]],  # a type by name
        [*entry[:20], ["i2", True, 1.0, "x"]],  # a bool is not a type code
        [*entry[:20], ["i2"]],  # an entry without a type
        [*entry[:20], [2, 1, 1.0, "x"]],  # an id that is not a str
        [],
    ]
    for recent in cases:
        assert _history_rows(recent, slot_of) == by_events(recent), recent
    rows, types, ids = _history_rows(entry, slot_of)
    assert len(ids) == 60 and 0 < len(rows) < 60  # the unknown items are left out


def test_batch_equals_one_by_one(rec):
    histories = [[str(j) for j in range(i, i + 5)] for i in range(1, 20)]
    batched = rec.recommend_batch(histories, k=5)
    single = [rec.recommend_batch([h], k=5)[0] for h in histories]
    assert [[i for i, _ in r] for r in batched] == [[i for i, _ in r] for r in single]


def test_unknown_items_tolerated(flat):
    mixed = flat.rank_batch([["1", "no-such-item", "2"]], k=5)
    assert mixed.fallback == [None]
    assert len(mixed.items[0]) == 5
    assert not {"1", "2", "no-such-item"} & {i for i, _ in mixed.items[0]}
    # unknown items do not change the user vector
    assert [i for i, _ in mixed.items[0]] == [
        i for i, _ in flat.recommend_batch([["1", "2"]], k=5)[0]
    ]


def test_only_unknown_items_gets_popular_fallback(flat):
    flat.observe(["7"] * 5 + ["8"] * 3 + ["unknown"] * 10)
    r = flat.rank_batch([["x1", "x2"], ["1"]], k=4)
    assert r.fallback == ["popular", None]
    ids = [i for i, _ in r.items[0]]
    assert ids[:2] == ["7", "8"]  # most popular first; unknown ids never recommended
    assert len(ids) == 4 and "unknown" not in ids
    assert r.n_known_users == 1
    shares = [s for _, s in r.items[0][:2]]
    assert shares == pytest.approx([5 / 8, 3 / 8])  # shares of the counted (served) events


def test_fallback_excludes_seen(flat):
    flat.observe(["7"] * 5)
    r = flat.rank_batch([["x1", "7"]], k=3)
    assert r.fallback == [None]  # "7" is known: model path, 7 excluded
    assert "7" not in [i for i, _ in r.items[0]]
    cold = flat.popular(3, exclude=["7"])
    assert "7" not in [i for i, _ in cold] and len(cold) == 3


def test_popularity_counts_served_items_only(flat):
    flat.observe(["no-such-item"] * 100 + ["3"])
    assert flat.popularity.most_common() == [("3", 1)]
    assert flat.popularity.total == 1  # a running total, not a sum over counters


def test_one_account_cannot_rig_the_popular_list(flat):
    flat.observe(["7"] * 500, users=["bot"] * 500)  # one account, 500 clicks on one item
    flat.observe(["8", "8", "9", "9", "9"], users=["a", "b", "c", "d", "e"])
    top = [i for i, _ in flat.popular(3)]
    assert top == ["9", "8", "7"]  # distinct users: 3, 2, 1
    with pytest.raises(ValueError):
        flat.observe(["1", "2"], users=["a"])


def test_history_longer_than_catalogue(rec):
    everything = [str(i) for i in range(1, 61)]
    r = rec.rank_batch([everything[-50:]], k=20)
    assert len(r.items[0]) == 10  # 60 items, 50 seen
    assert not set(everything[-50:]) & {i for i, _ in r.items[0]}


def test_upsert_items_new_and_replaced_in_place(rec):
    m = rec.model
    n = m.n_items
    u = m.checkpoint.embed_users([["1", "2"]])[0]
    big = (u / np.linalg.norm(u) * 1000).astype(np.float32)
    assert rec.upsert_items(["new-1", "5"], np.stack([big, -big])) is m  # the same bundle
    assert rec.model is m and m.n_items == n + 1 and m.index.ntotal == n + 1
    assert rec.recommend_batch([["1", "2"]], k=1)[0][0][0] == "new-1"
    # the replaced "5" is served from its new vector only: never twice, never near the top
    ids = [i for i, _ in rec.recommend_batch([["1", "2"]], k=100)[0]]
    assert ids.count("5") <= 1 and len(ids) == len(set(ids)) >= 58 and "5" not in ids[:50]
    if rec.model.index.kind == "flat":
        assert ids[-1] == "5" and len(ids) == 59
    with pytest.raises(ValueError):
        rec.upsert_items(["x"], np.zeros((1, m.catalog.dim + 1), np.float32))
    with pytest.raises(ValueError):
        rec.upsert_items(["x"], np.full((1, m.catalog.dim), np.nan, np.float32))
    assert m.n_items == n + 1  # refused upserts change nothing


def test_churn_does_not_grow_the_index(rec):
    dim = rec.model.catalog.dim
    rng = np.random.default_rng(0)
    for _ in range(300):  # 3,000 re-upserts of the same 10 ids
        rec.upsert_items([f"n{i}" for i in range(10)], rng.standard_normal((10, dim)))
    m = rec.model
    assert m.n_items == 70
    assert m.index.ntotal <= m.n_items
    assert m.index.rows_held == m.n_items  # entries replaced in place (CPU indexes)
    ids = [i for i, _ in rec.recommend_batch([["1"]], k=100)[0]]
    assert len(ids) == len(set(ids)) == 69


def test_upserts_do_not_copy_the_item_table(flat):
    m = flat.model
    dim = m.catalog.dim
    before = m.table.data_ptr()
    for i in range(50):  # replacing existing items: rows written in place
        flat.upsert_items([str(i % 60 + 1)], np.full((1, dim), 0.1, np.float32))
    assert m.table.data_ptr() == before
    buffers = set()
    for i in range(500):  # new items: the table grows geometrically
        flat.upsert_items([f"new-{i}"], np.full((1, dim), 0.1, np.float32))
        buffers.add(m.table.data_ptr())
    assert len(buffers) <= 15  # O(log n) reallocations, not one per upsert
    assert m.n_items == 560 and m.table.shape[0] >= 560
    np.testing.assert_array_equal(
        m.table[m.index_of["new-7"]].numpy(), np.full(dim, 0.1, np.float32)
    )


def test_remove_items_frees_slots_for_reuse(flat):
    m = flat.model
    dim = m.catalog.dim
    assert flat.remove_items(["3", "4", "no-such"]) == 2
    assert m.n_items == 58 and "3" not in m.index_of
    ids = [i for i, _ in flat.recommend_batch([["1"]], k=100)[0]]
    assert not {"3", "4"} & set(ids) and len(ids) == 57
    assert flat.rank_batch([["3"]], 2).fallback == ["popular"]  # no longer known
    flat.upsert_items(["fresh"], np.ones((1, dim), np.float32))
    assert m.index_of["fresh"] in (2, 3)  # a freed slot, not a new one
    assert m.table.shape[0] == 60


def test_short_results_are_searched_again_wider(ckpt_path):
    narrow = IndexConfig(kind="ivf", codes="flat", nlist=16, nprobe=1)
    r = Recommender.from_checkpoint(ckpt_path, prefer_gpu_index=False, index=narrow)
    assert r.model.index_report.nprobe == 1
    out = r.recommend_batch([[str(i)] for i in range(1, 31)], k=10)
    assert all(len(items) == 10 for items in out)  # one probed list holds ~4 items


def test_swap_is_one_reference(flat, tmp_path):
    other = ServingModel.from_checkpoint(
        load_checkpoint(make_checkpoint(tmp_path, n_items=30, dim=32, seed=3)),
        prefer_gpu_index=False,
    )
    before = flat.model
    assert flat.swap(other) is before
    assert flat.model is other
    assert all(int(i) <= 30 for i, _ in flat.recommend_batch([["1"]], k=10)[0])
    fresh = flat.build_model(load_checkpoint(make_checkpoint(tmp_path, n_items=40, dim=32)))
    assert fresh.n_items == 40 and fresh.index_report.kind == "flat"


def test_a_batch_sees_an_upsert_entirely_or_not_at_all(flat):
    dim = flat.model.catalog.dim
    u = flat.model.checkpoint.embed_users([["1"]])[0]
    big = np.stack([u / np.linalg.norm(u) * (1000 + j) for j in range(20)]).astype(np.float32)
    ids = [f"w{j}" for j in range(20)]
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            flat.upsert_items(ids, big)
            flat.remove_items(ids)

    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(200):
            got = {i for i, _ in flat.recommend_batch([["1"]], k=20)[0]}
            assert got & set(ids) in (set(), set(ids))  # all 20 new items or none
    finally:
        stop.set()
        t.join()
    assert flat.model.catalog.dim == dim


def test_worker_recommender_from_settings(ckpt_path):
    from stream_app.settings import Settings

    s = Settings(index="ivf", index_codes="flat", popular_capacity=20, max_history=7)
    r = Recommender.from_settings(load_checkpoint(ckpt_path), s)
    assert r.model.index_report.kind == "ivf" and r.model.index_report.codes == "flat"
    assert r.index_config.kind == "ivf" and r.max_history == 7
    assert isinstance(r.popularity, WindowedCounter) and r.popularity.capacity == 20
    assert r.build_model(load_checkpoint(ckpt_path)).index_report.kind == "ivf"


@pytest.mark.gpu
def test_gpu_bundle_keeps_its_device_table_in_step(ckpt_path):
    import torch

    r = Recommender.from_checkpoint(ckpt_path, device="cuda")  # FAISS GPU index when it sees one
    m = r.model
    assert m.table.device.type == "cuda"
    u = m.checkpoint.embed_users([["1", "2"]])[0]
    big = (u / np.linalg.norm(u) * 1000).astype(np.float32)
    r.upsert_items([f"g{i}" for i in range(100)], np.tile(big, (100, 1)) * 0.5)
    r.upsert_items(["g7"], big[None])
    assert r.recommend_batch([["1", "2"]], k=1)[0][0][0] == "g7"
    row = m.table[m.index_of["g7"]].cpu().numpy()
    np.testing.assert_allclose(row, big, rtol=1e-6)
    assert torch.equal(m.table[:60].cpu(), torch.from_numpy(m.index.store.array[:60]))
