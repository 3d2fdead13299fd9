"""The worker's start-up model choice (``stream_app.worker.build``): the signed pointer's
version; never an unsigned directory dropped into the store; a corrupt newest checkpoint
falls back to the older good one and says so (log and metric)."""

from __future__ import annotations

import logging
import os
import shutil

import pytest
from prometheus_client import CollectorRegistry

from coldstream.core.signing import Signer
from devtools.checkpoints import make_checkpoint
from stream_app.settings import Settings
from stream_app.worker import NoModelError, build

SIGNER = Signer.generate()


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("COLDSTREAM_"):
            monkeypatch.delenv(name)


def _settings(store, **over):
    return Settings(
        model_store=store,
        verify_keys=SIGNER.public_b64(),
        topic_prefix="unit-",
        device="cpu",
        **over,
    )


def _ck(store, seed, **kw):
    return make_checkpoint(store, n_items=30, dim=8, text_dim=8, seed=seed, **kw)


def _sample(w, name, labels=None):
    return w.metrics.registry.get_sample_value(name, labels or {})


def test_an_unsigned_v000999_in_the_store_is_not_served(clean_env, tmp_path):
    store = tmp_path / "store"
    _ck(store, 1, signer=SIGNER)
    shutil.copytree(_ck(tmp_path / "rogue", 9), store / "v000999")  # written by hand, unsigned
    w = build(_settings(store), registry=CollectorRegistry())
    assert w.recommender.model.version == "1"
    assert _sample(w, "coldstream_model_seq") == 1.0
    assert w.control.swapper.served_seq == 1  # updates must carry seq > 1, not "version > 999"


def test_a_corrupt_newest_checkpoint_falls_back_and_says_so(clean_env, tmp_path, caplog):
    store = tmp_path / "store"
    _ck(store, 1, signer=SIGNER)
    v2 = _ck(store, 2, signer=SIGNER)
    (v2 / "items.safetensors").write_bytes(b"\0" * (v2 / "items.safetensors").stat().st_size)
    with caplog.at_level(logging.WARNING, logger="stream_app.worker"):
        w = build(_settings(store), registry=CollectorRegistry())
    assert w.recommender.model.version == "1"
    labels = {"reason": "pointed_checkpoint_refused"}
    assert _sample(w, "coldstream_model_start_fallback", labels) == 1.0
    assert "v000002: not_safetensors" in caplog.text and "newest verified" in caplog.text


def test_unsigned_checkpoints_only_with_the_dev_setting_and_never_in_prod(clean_env, tmp_path):
    store = tmp_path / "store"
    _ck(store, 1)
    with pytest.raises(NoModelError, match="COLDSTREAM_ALLOW_UNSIGNED_CHECKPOINTS"):
        build(_settings(store), registry=CollectorRegistry())
    w = build(_settings(store, allow_unsigned_checkpoints=True), registry=CollectorRegistry())
    assert w.recommender.model.version == "1"
    assert _sample(w, "coldstream_model_start_fallback", {"reason": "no_pointer"}) == 1.0
    with pytest.raises(NoModelError, match="refused in the prod profile"):
        build(
            _settings(store, allow_unsigned_checkpoints=True, profile="prod"),
            registry=CollectorRegistry(),
        )


def test_cap_threads_caps_every_compute_library():
    # torch, FAISS and numpy's own BLAS (the numpy student encoder's products): a worker
    # with COLDSTREAM_THREADS=1 uses one core whatever ranks its batches
    import faiss
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    from stream_app.worker import cap_threads

    before = (torch.get_num_threads(), faiss.omp_get_max_threads())
    with threadpool_limits(limits=None):  # restores numpy's BLAS threads on exit
        try:
            cap_threads(1)
            assert torch.get_num_threads() == 1
            assert faiss.omp_get_max_threads() == 1
            blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
            assert blas and all(i["num_threads"] == 1 for i in blas)
        finally:
            torch.set_num_threads(before[0])
            faiss.omp_set_num_threads(before[1])
