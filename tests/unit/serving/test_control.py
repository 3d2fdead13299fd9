"""Hot swap (``stream_app.control``) against real checkpoints: every hostile or broken update
is refused with its own reason, counted, and the old model keeps serving; a good one swaps."""

from __future__ import annotations

import asyncio
import json
import os
import shutil

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from coldstream.core.checkpoint import MANIFEST, manifest_sha256, sha256_file
from coldstream.core.model_updates import make_update
from devtools.checkpoints import make_checkpoint
from stream_app.control import ItemVectorSink, ModelSwapper
from stream_app.metrics import Metrics
from stream_app.recommender import Recommender

KEY = "hot-swap-secret"
HISTORIES = [["1", "2", "3"], [("5", 1)], ["ghost"]]


@pytest.fixture
def world(tmp_path):
    store = tmp_path / "store"
    v1 = make_checkpoint(store, n_items=60, seed=1)
    v2 = make_checkpoint(store, n_items=60, seed=2)
    rec = Recommender.from_checkpoint(v1, device="cpu", prefer_gpu_index=False)
    metrics = Metrics(CollectorRegistry())
    swapper = ModelSwapper(
        rec, store_root=store, key=KEY, metrics=metrics, device="cpu", prefer_gpu_index=False
    )
    return store, v1, v2, rec, metrics, swapper


def _update(path, *, key=KEY, version=2, sha=None):
    upd = make_update(
        version=version,
        checkpoint_dir=path,
        manifest_sha256=sha or manifest_sha256(path),
        metrics={"ndcg@10": 0.1},
        key=key,
    )
    return json.loads(upd.to_json())


def _reseal(path):
    """Rewrite the manifest so it matches the (tampered) files again: only the announced
    manifest sha256 / the file-format checks can catch what follows."""
    m = json.loads((path / MANIFEST).read_text())
    for name in m["files"]:
        m["files"][name] = {
            "sha256": sha256_file(path / name),
            "bytes": (path / name).stat().st_size,
        }
    (path / MANIFEST).write_text(json.dumps(m))


def _unsigned(store, v2):
    d = _update(v2)
    d["signature"] = None
    return d


def _wrong_signature(store, v2):
    return _update(v2, key="not-the-key")


def _checksum_mismatch(store, v2):
    d = _update(v2)
    w = v2 / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte flipped
    w.write_bytes(bytes(data))
    return d


def _truncated_weights(store, v2):
    w = v2 / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    _reseal(v2)  # even a consistent manifest cannot hide a cut file
    return _update(v2)


def _outside_store(store, v2):
    outside = store.parent / "elsewhere" / "v000002"
    shutil.copytree(v2, outside)
    return _update(outside)


def _symlink_escape(store, v2):
    outside = store.parent / "elsewhere-v2"
    shutil.copytree(v2, outside)
    link = store / "v000099"
    os.symlink(outside, link)
    d = _update(outside)
    d["uri"] = link.absolute().as_uri()  # lexically inside the store, really outside
    from coldstream.core.model_updates import sign

    d["signature"] = sign(d, KEY)
    return d


def _pickle_weights(store, v2):
    w = v2 / "weights.safetensors"
    torch.save({"x": torch.zeros(3)}, w)  # a pickle (zip) under the safetensors name
    _reseal(v2)
    return _update(v2)


def _bare_pickle_weights(store, v2):
    import pickle

    (v2 / "weights.safetensors").write_bytes(pickle.dumps({"x": [0.0] * 100}, protocol=4))
    _reseal(v2)
    return _update(v2)


def _bad_scheme(store, v2):
    d = _update(v2)
    d["uri"] = "https://example.com/v000002"
    from coldstream.core.model_updates import sign

    d["signature"] = sign(d, KEY)
    return d


def _dotdot(store, v2):
    d = _update(v2)
    d["uri"] = (store / "v000002" / ".." / ".." / "x").as_posix()
    from coldstream.core.model_updates import sign

    d["signature"] = sign(d, KEY)
    return d


CASES = [
    (_unsigned, "unsigned"),
    (_wrong_signature, "bad_signature"),
    (_checksum_mismatch, "checksum_mismatch"),
    (_truncated_weights, "truncated"),
    (_outside_store, "uri_outside_store"),
    (_symlink_escape, "symlink_escape"),
    (_pickle_weights, "not_safetensors"),
    (_bare_pickle_weights, "not_safetensors"),
    (_bad_scheme, "bad_scheme"),
    (_dotdot, "uri_outside_store"),
]


@pytest.mark.parametrize(("make", "reason"), CASES, ids=[c[0].__name__.strip("_") for c in CASES])
def test_bad_update_is_refused_and_old_model_serves(world, make, reason):
    store, v1, v2, rec, metrics, swapper = world
    before = rec.recommend_batch(HISTORIES, 5)
    raw = json.dumps(make(store, v2)).encode()
    res = asyncio.run(swapper.handle(raw))
    assert res.outcome == "refused" and res.reason == reason, res
    assert rec.model.version == "1"
    assert rec.recommend_batch(HISTORIES, 5) == before  # the very same model answers
    reg = metrics.registry
    assert reg.get_sample_value("coldstream_model_swap_failures_total", {"reason": reason}) == 1.0
    assert reg.get_sample_value("coldstream_model_swaps_total", {"outcome": "refused"}) == 1.0
    assert reg.get_sample_value("coldstream_model_swaps_total", {"outcome": "ok"}) is None


def test_refusal_reasons_are_distinct():
    """The seven failures the issue names map to seven different reason codes."""
    named = [r for f, r in CASES if f not in (_bare_pickle_weights, _bad_scheme, _dotdot)]
    assert len(named) == len(set(named)) == 7


def test_good_update_swaps_and_serves_new_version(world):
    store, v1, v2, rec, metrics, swapper = world
    old = rec.model
    res = asyncio.run(swapper.handle(json.dumps(_update(v2))))
    assert res.outcome == "ok" and res.version == 2 and res.seconds > 0
    assert rec.model is not old and rec.model.version == "2"
    offline = Recommender.from_checkpoint(v2, device="cpu", prefer_gpu_index=False)
    assert rec.recommend_batch(HISTORIES, 5) == offline.recommend_batch(HISTORIES, 5)
    assert (
        metrics.registry.get_sample_value("coldstream_model_swaps_total", {"outcome": "ok"}) == 1.0
    )
    assert metrics.registry.get_sample_value("coldstream_model_version") == 2.0
    # replaying the same (or an older) record is a no-op, not a failure
    again = asyncio.run(swapper.handle(json.dumps(_update(v2))))
    assert again.outcome == "skipped" and rec.model.version == "2"
    old_rec = asyncio.run(swapper.handle(json.dumps(_update(v1, version=1))))
    assert old_rec.outcome == "skipped"


def test_version_mismatch_is_refused(world):
    store, v1, v2, rec, metrics, swapper = world
    res = swapper.handle_sync(json.dumps(_update(v2, version=7)))
    assert (res.outcome, res.reason) == ("refused", "version_mismatch") and rec.model.version == "1"


def test_load_runs_off_the_event_loop(world, monkeypatch):
    """The loop keeps turning while a (slow) checkpoint is loaded and indexed."""
    store, v1, v2, rec, metrics, swapper = world
    import time as _time

    real = swapper.prepare

    def slow(raw):
        _time.sleep(0.5)
        return real(raw)

    monkeypatch.setattr(swapper, "prepare", slow)

    async def main():
        ticks = 0
        task = asyncio.create_task(swapper.handle(json.dumps(_update(v2))))
        while not task.done():
            ticks += 1
            assert rec.model.version == "1"  # never half swapped
            await asyncio.sleep(0.01)
        return ticks, task.result()

    ticks, res = asyncio.run(main())
    assert res.outcome == "ok" and ticks >= 20


def test_item_vectors_only_for_the_served_version(world):
    store, v1, v2, rec, metrics, swapper = world
    sink = ItemVectorSink(rec, metrics)
    swapper.on_swap = sink.on_swap
    dim = rec.model.table.shape[1]
    target = np.asarray(rec.model.checkpoint.embed_users([["1", "2"]])[0], np.float32)
    new_vec = (target * 100).tolist()  # the best possible item for that user

    def rec_json(item, ver, vec):
        return json.dumps({"item_id": item, "model_version": ver, "vector": vec}).encode()

    n = sink.add_many(
        [
            rec_json("new-1", "1", new_vec),
            rec_json("stale", "0", [0.0] * dim),
            rec_json("later", "2", new_vec),
            b"junk",
            rec_json("bad-dim", "1", [1.0]),
        ]
    )
    assert n == 1 and "new-1" in rec.model.index_of and "stale" not in rec.model.index_of
    assert "later" not in rec.model.index_of and sink.pending["2"].keys() == {"later"}
    assert rec.recommend_batch([["1", "2"]], 3)[0][0][0] == "new-1"
    assert swapper.handle_sync(json.dumps(_update(v2))).outcome == "ok"
    assert "later" in rec.model.index_of and "new-1" not in rec.model.index_of
    assert not sink.pending
