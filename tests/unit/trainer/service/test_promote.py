"""The key-holding commands: ``coldstream keys generate/sign``, ``rollback --no-publish`` and
``prune`` (the published rollback runs against Apache Kafka in tests/integration)."""

from __future__ import annotations

import os
import re
import stat

import pytest

from coldstream.cli import main
from coldstream.core.checkpoint import list_versions, load_checkpoint
from coldstream.core.pointer import read_pointer
from coldstream.core.signing import load_keyring
from devtools.checkpoints import make_checkpoint
from trainer.settings import get_settings


@pytest.fixture
def env(monkeypatch, tmp_path, capsys):
    """A fresh key pair from ``coldstream keys generate`` and the env vars that use it."""
    for name in list(os.environ):
        if name.startswith("COLDSTREAM_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    assert main(["keys", "generate", "--out", str(tmp_path / "keys")]) == 0
    key_id = re.search(r"key id ([0-9a-f]{16})", capsys.readouterr().out).group(1)
    monkeypatch.setenv(
        "COLDSTREAM_TRAINER_SIGNING_KEY_FILE", str(tmp_path / "keys" / "signing-key.pem")
    )
    monkeypatch.setenv("COLDSTREAM_MODEL_STORE", str(tmp_path / "store"))
    yield key_id
    get_settings.cache_clear()


def test_keys_generate_writes_a_private_key_0600_and_refuses_to_overwrite(env, tmp_path, capsys):
    priv = tmp_path / "keys" / "signing-key.pem"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    ring = load_keyring(None, tmp_path / "keys" / "verify-key.pub", env_var="V", file_env_var="F")
    assert ring.key_ids == [env]
    assert main(["keys", "generate", "--out", str(tmp_path / "keys")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_rollback_moves_the_pointer_with_a_higher_seq(env, tmp_path, capsys):
    store = tmp_path / "store"
    make_checkpoint(store, n_items=20, dim=8, text_dim=8, seed=1)
    make_checkpoint(store, n_items=20, dim=8, text_dim=8, seed=2)
    assert main(["keys", "sign", "1", "2"]) == 0  # written without a key: signed now
    keys = get_settings().signer().keyring
    assert load_checkpoint(store / "v000002", verify_keys=keys).signed_by == env
    assert main(["rollback", "--to", "2", "--no-publish"]) == 0
    assert main(["rollback", "--to", "1", "--no-publish"]) == 0
    ptr = read_pointer(store, keys)
    assert (ptr.version, ptr.seq) == (1, 2)
    assert "CURRENT.json: v1 seq 2 (was v2 (seq 1))" in capsys.readouterr().out
    assert main(["rollback", "--to", "7", "--no-publish"]) == 2
    assert "no version 7" in capsys.readouterr().err


def test_rollback_refuses_an_unsigned_version(env, tmp_path, capsys):
    make_checkpoint(tmp_path / "store", n_items=20, dim=8, text_dim=8)
    assert main(["rollback", "--to", "1", "--no-publish"]) == 2
    err = capsys.readouterr().err
    assert "unsigned" in err and "coldstream keys sign 1" in err


def test_rollback_without_the_private_key_is_a_usage_error(monkeypatch, tmp_path, capsys):
    for name in list(os.environ):
        if name.startswith("COLDSTREAM_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    monkeypatch.setenv("COLDSTREAM_MODEL_STORE", str(tmp_path))
    try:
        assert main(["rollback", "--to", "1", "--no-publish"]) == 2
    finally:
        get_settings.cache_clear()
    assert "COLDSTREAM_TRAINER_SIGNING_KEY_FILE" in capsys.readouterr().err


def test_prune_keeps_the_newest_and_what_the_pointer_names(env, tmp_path, capsys):
    store = tmp_path / "store"
    for seed in range(5):
        make_checkpoint(store, n_items=20, dim=8, text_dim=8, seed=seed)
    assert main(["keys", "sign", "2"]) == 0
    assert main(["rollback", "--to", "2", "--no-publish"]) == 0
    assert main(["prune", "--keep", "2"]) == 0
    assert list_versions(store) == [2, 4, 5]
    assert "deleted 2 versions [1, 3]; CURRENT.json names v2 (kept)" in capsys.readouterr().out


def test_a_freshly_trained_checkpoint_is_signed_and_pointed_at_with_a_key(env, tmp_path):
    """What ``coldstream train`` does after fitting (``sign_and_point``)."""
    from trainer.service.promote import sign_and_point

    store = tmp_path / "store"
    path = make_checkpoint(store, n_items=20, dim=8, text_dim=8)
    said = sign_and_point(get_settings(), path)
    assert said == f"signed by key {env}; CURRENT.json -> v1 (seq 1)"
    keys = get_settings().signer().keyring
    assert read_pointer(store, keys).version == 1
    assert load_checkpoint(path, verify_keys=keys).signed_by == env


def test_without_a_key_train_says_how_to_serve_the_checkpoint(monkeypatch, tmp_path):
    from trainer.service.promote import sign_and_point

    for name in list(os.environ):
        if name.startswith("COLDSTREAM_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    try:
        path = make_checkpoint(tmp_path / "store", n_items=20, dim=8, text_dim=8)
        said = sign_and_point(get_settings(), path)
    finally:
        get_settings.cache_clear()
    assert "unsigned" in said and "coldstream keys sign 1" in said
    assert not (tmp_path / "store" / "CURRENT.json").exists()
