"""The store's signed pointer and the start-up choice of the checkpoint: what the pointer
names is served; an unsigned newer directory never is; a refused pointer target falls back
to the newest verified version, saying why."""

from __future__ import annotations

import json
import shutil

import pytest

from coldstream.core.checkpoint import manifest_sha256
from coldstream.core.pointer import (
    POINTER,
    NoServableModel,
    PointerError,
    read_pointer,
    select_checkpoint,
    write_pointer,
)
from coldstream.core.signing import Keyring, Signer
from devtools.checkpoints import make_checkpoint, point_store

SIGNER = Signer.generate()
KEYS = SIGNER.keyring


def _ck(store, seed, **kw):
    return make_checkpoint(store, n_items=20, dim=8, text_dim=8, seed=seed, **kw)


def test_pointer_sequence_only_grows_and_is_verified(tmp_path):
    v1 = _ck(tmp_path, 1, signer=SIGNER)
    assert read_pointer(tmp_path, KEYS).seq == 1
    _ck(tmp_path, 2, signer=SIGNER)
    p = write_pointer(tmp_path, version=1, manifest_sha256=manifest_sha256(v1), signer=SIGNER)
    assert (p.version, p.seq) == (1, 3)  # a rollback: older version, higher seq
    with pytest.raises(PointerError) as ei:
        read_pointer(tmp_path, Signer.generate().keyring)
    assert ei.value.reason == "unknown_key"
    data = json.loads((tmp_path / POINTER).read_text())
    (tmp_path / POINTER).write_text(json.dumps({**data, "version": 2}))
    with pytest.raises(PointerError) as ei:
        read_pointer(tmp_path, KEYS)
    assert ei.value.reason == "bad_signature"


def test_an_unsigned_newer_directory_is_not_served(tmp_path):
    """v000999 written into the store by hand, unsigned: the pointer's version is served."""
    _ck(tmp_path, 1, signer=SIGNER)
    rogue = _ck(tmp_path / "elsewhere", 9)
    shutil.copytree(rogue, tmp_path / "v000999")
    sel = select_checkpoint(tmp_path, keyring=KEYS)
    assert (sel.source, sel.checkpoint.version, sel.seq) == ("pointer", 1, 1)
    # even without a pointer, only a verified checkpoint is served
    (tmp_path / POINTER).unlink()
    sel = select_checkpoint(tmp_path, keyring=KEYS)
    assert (sel.source, sel.reason, sel.checkpoint.version) == ("fallback", "no_pointer", 1)
    assert "v000999: unsigned" in sel.refused


def test_a_corrupt_pointed_checkpoint_falls_back_to_an_older_good_one(tmp_path):
    _ck(tmp_path, 1, signer=SIGNER)
    v2 = _ck(tmp_path, 2, signer=SIGNER)
    w = v2 / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    sel = select_checkpoint(tmp_path, keyring=KEYS)
    assert (sel.source, sel.reason, sel.checkpoint.version) == (
        "fallback",
        "pointed_checkpoint_refused",
        1,
    )
    assert sel.seq == 2  # the pointer verified: updates must still be above its seq
    assert "v000002: checksum_mismatch" in sel.refused and "v1" in sel.describe()


def test_a_forged_pointer_is_ignored(tmp_path):
    _ck(tmp_path, 1, signer=SIGNER)
    evil = Signer.generate()
    rogue = _ck(tmp_path, 2, signer=evil, point=False)
    point_store(rogue, evil)  # a pointer signed by a key the workers do not have
    sel = select_checkpoint(tmp_path, keyring=KEYS)
    assert (sel.source, sel.reason, sel.checkpoint.version, sel.seq) == (
        "fallback",
        "bad_pointer",
        1,
        0,
    )


def test_nothing_verified_is_a_clear_error_unless_unsigned_is_allowed(tmp_path):
    _ck(tmp_path, 1)
    with pytest.raises(NoServableModel) as ei:
        select_checkpoint(tmp_path, keyring=Keyring())
    assert "v000001: unsigned" in str(ei.value)
    assert "COLDSTREAM_ALLOW_UNSIGNED_CHECKPOINTS" in str(ei.value)
    sel = select_checkpoint(tmp_path, keyring=Keyring(), allow_unsigned=True)
    assert (sel.source, sel.checkpoint.version) == ("unsigned", 1)


def test_a_missing_store_is_named_as_missing_not_empty(tmp_path) -> None:
    from coldstream.core.pointer import NoServableModel, select_checkpoint

    with pytest.raises(NoServableModel, match="model store .*nope does not exist"):
        select_checkpoint(tmp_path / "nope", keyring=Keyring.of([]))
