"""One contract test for every ItemIndex implementation (FAISS CPU, FAISS GPU)."""

from __future__ import annotations

import numpy as np
import pytest

from stream_app.index import FaissCpuIndex, FaissGpuIndex, ItemIndex, gpu_available, make_index

IMPLS = [
    pytest.param(FaissCpuIndex, id="faiss-cpu"),
    pytest.param(
        FaissGpuIndex,
        id="faiss-gpu",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(
                not gpu_available(), reason="faiss sees no GPU here (faiss.get_num_gpus() == 0)"
            ),
        ],
    ),
]


@pytest.mark.parametrize("impl", IMPLS)
def test_index_contract(impl):
    rng = np.random.default_rng(0)
    dim = 8
    idx = impl(dim)
    assert isinstance(idx, ItemIndex)
    assert idx.ntotal == 0
    items = rng.standard_normal((50, dim)).astype(np.float32)
    idx.add(items[:30])
    idx.add(items[30:])
    assert idx.ntotal == 50
    q = rng.standard_normal((4, dim)).astype(np.float32)
    scores, rows = idx.search(q, 5)
    assert scores.shape == rows.shape == (4, 5)
    exact = q @ items.T
    for b in range(4):
        expect = np.argsort(-exact[b])[:5]
        assert list(rows[b]) == list(expect)
        np.testing.assert_allclose(scores[b], exact[b, expect], rtol=1e-4, atol=1e-4)
        assert all(np.diff(scores[b]) <= 1e-6)  # best first
    # more than ntotal: padded with -1 / -inf
    scores, rows = idx.search(q[:1], 60)
    assert (rows[0, 50:] == -1).all() and np.isneginf(scores[0, 50:]).all()
    # empty batch and wrong shapes
    assert idx.search(np.zeros((0, dim), np.float32), 3)[1].shape == (0, 3)
    with pytest.raises(ValueError):
        idx.add(np.zeros((2, dim + 1), np.float32))


def test_make_index_falls_back_to_cpu():
    idx = make_index(4)
    assert idx.kind == ("faiss-gpu" if gpu_available() else "faiss-cpu")
    assert make_index(4, prefer_gpu=False).kind == "faiss-cpu"
