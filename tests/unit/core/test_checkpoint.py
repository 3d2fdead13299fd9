"""Model store: round trip, tampering, hostile manifests and configs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch

from coldstream.core.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_versions,
    load_checkpoint,
    manifest_sha256,
    save_checkpoint,
)
from coldstream.core.student import Student, StudentConfig


def _make(tmp_path, n_known=30, n_text_only=5, seed=0):
    torch.manual_seed(seed)
    cfg = StudentConfig(n_items=n_known, text_dim=16, dim=8, max_len=10, dropout=0.1)
    model = Student(cfg)
    rng = np.random.default_rng(seed)
    ids = [f"i{i}" for i in range(n_known + n_text_only)]
    text = rng.normal(size=(len(ids), 16)).astype(np.float32)
    path = save_checkpoint(
        tmp_path,
        model=model,
        item_ids=ids,
        item_text_vecs=text,
        item_titles=[f"title {i}" for i in ids],
        metrics={"ndcg@10": 0.5},
    )
    return model, ids, text, path


def test_round_trip_gives_bit_identical_scores(tmp_path):
    model, ids, _, path = _make(tmp_path)
    ck = load_checkpoint(path)
    assert ck.version == 1 and ck.item_ids == ids and ck.metrics == {"ndcg@10": 0.5}
    histories = [["i1", ("i2", "purchase"), "i3"], [], ["unknown", "i7"], [("i4", 1)] * 12]
    a = ck.embed_users(histories)
    b = load_checkpoint(path).embed_users(histories)
    assert a.dtype == np.float32 and a.shape == (4, 8)
    assert np.array_equal(a, b)
    # same as the in-memory model that was saved
    model.eval()
    for name, t in model.state_dict().items():
        assert torch.equal(t, ck.model.state_dict()[name]), name
    recs = ck.recommend(["i1", "i2"], k=5)
    assert len(recs) == 5 and not {"i1", "i2"} & {r[0] for r in recs}
    assert [s for _, s in recs] == sorted((s for _, s in recs), reverse=True)


def test_versions_are_monotonic_and_latest(tmp_path):
    _make(tmp_path)
    _make(tmp_path, seed=1)
    assert list_versions(tmp_path) == [1, 2]
    assert latest_checkpoint(tmp_path).name == "v000002"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_new_item_without_id_embedding_is_placed_by_text(tmp_path):
    _, ids, text, path = _make(tmp_path, n_known=30, n_text_only=5)
    ck = load_checkpoint(path)
    # rows past n_items have no id embedding: their stored vector is text-only
    v = ck.item_vector_for_text(text[32])
    assert np.allclose(v, ck.item_vectors[32], atol=1e-6)
    # and a text-only item can be recommended: a user whose vector points at it gets it first
    u = ck.item_vectors[32] / np.linalg.norm(ck.item_vectors[32])
    scores = ck.item_vectors @ u
    assert ids[int(np.argmax(scores))] in ids


@pytest.mark.parametrize(
    "damage,reason,file",
    [
        ("flip", "checksum_mismatch", "weights.safetensors"),
        ("truncate", "truncated", "weights.safetensors"),
        ("pickle", "not_safetensors", "weights.safetensors"),
        ("delete", "missing_file", "items.safetensors"),
        ("escape", "path_escape", "manifest.json"),
        ("absurd", "bad_config", "config.json"),
        ("oversize", "too_large", "items.safetensors"),
    ],
)
def test_damaged_checkpoint_is_refused_naming_the_file(tmp_path, damage, reason, file):
    _, _, _, path = _make(tmp_path)
    w = path / "weights.safetensors"
    man = json.loads((path / "manifest.json").read_text())
    if damage == "flip":
        data = bytearray(w.read_bytes())
        data[-3] ^= 0xFF
        w.write_bytes(bytes(data))
    elif damage == "truncate":
        w.write_bytes(w.read_bytes()[:-100])
        man["files"]["weights.safetensors"]["bytes"] = w.stat().st_size + 100
        (path / "manifest.json").write_text(json.dumps(man))
    elif damage == "pickle":
        import pickle

        blob = pickle.dumps({"x": 1})
        w.write_bytes(blob)
        import hashlib

        man["files"]["weights.safetensors"] = {
            "bytes": len(blob),
            "sha256": hashlib.sha256(blob).hexdigest(),
        }
        (path / "manifest.json").write_text(json.dumps(man))
    elif damage == "delete":
        (path / "items.safetensors").unlink()
    elif damage == "escape":
        man["files"]["../../etc/passwd"] = {"bytes": 1, "sha256": "0" * 64}
        (path / "manifest.json").write_text(json.dumps(man))
    elif damage == "absurd":
        cfg = json.loads((path / "config.json").read_text())
        cfg["student"]["n_items"] = 10**12
        raw = json.dumps(cfg).encode()
        (path / "config.json").write_bytes(raw)
        import hashlib

        man["files"]["config.json"] = {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
        (path / "manifest.json").write_text(json.dumps(man))
    elif damage == "oversize":
        man["files"]["items.safetensors"]["bytes"] = 10**13
        (path / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path)
    assert ei.value.reason == reason
    assert ei.value.file == file
    assert file in str(ei.value)


def test_symlinked_file_is_refused(tmp_path):
    _, _, _, path = _make(tmp_path / "store")
    outside = tmp_path / "outside.json"
    shutil.copy(path / "metrics.json", outside)
    (path / "metrics.json").unlink()
    (path / "metrics.json").symlink_to(outside)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path)
    assert ei.value.reason == "path_escape"


def test_expected_manifest_sha_is_enforced(tmp_path):
    _, _, _, path = _make(tmp_path)
    assert load_checkpoint(path, expected_sha256=manifest_sha256(path)).version == 1
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path, expected_sha256="0" * 64)
    assert ei.value.reason == "checksum_mismatch"


# --------------------------------------------------------------------------- files opened once


def test_symlinked_manifest_is_refused(tmp_path):
    """A manifest.json that is a symlink (even to an identical copy) is never followed."""
    _, _, _, path = _make(tmp_path / "store")
    copy = tmp_path / "manifest-copy.json"
    shutil.copy(path / "manifest.json", copy)
    (path / "manifest.json").unlink()
    (path / "manifest.json").symlink_to(copy)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path)
    assert (ei.value.reason, ei.value.file) == ("path_escape", "manifest.json")


def test_hard_linked_weights_are_refused(tmp_path):
    """A second name for the weights could change them after the check: refused."""
    _, _, _, path = _make(tmp_path / "store")
    os.link(path / "weights.safetensors", tmp_path / "other-name")
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path)
    assert (ei.value.reason, ei.value.file) == ("hard_link", "weights.safetensors")


def test_a_fifo_in_place_of_a_file_is_refused_without_blocking(tmp_path):
    _, _, _, path = _make(tmp_path / "store")
    (path / "metrics.json").unlink()
    os.mkfifo(path / "metrics.json")
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path)
    assert (ei.value.reason, ei.value.file) == ("not_regular_file", "metrics.json")


def test_a_file_swapped_after_hashing_is_not_what_gets_loaded(tmp_path, monkeypatch):
    """The weights file is replaced (same size, other values) right after its sha256 was
    computed: the loaded weights must be the hashed ones (or the load refused). Before the
    files were read once, the check hashed the file and the load re-opened it by path."""
    model, _, _, path = _make(tmp_path / "a")
    other, _, _, other_path = _make(tmp_path / "b", seed=7)
    good = (path / "weights.safetensors").read_bytes()
    evil = (other_path / "weights.safetensors").read_bytes()
    assert len(good) == len(evil) and good != evil
    good_sha = hashlib.sha256(good).hexdigest()
    real_sha256 = hashlib.sha256
    swapped = []

    class SwapAfterHash:
        def __init__(self, *args):
            self.h = real_sha256(*args)

        def update(self, data):
            self.h.update(data)

        def hexdigest(self):
            digest = self.h.hexdigest()
            if digest == good_sha and not swapped:
                (path / "weights.safetensors").write_bytes(evil)  # in place, same size
                swapped.append(True)
            return digest

    monkeypatch.setattr(hashlib, "sha256", SwapAfterHash)
    try:
        ck = load_checkpoint(path)
    except CheckpointError:
        ck = None  # refusing is fine too
    monkeypatch.setattr(hashlib, "sha256", real_sha256)
    assert swapped, "the hash of the weights was never computed"
    if ck is not None:
        model.eval()
        for name, t in model.state_dict().items():
            assert torch.equal(t, ck.model.state_dict()[name]), f"{name}: swapped bytes loaded"


# --------------------------------------------------------------------------- signatures, pruning


def test_signed_checkpoint_verifies_and_unsigned_or_foreign_is_refused(tmp_path):
    from coldstream.core.checkpoint import sign_checkpoint
    from coldstream.core.signing import Signer

    ours, theirs = Signer.generate(), Signer.generate()
    _, _, _, path = _make(tmp_path)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path, verify_keys=ours.keyring)
    assert (ei.value.reason, ei.value.file) == ("unsigned", "signature.json")
    sign_checkpoint(path, theirs)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path, verify_keys=ours.keyring)
    assert ei.value.reason == "unknown_key"
    sign_checkpoint(path, ours)
    ck = load_checkpoint(path, verify_keys=ours.keyring)
    assert ck.signed_by == ours.key_id and ck.manifest_sha256 == manifest_sha256(path)
    # the signature is over this manifest: a resealed manifest (new sums) breaks it
    man = json.loads((path / "manifest.json").read_text())
    man["created_at"] = 0.0
    (path / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path, verify_keys=ours.keyring)
    assert ei.value.reason == "bad_signature"


def test_save_with_a_signer_signs_before_the_directory_appears(tmp_path):
    from coldstream.core.signing import Signer

    signer = Signer.generate()
    torch.manual_seed(0)
    model = Student(StudentConfig(n_items=5, text_dim=4, dim=4, max_len=5))
    path = save_checkpoint(
        tmp_path, model=model, item_ids=list("abcde"), item_text_vecs=np.ones((5, 4)), signer=signer
    )
    assert load_checkpoint(path, verify_keys=signer.keyring).signed_by == signer.key_id


def test_prune_keeps_the_newest_and_the_protected(tmp_path):
    from coldstream.core.checkpoint import prune_store

    torch.manual_seed(0)
    model = Student(StudentConfig(n_items=3, text_dim=4, dim=4, max_len=5))
    for _ in range(6):
        save_checkpoint(tmp_path, model=model, item_ids=list("abc"), item_text_vecs=np.ones((3, 4)))
    assert prune_store(tmp_path, keep=2, protect=[1]) == [2, 3, 4]
    assert list_versions(tmp_path) == [1, 5, 6]
    assert prune_store(tmp_path, keep=2, protect=[1]) == []


@pytest.mark.parametrize("target", ["items.safetensors", "weights.safetensors"])
def test_a_checkpoint_with_nan_is_refused_at_load_even_signed(tmp_path, target):
    """Hashes, signature and shapes can all be right on a checkpoint full of NaN (it ranked
    every item to nothing): finiteness is checked too."""
    from safetensors.numpy import load_file, save_file

    from coldstream.core.checkpoint import MANIFEST, CheckpointError, sha256_file, sign_checkpoint
    from coldstream.core.signing import Signer
    from devtools.checkpoints import make_checkpoint

    signer = Signer.generate()
    path = make_checkpoint(tmp_path / "s", n_items=30, signer=signer)
    tensors = load_file(str(path / target))
    name = sorted(k for k, v in tensors.items() if v.dtype.kind == "f")[0]
    tensors[name] = tensors[name].copy()
    tensors[name].flat[0] = np.nan
    save_file(tensors, str(path / target))
    m = json.loads((path / MANIFEST).read_text())
    m["files"][target] = {
        "sha256": sha256_file(path / target),
        "bytes": (path / target).stat().st_size,
    }
    (path / MANIFEST).write_text(json.dumps(m))
    sign_checkpoint(path, signer)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, verify_keys=signer.keyring)
    assert e.value.reason == "non_finite" and e.value.file == target


def test_a_diverged_model_is_never_written(tmp_path):
    model = Student(StudentConfig(n_items=10, dim=8, text_dim=8))
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN or infinity"):
        save_checkpoint(
            tmp_path,
            model=model,
            item_ids=[str(i) for i in range(10)],
            item_text_vecs=np.zeros((10, 8), np.float32),
        )
    assert not list(tmp_path.iterdir())  # nothing left behind
