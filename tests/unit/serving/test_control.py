"""Hot swap and item upserts (``stream_app.control``) against real checkpoints and real
Ed25519 keys: every hostile or broken update is refused with its own reason, counted, and
the old model keeps serving; a good one swaps; a replayed one is skipped; a rollback (older
version, higher seq) is followed; item vectors are signed, bounded and isolated per record."""

from __future__ import annotations

import asyncio
import json
import os
import shutil

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from coldstream.core.checkpoint import MANIFEST, manifest_sha256, sha256_file, sign_checkpoint
from coldstream.core.model_updates import make_item_vector, make_update
from coldstream.core.rollout import make_decision
from coldstream.core.signing import Signer
from devtools.checkpoints import make_checkpoint
from stream_app.control import (
    MAX_PENDING_VERSIONS,
    MAX_RESULTS,
    ItemVectorSink,
    ModelSwapper,
    handle_update,
    handle_vectors,
)
from stream_app.metrics import Metrics
from stream_app.recommender import Recommender

SIGNER = Signer.generate()
OTHER = Signer.generate()
HISTORIES = [["1", "2", "3"], [("5", 1)], ["ghost"]]


@pytest.fixture
def world(tmp_path):
    store = tmp_path / "store"
    v1 = make_checkpoint(store, n_items=60, seed=1, signer=SIGNER)  # CURRENT.json: v1, seq 1
    v2 = make_checkpoint(store, n_items=60, seed=2, signer=SIGNER, point=False)
    rec = Recommender.from_checkpoint(v1, device="cpu", prefer_gpu_index=False)
    metrics = Metrics(CollectorRegistry())
    swapper = ModelSwapper(
        rec,
        store_root=store,
        keys=SIGNER.keyring,
        served_seq=1,
        metrics=metrics,
        device="cpu",
        prefer_gpu_index=False,
    )
    return store, v1, v2, rec, metrics, swapper


def _update(path, *, signer=SIGNER, version=2, seq=2, sha=None, **rollout):
    upd = make_update(
        version=version,
        seq=seq,
        checkpoint_dir=path,
        manifest_sha256=sha or manifest_sha256(path),
        metrics={"ndcg@10": 0.1},
        signer=signer,
        **rollout,
    )
    return json.loads(upd.to_json())


def _resign(d):
    return SIGNER.sign("model-update", d)


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
    sign_checkpoint(path, SIGNER)  # signed again: the file checks themselves must catch it


def _unsigned(store, v2):
    d = _update(v2)
    d["signature"] = None
    return d


def _forged(store, v2):
    return _update(v2, signer=OTHER)  # signed by a key the worker does not have


def _tampered(store, v2):
    d = _update(v2)
    d["metrics"] = {"ndcg@10": 0.99}  # any change after signing
    return d


def _unsigned_checkpoint(store, v2):
    (v2 / "signature.json").unlink()  # the record is signed, the directory is not
    return _update(v2)


def _oversize(store, v2):
    return {**_update(v2), "metrics": {"pad": "x" * 300_000}}


def _nested(store, v2):
    return b"[" * 100_000 + b"]" * 100_000  # 200 KB of nesting: the RecursionError is caught


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
    return _resign(d)


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
    return _resign(d)


def _dotdot(store, v2):
    d = _update(v2)
    d["uri"] = (store / "v000002" / ".." / ".." / "x").as_posix()
    return _resign(d)


CASES = [
    (_unsigned, "unsigned"),
    (_forged, "unknown_key"),
    (_tampered, "bad_signature"),
    (_unsigned_checkpoint, "unsigned"),
    (_oversize, "oversize"),
    (_nested, "bad_record"),
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
    made = make(store, v2)
    raw = made if isinstance(made, bytes) else json.dumps(made).encode()
    res = asyncio.run(swapper.handle(raw))
    assert res.outcome == "refused" and res.reason == reason, res
    assert rec.model.version == "1"
    assert rec.recommend_batch(HISTORIES, 5) == before  # the very same model answers
    reg = metrics.registry
    assert reg.get_sample_value("coldstream_model_swap_failures_total", {"reason": reason}) == 1.0
    assert reg.get_sample_value("coldstream_model_swaps_total", {"outcome": "refused"}) == 1.0
    assert reg.get_sample_value("coldstream_model_swaps_total", {"outcome": "ok"}) is None


def test_refusal_reasons_are_distinct():
    """The failures the issues name map to different reason codes."""
    named = [
        r
        for f, r in CASES
        if f not in (_bare_pickle_weights, _bad_scheme, _dotdot, _unsigned_checkpoint, _nested)
    ]
    assert len(named) == len(set(named)) == 9


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
    assert metrics.registry.get_sample_value("coldstream_model_seq") == 2.0
    # replaying the same record, or an old one, is a no-op, not a failure
    again = asyncio.run(swapper.handle(json.dumps(_update(v2))))
    assert again.outcome == "skipped" and rec.model.version == "2"
    old_rec = asyncio.run(swapper.handle(json.dumps(_update(v1, version=1, seq=1))))
    assert old_rec.outcome == "skipped" and rec.model.version == "2"


RID = "r-2-1790000000"


def _decision(decision, *, rollout_id=RID, signer=SIGNER):
    return make_decision(rollout_id, 2, 1, decision, {"n": 10}, signer)


def _gauge(metrics, arm):
    return metrics.registry.get_sample_value("coldstream_rollout_candidate_version", {"arm": arm})


@pytest.mark.parametrize(("arm", "share"), [("canary", 0.1), ("shadow", None)])
def test_a_candidate_is_held_beside_the_live_model(world, arm, share):
    """A signed canary or shadow update loads beside the live model: live still answers
    (``recommend_batch`` is the live bundle's), the candidate names its arm, share and
    rollout, and a second candidate replaces the first (at most one)."""
    store, v1, v2, rec, metrics, swapper = world
    before = rec.recommend_batch(HISTORIES, 5)
    res = asyncio.run(swapper.handle(json.dumps(_update(v2, arm=arm, share=share, rollout_id=RID))))
    assert res.outcome == "ok" and res.version == 2, res
    assert rec.model.version == "1" and rec.recommend_batch(HISTORIES, 5) == before
    cand = rec.candidate
    assert cand is not None and (cand.arm, cand.rollout_id, cand.model.version) == (arm, RID, "2")
    assert cand.share == (share or 0.0) and swapper.served_seq == 1  # live's, unchanged
    assert (
        _gauge(metrics, arm) == 2.0
        and metrics.registry.get_sample_value("coldstream_model_version") != 2.0
    )
    again = _update(v2, seq=3, arm="canary", share=0.2, rollout_id="r-2-1790000099")
    assert asyncio.run(swapper.handle(json.dumps(again))).outcome == "ok"
    assert rec.candidate.rollout_id == "r-2-1790000099" and rec.candidate.share == 0.2


def test_a_rollback_decision_drops_the_candidate_once(world):
    store, v1, v2, rec, metrics, swapper = world
    asyncio.run(swapper.handle(json.dumps(_update(v2, arm="canary", share=0.1, rollout_id=RID))))
    other = asyncio.run(swapper.handle(_decision("rollback", rollout_id="r-9-1790000000")))
    assert other.outcome == "skipped" and rec.candidate is not None  # not this rollout
    forged = asyncio.run(swapper.handle(_decision("rollback", signer=OTHER)))
    assert forged.outcome == "refused" and forged.reason == "unknown_key"
    assert rec.candidate is not None
    promote = asyncio.run(swapper.handle(_decision("promote")))
    assert promote.outcome == "ok" and rec.candidate is not None  # waits for the live record
    res = asyncio.run(swapper.handle(_decision("rollback")))
    assert res.outcome == "ok" and res.reason == "decision_rollback"
    assert rec.candidate is None and rec.model.version == "1" and _gauge(metrics, "canary") == 0.0
    replay = swapper.handle_sync(_decision("rollback"))
    assert replay.outcome == "skipped" and rec.model.version == "1"
    canary = _update(v2, arm="canary", share=0.1, rollout_id=RID)
    assert swapper.handle_sync(json.dumps(canary)).outcome == "skipped"  # decided: not again
    assert rec.candidate is None
    reg = metrics.registry
    assert (
        reg.get_sample_value(
            "coldstream_control_records_total",
            {"topic": "model-updates", "outcome": "applied", "reason": "decision_rollback"},
        )
        == 1.0
    )


def test_the_live_record_of_a_promotion_swaps_the_candidates_bundle_in(world):
    store, v1, v2, rec, metrics, swapper = world
    asyncio.run(swapper.handle(json.dumps(_update(v2, arm="canary", share=0.1, rollout_id=RID))))
    cand = rec.candidate
    # the pointer's next number: the rollout's record took it too, but it is a live record
    res = asyncio.run(swapper.handle(json.dumps(_update(v2, seq=2, arm="live", rollout_id=RID))))
    assert res.outcome == "ok" and rec.model is cand.model  # no second load or index build
    assert rec.candidate is None and rec.model.version == "2" and swapper.served_seq == 2
    assert metrics.registry.get_sample_value("coldstream_model_version") == 2.0


def test_a_plain_live_update_ends_a_running_rollout(world):
    store, v1, v2, rec, metrics, swapper = world
    asyncio.run(swapper.handle(json.dumps(_update(v2, arm="shadow", rollout_id=RID))))
    v3 = make_checkpoint(store, n_items=60, seed=3, signer=SIGNER, point=False)
    res = asyncio.run(swapper.handle(json.dumps(_update(v3, version=3, seq=3))))
    assert res.outcome == "ok" and rec.model.version == "3" and rec.candidate is None


def test_a_replayed_old_update_is_not_followed(world):
    """A valid, signed record from the past (seq 1: the v1 promotion) replayed while v2 is
    served with seq 2: skipped. Before sequence numbers, a record of a *newer* version was
    enough, so a replayed v2 record moved a worker that had been rolled back to v1."""
    store, v1, v2, rec, metrics, swapper = world
    assert swapper.handle_sync(json.dumps(_update(v2, seq=2))).outcome == "ok"
    assert swapper.handle_sync(json.dumps(_update(v1, version=1, seq=3))).outcome == "ok"
    assert rec.model.version == "1"  # rolled back
    replay = swapper.handle_sync(json.dumps(_update(v2, seq=2)))
    assert (replay.outcome, replay.reason, rec.model.version) == ("skipped", "not_newer", "1")
    get = metrics.registry.get_sample_value
    assert (
        get(
            "coldstream_control_records_total",
            {"topic": "model-updates", "outcome": "skipped", "reason": "not_newer"},
        )
        == 1.0
    )


def test_a_rollback_to_an_older_version_is_followed(world):
    store, v1, v2, rec, metrics, swapper = world
    assert swapper.handle_sync(json.dumps(_update(v2, seq=2))).outcome == "ok"
    back = swapper.handle_sync(json.dumps(_update(v1, version=1, seq=3)))
    assert (back.outcome, back.version, back.seq) == ("ok", 1, 3)
    offline = Recommender.from_checkpoint(v1, device="cpu", prefer_gpu_index=False)
    assert rec.recommend_batch(HISTORIES, 5) == offline.recommend_batch(HISTORIES, 5)
    assert swapper.served_seq == 3


def test_swap_results_are_bounded(world):
    store, v1, v2, rec, metrics, swapper = world
    for _ in range(MAX_RESULTS + 50):
        swapper.handle_sync(b"junk")
    assert len(swapper.results) == MAX_RESULTS
    assert metrics.registry.get_sample_value(
        "coldstream_model_swap_failures_total", {"reason": "bad_record"}
    ) == float(MAX_RESULTS + 50)


def test_one_bad_update_record_never_ends_the_follower(world):
    store, v1, v2, rec, metrics, swapper = world

    async def main():
        first = await handle_update(swapper, b"[" * 200_000)
        second = await handle_update(swapper, json.dumps(_update(v2)).encode())
        return first, second

    first, second = asyncio.run(main())
    assert first.outcome == "refused" and second.outcome == "ok" and rec.model.version == "2"


def test_version_mismatch_is_refused(world):
    store, v1, v2, rec, metrics, swapper = world
    res = swapper.handle_sync(json.dumps(_update(v2, version=7, seq=2)))
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


def _vec(item, ver, vec, signer=SIGNER):
    return make_item_vector(item, ver, vec, signer)


def test_item_vectors_only_for_the_served_version(world):
    store, v1, v2, rec, metrics, swapper = world
    sink = ItemVectorSink(rec, metrics, keys=SIGNER.keyring)
    swapper.on_swap = sink.on_swap
    dim = rec.model.table.shape[1]
    target = np.asarray(rec.model.checkpoint.embed_users([["1", "2"]])[0], np.float32)
    bound = rec.model.checkpoint.max_item_norm
    best = target / np.linalg.norm(target) * bound  # as long as the longest real item
    new_vec = best.tolist()

    n = sink.add_many(
        [
            _vec("new-1", "1", new_vec),
            _vec("stale", "0", [0.0] * dim),
            _vec("later", "2", new_vec),
            b"junk",
            _vec("bad-dim", "1", [1.0]),
        ]
    )
    assert n == 1 and "new-1" in rec.model.index_of and "stale" not in rec.model.index_of
    assert "later" not in rec.model.index_of and sink.pending["2"].keys() == {"later"}
    assert rec.recommend_batch([["1", "2"]], 3)[0][0][0] == "new-1"
    assert swapper.handle_sync(json.dumps(_update(v2))).outcome == "ok"
    assert "later" in rec.model.index_of and "new-1" not in rec.model.index_of
    assert not sink.pending
    assert sink.reasons == {"stale_version": 1, "bad_record": 1, "bad_dim": 1}


def _ranked_anywhere(rec, item, users=(["1", "2"], ["3"], [("5", 1)], ["7", "9", "11"])):
    return any(item in [i for i, _ in items] for items in rec.recommend_batch(list(users), 10))


@pytest.mark.parametrize(
    "make,reason",
    [
        # hand-written, unsigned: the finding's "rank 1 for every user"
        (
            lambda t, d: json.dumps({"item_id": "evil", "model_version": "1", "vector": t}),
            "unsigned",
        ),
        (lambda t, d: _vec("evil", "1", t, signer=OTHER), "unknown_key"),
        # near float32 max: signed, finite in JSON, scores would be inf
        (lambda t, d: _vec("evil", "1", [3.0e38] * d), "norm_too_large"),
        (lambda t, d: _vec("evil", "1", (np.asarray(t) * 1000).tolist()), "norm_too_large"),
        (lambda t, d: _vec("1", "1", t), "checkpoint_item"),  # replacing a checkpoint item
        (lambda t, d: _vec("e\u0301vil", "1", t), "bad_id"),
    ],
    ids=["unsigned", "forged", "float32_max", "long", "replace_existing", "bad_id"],
)
def test_hostile_item_vectors_are_refused_and_never_ranked(world, make, reason):
    store, v1, v2, rec, metrics, swapper = world
    sink = ItemVectorSink(rec, metrics, keys=SIGNER.keyring)
    dim = rec.model.table.shape[1]
    target = rec.model.checkpoint.embed_users([["1", "2"]])[0]
    target = (target / np.linalg.norm(target) * rec.model.checkpoint.max_item_norm).tolist()
    before = rec.recommend_batch([["1", "2"], ["3"]], 10)
    assert sink.add_many([make(target, dim)]) == 0
    assert sink.reasons == {reason: 1}
    assert not _ranked_anywhere(rec, "evil")
    assert rec.recommend_batch([["1", "2"], ["3"]], 10) == before  # nothing changed
    assert all(np.isfinite(s) for items in before for _, s in items)
    assert (
        metrics.registry.get_sample_value(
            "coldstream_control_records_total",
            {"topic": "item-vectors", "outcome": "refused", "reason": reason},
        )
        == 1.0
    )


def test_a_flood_of_future_versions_cannot_grow_the_pending_slots(world):
    store, v1, v2, rec, metrics, swapper = world
    sink = ItemVectorSink(rec, metrics, keys=SIGNER.keyring)
    dim = rec.model.table.shape[1]
    sink.add_many([_vec(f"n{i}", str(10 + i), [0.01] * dim) for i in range(50)])
    assert len(sink.pending) == MAX_PENDING_VERSIONS
    assert sink.reasons == {"pending_versions_full": 50 - MAX_PENDING_VERSIONS}


def test_a_deeply_nested_item_vector_record_is_counted_and_the_batch_goes_on(world):
    """200 KB of '[' on item-vectors raised RecursionError out of the follower (the worker
    exited, and every new one re-read it from offset 0). Now: refused, counted, the good
    record of the same batch applied."""
    store, v1, v2, rec, metrics, swapper = world
    sink = ItemVectorSink(rec, metrics, keys=SIGNER.keyring)
    dim = rec.model.table.shape[1]
    nested_small = b"[" * 60_000  # under the size cap: the parser's recursion is caught
    nested_big = b"[" * 200_000  # over the cap: dropped before parsing
    good = _vec("new-1", "1", [0.01] * dim)
    n = asyncio.run(handle_vectors(sink, [nested_big, nested_small, None, good]))
    assert n == 1 and "new-1" in rec.model.index_of
    assert sink.reasons == {"oversize": 1, "bad_record": 2}
