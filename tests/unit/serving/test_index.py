"""One contract test for every ItemIndex implementation (flat, IVF-PQ, IVF-flat; GPU ones
where FAISS sees a GPU), then the store and the choice of index."""

from __future__ import annotations

import numpy as np
import pytest

from stream_app.index import (
    MAX_DEAD_SHARE,
    FlatIndex,
    GpuFlatIndex,
    GpuIvfIndex,
    IndexConfig,
    IndexReport,
    ItemIndex,
    IvfIndex,
    SearchParams,
    TorchFlatIndex,
    VectorStore,
    exact_topk,
    faiss_module,
    gpu_available,
    make_index,
    omp_threads,
    recall_at,
    rescore,
)


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    """Correctness tests: one OpenMP thread (a busy shared 2-core machine makes two slower)."""
    with omp_threads(1):
        yield


GPU = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not gpu_available(), reason="faiss sees no GPU here (faiss.get_num_gpus() == 0)"
    ),
]


def _flat(dim, store, **kw):
    return FlatIndex(dim, store=store, config=IndexConfig(kind="flat", **kw))


def _ivf_pq(dim, store, **kw):
    return IvfIndex(dim, store=store, config=IndexConfig(kind="ivf", codes="pq", **kw))


def _ivf_flat(dim, store, **kw):
    return IvfIndex(dim, store=store, config=IndexConfig(kind="ivf", codes="flat", **kw))


def _gpu_flat(dim, store, **kw):
    return GpuFlatIndex(dim, store=store, config=IndexConfig(kind="flat", **kw))


def _gpu_ivf(dim, store, **kw):
    return GpuIvfIndex(dim, store=store, config=IndexConfig(kind="ivf", **kw))


def _torch_cpu(dim, store, **kw):
    return TorchFlatIndex(dim, store=store, config=IndexConfig(kind="flat", **kw), device="cpu")


def _torch_cuda(dim, store, **kw):
    return TorchFlatIndex(dim, store=store, config=IndexConfig(kind="flat", **kw), device="cuda")


IMPLS = [
    pytest.param(_flat, id="flat"),
    pytest.param(_ivf_pq, id="ivf-pq"),
    pytest.param(_ivf_flat, id="ivf-flat"),
    pytest.param(_gpu_flat, id="gpu-flat", marks=GPU),
    pytest.param(_gpu_ivf, id="gpu-ivf", marks=GPU),
    pytest.param(_torch_cpu, id="torch-cpu"),
    pytest.param(_torch_cuda, id="torch-cuda", marks=pytest.mark.gpu),  # conftest: torch sees one
]
APPROXIMATE = {"ivf-pq", "ivf-flat", "gpu-ivf"}


def clustered(n: int, dim: int, *, clusters: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)]
    return (x + 0.3 * rng.standard_normal((n, dim))).astype(np.float32)


def built(impl, vectors: np.ndarray, *, sample=None, **kw) -> ItemIndex:
    idx = impl(vectors.shape[1], VectorStore.adopt(vectors.copy()), **kw)
    assert isinstance(idx, ItemIndex)
    report = idx.build(sample=sample)
    assert isinstance(report, IndexReport) and report.items == vectors.shape[0]
    return idx


def _exact(vectors: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(q @ vectors.T), axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("impl", IMPLS)
def test_exact_on_small_data(impl):
    rng = np.random.default_rng(0)
    items = rng.standard_normal((200, 16)).astype(np.float32)
    idx = built(impl, items)
    assert idx.ntotal == 200
    q = rng.standard_normal((8, 16)).astype(np.float32)
    scores, slots = idx.search(q, 5)
    assert scores.shape == slots.shape == (8, 5) and slots.dtype == np.int64
    exact = q @ items.T
    for b in range(8):
        expect = _exact(items, q[b : b + 1], 5)[0]
        assert list(slots[b]) == list(expect)
        np.testing.assert_allclose(scores[b], exact[b, expect], rtol=1e-4, atol=1e-4)
        assert all(np.diff(scores[b]) <= 1e-6)  # best first
    scores, slots = idx.search(q[:1], 250)  # more than ntotal: padded with -1 / -inf
    assert sorted(slots[0, :200].tolist()) == list(range(200))
    assert (slots[0, 200:] == -1).all() and np.isneginf(scores[0, 200:]).all()
    assert idx.search(np.zeros((0, 16), np.float32), 3)[1].shape == (0, 3)
    with pytest.raises(ValueError):
        idx.upsert(np.array([1, 2]), np.zeros((2, 17), np.float32))
    with pytest.raises(ValueError):
        idx.search(np.zeros((1, 17), np.float32), 3)


@pytest.mark.parametrize("impl", IMPLS)
def test_upsert_replaces_and_adds(impl):
    rng = np.random.default_rng(1)
    items = rng.standard_normal((300, 16)).astype(np.float32)
    idx = built(impl, items)
    q = rng.standard_normal((1, 16)).astype(np.float32)
    target = (q / np.linalg.norm(q) * 50).astype(np.float32)
    idx.upsert(np.array([7]), target)  # an existing slot: replaced, not added
    assert idx.ntotal == 300
    scores, slots = idx.search(q, 300)
    assert slots[0, 0] == 7 and list(slots[0]).count(7) == 1
    np.testing.assert_allclose(scores[0, 0], float(q[0] @ target[0]), rtol=1e-4)
    idx.upsert(np.array([7]), -target)  # replaced again: the old vector is gone
    _, slots = idx.search(q, 300)
    assert slots[0, 0] != 7 and list(slots[0]).count(7) == 1 and slots[0, -1] == 7
    idx.upsert(np.array([305]), target)  # a new slot (past a gap): added
    assert idx.ntotal == 301
    assert idx.search(q, 1)[1][0, 0] == 305
    np.testing.assert_array_equal(idx.store.rows(np.array([305]))[0], target[0])
    with pytest.raises(ValueError):
        idx.upsert(np.array([3, 3]), np.zeros((2, 16), np.float32))  # one id twice


@pytest.mark.parametrize("impl", IMPLS)
def test_remove_deletes(impl):
    rng = np.random.default_rng(2)
    items = rng.standard_normal((300, 16)).astype(np.float32)
    idx = built(impl, items)
    q = items[[3, 7, 299]] * 10  # each row's best item is itself
    assert list(idx.search(q, 1)[1][:, 0]) == [3, 7, 299]
    assert idx.remove(np.array([3, 7, 299])) == 3
    assert idx.ntotal == 297
    _, slots = idx.search(q, 300)
    assert not {3, 7, 299} & set(slots.ravel().tolist())
    assert (slots[:, 297:] == -1).all()
    assert idx.remove(np.array([3, 1000])) == 0  # gone already / never there
    idx.upsert(np.array([3]), items[[3]])  # a freed slot comes back
    assert idx.search(q[:1], 1)[1][0, 0] == 3 and idx.ntotal == 298


@pytest.mark.parametrize("impl", IMPLS)
def test_ntotal_never_exceeds_items_under_churn(impl, request):
    rng = np.random.default_rng(3)
    items = clustered(2000, 16, clusters=20)
    idx = built(impl, items)
    on_gpu = request.node.callspec.id.startswith("gpu")
    bound = 2000 + max(1024, MAX_DEAD_SHARE * 2000) + 200 if on_gpu else 2000
    prev = None  # (slot, query) of the last round's winner
    for r in range(60):  # 12,000 re-upserts of existing slots
        slots = rng.choice(2000, 200, replace=False)
        if prev is not None and prev[0] not in slots:
            slots[1] = prev[0]
        vecs = clustered(200, 16, clusters=20, seed=100 + r)
        q = rng.standard_normal((1, 16)).astype(np.float32)
        vecs[0] = q[0] / np.linalg.norm(q) * 100  # this round's winner for q
        idx.upsert(slots, vecs)
        assert idx.ntotal == 2000
        assert idx.rows_held <= bound  # GPU: dead entries, refilled past a share
        assert idx.search(q, 1)[1][0, 0] == slots[0]  # the latest vector is served ...
        if prev is not None:
            assert idx.search(prev[1], 1)[1][0, 0] != prev[0]  # ... the replaced one is gone
        prev = (int(slots[0]), q)
    found = idx.search(np.ones((1, 16), np.float32), 2000)[1]
    assert sorted(set(found.ravel().tolist()) - {-1}) == list(range(2000))


@pytest.mark.parametrize("impl", IMPLS)
def test_search_parameters_are_per_call(impl, request):
    rng = np.random.default_rng(4)
    items = clustered(20_000, 32, clusters=200)
    idx = built(impl, items, sample=rng.standard_normal((128, 32)).astype(np.float32))
    q = rng.standard_normal((64, 32)).astype(np.float32)
    before = idx.search(q, 10)
    narrow = idx.search(q, 10, SearchParams(nprobe=1, refine=1))
    after = idx.search(q, 10)
    np.testing.assert_array_equal(before[1], after[1])  # nothing leaked into later calls
    np.testing.assert_array_equal(before[0], after[0])
    if request.node.callspec.id in APPROXIMATE:  # the parameters did act on that call
        assert not np.array_equal(narrow[1], before[1])
    else:
        np.testing.assert_array_equal(narrow[1], before[1])


@pytest.mark.parametrize("impl", IMPLS)
def test_recall_on_clustered_data(impl):
    rng = np.random.default_rng(5)
    items = clustered(20_000, 32, clusters=200)
    tuning = rng.standard_normal((256, 32)).astype(np.float32)
    idx = built(impl, items, sample=tuning)
    report = idx.build(sample=tuning)  # a rebuild gives the same index size
    assert idx.ntotal == 20_000
    assert report.recall_at_10 is not None and report.recall_at_10 >= 0.95
    held_out = rng.standard_normal((300, 32)).astype(np.float32)
    truth = _exact(items, held_out, 10)
    found = idx.search(held_out, 10)[1]
    assert recall_at(found, truth) >= 0.9


# --------------------------------------------------------------------------- the rest


def test_ivf_tunes_nprobe_to_the_target_and_reports_it():
    rng = np.random.default_rng(6)
    items = clustered(20_000, 32, clusters=200)
    sample = rng.standard_normal((200, 32)).astype(np.float32)
    low = built(_ivf_flat, items, sample=sample, target_recall=0.5)
    high = built(_ivf_flat, items, sample=sample, target_recall=0.99)
    assert low.nlist == high.nlist == 512
    assert 1 <= low.nprobe < high.nprobe <= 512
    assert high.report.recall_at_10 >= 0.99 > low.report.recall_at_10 >= 0.5
    fixed = built(_ivf_flat, items, sample=sample, nprobe=3)
    assert fixed.nprobe == 3 and fixed.report.nprobe == 3
    labels = high.report.labels()
    assert labels["kind"] == "ivf" and labels["nprobe"] == str(high.nprobe)
    assert "recall_at_10" not in labels


def test_vector_store_adopts_then_grows_geometrically():
    vecs = np.arange(12, dtype=np.float32).reshape(4, 3)
    store = VectorStore.adopt(vecs)
    assert store.array is vecs and store.n_live == 4  # no copy
    buffers = set()
    for s in range(4, 2004):
        store.write(np.array([s]), np.full((1, 3), s, np.float32))
        buffers.add(id(store.array))
    assert store.n_live == 2004 and store.capacity >= 2004
    assert len(buffers) <= 20  # x1.5 growth: O(log n) reallocations, not one per write
    np.testing.assert_array_equal(store.rows(np.array([1, 2003])), [[3, 4, 5], [2003] * 3])
    assert list(store.clear(np.array([1, 1, 5000]))) == [1] and store.n_live == 2003
    assert not store.is_live(np.array([1, -1, 10**6])).any()
    with pytest.raises(ValueError):
        store.write(np.array([-1]), np.zeros((1, 3), np.float32))
    read_only = np.zeros((2, 3), np.float32)
    read_only.flags.writeable = False
    assert VectorStore.adopt(read_only).array is not read_only


def test_exact_topk_and_rescore():
    rng = np.random.default_rng(7)
    vecs = rng.standard_normal((70_000, 8)).astype(np.float32)  # more than one chunk
    store = VectorStore.adopt(vecs.copy())
    store.clear(np.array([5, 69_999]))
    q = rng.standard_normal((3, 8)).astype(np.float32)
    expect = q @ vecs.T
    expect[:, [5, 69_999]] = -np.inf
    _, top = exact_topk(store, q, 4)
    np.testing.assert_array_equal(top, np.argsort(-expect, axis=1)[:, :4])
    cand = np.array([[9, 9, 5, -1, 11, 12], [1, 2, 3, 4, 5, 6], [-1, -1, -1, -1, -1, 0]])
    s, i = rescore(store, q, cand, 3, dedupe=True)
    assert list(i[0]) == sorted({9, 11, 12}, key=lambda r: -expect[0, r])  # 5 dead, 9 once
    assert list(i[2]) == [0, -1, -1] and np.isneginf(s[2, 1:]).all()
    np.testing.assert_allclose(s[1], np.sort(expect[1, [1, 2, 3, 4, 6]])[::-1][:3], rtol=1e-5)


def test_nlist_rule():
    cfg = IndexConfig()
    assert cfg.resolve_nlist(500) == 1  # too small to split
    assert cfg.resolve_nlist(20_000) == 512
    assert cfg.resolve_nlist(100_000) == 1024
    assert cfg.resolve_nlist(1_000_000) == 4096
    assert cfg.resolve_nlist(10**9) == 16384
    assert IndexConfig(nlist=64).resolve_nlist(1_000_000) == 64


def test_make_index_auto_threshold_and_cpu_fallback():
    small = make_index(8, n_items=9_999, prefer_gpu=False)
    large = make_index(8, n_items=10_000, prefer_gpu=False)
    assert (small.kind, large.kind) == ("flat", "ivf")
    assert isinstance(small, FlatIndex) and isinstance(large, IvfIndex)
    assert make_index(8, n_items=10, config=IndexConfig(kind="ivf"), prefer_gpu=False).kind == "ivf"
    assert make_index(8, n_items=10**6, config=IndexConfig(kind="flat")).kind == "flat"
    want_gpu = make_index(8, n_items=10)
    assert want_gpu.device == ("gpu" if gpu_available() else "cpu")
    assert make_index(8, n_items=10, config=IndexConfig(gpu=False)).device == "cpu"
    with pytest.raises(RuntimeError):
        IvfIndex(8).upsert(np.array([0]), np.zeros((1, 8), np.float32))  # not built


@pytest.mark.gpu
@pytest.mark.skipif(
    not gpu_available(), reason="faiss sees no GPU here (faiss.get_num_gpus() == 0)"
)
def test_gpu_rebuilds_past_the_dead_share():
    rng = np.random.default_rng(8)
    items = rng.standard_normal((5000, 16)).astype(np.float32)
    idx = built(_gpu_flat, items)
    for _ in range(20):
        idx.upsert(rng.choice(5000, 500, replace=False), rng.standard_normal((500, 16)))
        assert idx.rows_held <= 5000 + max(1024, MAX_DEAD_SHARE * 5000) + 500
    assert idx.ntotal == 5000


def test_ivf_tuning_stops_at_a_recall_plateau(caplog):
    rng = np.random.default_rng(9)
    items = clustered(20_000, 32, clusters=200)
    sample = rng.standard_normal((200, 32)).astype(np.float32)
    # one candidate per result: the codes cap recall; more lists would only cost time
    idx = built(_ivf_pq, items, sample=sample, target_recall=0.9999, refine=1)
    assert idx.nprobe < idx.nlist // 4
    assert idx.report.recall_at_10 < 0.9999
    assert "the most the sample reached" in caplog.text


# --------------------------------------------------------------------------- the torch index


def test_torch_index_matches_exact_numpy_across_blocks_and_growth():
    rng = np.random.default_rng(10)
    items = clustered(3000, 24, clusters=30)
    idx = TorchFlatIndex(
        24, store=VectorStore.adopt(items.copy()), device="cpu", block_elements=4096
    )
    assert (idx.kind, idx.device) == ("flat", "cpu") and isinstance(idx, ItemIndex)
    report = idx.build(sample=rng.standard_normal((64, 24)).astype(np.float32))
    assert report.recall_at_10 == 1.0 and report.items == 3000
    q = rng.standard_normal((100, 24)).astype(np.float32)  # 100 queries: blocks of 1,024 items
    scores, slots = idx.search(q, 10)
    np.testing.assert_array_equal(slots, _exact(items, q, 10))
    np.testing.assert_allclose(scores, np.take_along_axis(q @ items.T, slots, 1), rtol=1e-5)
    new = rng.standard_normal((500, 24)).astype(np.float32)
    idx.upsert(np.arange(5000, 5500), new)  # past the store's capacity: the mirror grows
    idx.remove(np.arange(0, 3000, 2))
    live = np.vstack([items[1::2], new])
    ids = np.concatenate([np.arange(1, 3000, 2), np.arange(5000, 5500)])
    _, slots = idx.search(q, 10)
    np.testing.assert_array_equal(slots, ids[_exact(live, q, 10)])
    assert idx.ntotal == idx.rows_held == 2000
    with pytest.raises(RuntimeError, match="not built"):
        TorchFlatIndex(4, device="cpu").upsert(np.array([0]), np.zeros((1, 4), np.float32))


@pytest.mark.skipif(gpu_available(), reason="FAISS sees a GPU here: the refusal cannot happen")
@pytest.mark.parametrize("cls", [GpuFlatIndex, GpuIvfIndex])
def test_faiss_gpu_indexes_refuse_without_a_gpu(cls):
    with pytest.raises(RuntimeError, match="sees no GPU"):
        cls(8)  # the constructor both share, up to its GPU check


def test_exact_search_uses_blas_from_small_batches_with_the_same_results():
    """FAISS 1.14+ scores a batch by a matrix product only from ``queries x dim >= 128,000``;
    an index built here lowers the switch to a few queries per thread (``bench blas``), and
    the product finds the same items as the one-scan-per-query path."""
    import faiss

    library = faiss.cvar.distance_compute_blas_threshold
    try:
        faiss.cvar.distance_compute_blas_threshold = 128_000  # as FAISS 1.15 ships it
        with omp_threads(1):
            idx = built(_flat, np.random.default_rng(1).standard_normal((3000, 64)).astype("f4"))
            assert faiss.cvar.distance_compute_blas_threshold == 512  # set by the build
            faiss_module()
            assert faiss.cvar.distance_compute_blas_threshold == 512
        q = np.random.default_rng(2).standard_normal((64, 64)).astype(np.float32)
        blas = idx.search(q, 26)
        faiss.cvar.distance_compute_blas_threshold = 2**31 - 1  # one scan per query
        scan = idx.search(q, 26)
        np.testing.assert_array_equal(blas[1], scan[1])
        np.testing.assert_allclose(blas[0], scan[0], rtol=1e-5, atol=1e-5)
    finally:
        faiss.cvar.distance_compute_blas_threshold = library
