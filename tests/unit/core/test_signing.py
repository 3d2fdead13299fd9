"""Ed25519 keys of the control plane: sign/verify, key ids and rotation, key files, and the
refusal of short or placeholder keys with the env var named."""

from __future__ import annotations

import base64
import os
import stat

import pytest
from pydantic import ValidationError

from coldstream.core.signing import (
    KeyRefused,
    Keyring,
    SignatureRefused,
    Signer,
    load_keyring,
    load_signer,
)
from stream_app.settings import Settings
from trainer.settings import TrainerSettings


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("COLDSTREAM_"):
            monkeypatch.delenv(name)


def _reason(keyring, kind, rec):
    with pytest.raises(SignatureRefused) as ei:
        keyring.verify(kind, rec)
    return ei.value.reason


def test_a_signed_record_verifies_and_names_its_key():
    signer = Signer.generate()
    rec = signer.sign("model-update", {"version": 3, "seq": 4})
    assert rec["key_id"] == signer.key_id and len(signer.key_id) == 16
    assert signer.keyring.verify("model-update", rec) == signer.key_id


def test_every_field_and_the_kind_are_covered():
    signer = Signer.generate()
    rec = signer.sign("model-update", {"version": 3, "seq": 4, "metrics": {"a": 1}})
    for field, value in [("version", 9), ("seq", 5), ("metrics", {"a": 2}), ("extra", 1)]:
        assert _reason(signer.keyring, "model-update", {**rec, field: value}) == "bad_signature"
    # a signature of one kind never passes for another (a pointer is not an update)
    assert _reason(signer.keyring, "current-pointer", rec) == "bad_signature"


def test_forged_unknown_and_unsigned_records_have_their_own_reasons():
    ours, theirs = Signer.generate(), Signer.generate()
    forged = theirs.sign("item-vector", {"item_id": "x"})
    assert _reason(ours.keyring, "item-vector", forged) == "unknown_key"
    # claiming our key id does not help: the signature is checked with our key
    assert _reason(ours.keyring, "item-vector", {**forged, "key_id": ours.key_id}) == (
        "bad_signature"
    )
    assert _reason(ours.keyring, "item-vector", {"item_id": "x"}) == "unsigned"
    assert _reason(Keyring(), "item-vector", ours.sign("item-vector", {})) == "unsigned"


def test_rotation_accepts_any_configured_key():
    old, new = Signer.generate(), Signer.generate()
    ring = load_keyring(
        f"{old.public_b64()}, {new.public_pem().decode()}",
        None,
        env_var="COLDSTREAM_VERIFY_KEYS",
        file_env_var="F",
    )
    assert set(ring.key_ids) == {old.key_id, new.key_id}
    assert ring.verify("k", old.sign("k", {"a": 1})) == old.key_id
    assert ring.verify("k", new.sign("k", {"a": 1})) == new.key_id


def test_generated_key_files_round_trip_with_a_private_mode(tmp_path):
    signer = Signer.generate()
    priv, pub = signer.write(tmp_path / "keys")
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    loaded = load_signer(None, priv, env_var="K", file_env_var="K_FILE")
    assert loaded is not None and loaded.key_id == signer.key_id
    assert load_keyring(None, pub, env_var="V", file_env_var="V_FILE").key_ids == [signer.key_id]
    (tmp_path / "pub").mkdir()
    pub.rename(tmp_path / "pub" / pub.name)
    ring = load_keyring(None, tmp_path / "pub", env_var="V", file_env_var="V_FILE")
    assert ring.key_ids == [signer.key_id]  # the directory form: every key file in it
    with pytest.raises(KeyRefused, match="PRIVATE key"):  # never a private key on a worker
        load_keyring(None, tmp_path / "keys", env_var="V", file_env_var="V_FILE")
    with pytest.raises(FileExistsError):
        signer.write(tmp_path / "keys")  # never overwrites a private key


@pytest.mark.parametrize(
    "value,words",
    [
        (base64.b64encode(os.urandom(16)).decode(), "16 bytes"),
        (base64.b64encode(os.urandom(31)).decode(), "31 bytes"),
        ("REPLACE-WITH-32-RANDOM-BYTES-BASE64", "placeholder"),
        ("changeme", "placeholder"),
        (base64.b64encode(b"\x00" * 32).decode(), "placeholder"),
        ("not base64 !!", "neither PEM nor"),
    ],
)
def test_short_or_placeholder_keys_are_refused_naming_the_env_var(clean_env, value, words):
    with pytest.raises(ValidationError) as ei:
        Settings(verify_keys=value)
    assert "COLDSTREAM_VERIFY_KEYS" in str(ei.value) and words in str(ei.value)
    with pytest.raises(ValidationError) as ei:
        TrainerSettings(signing_key=value)
    assert "COLDSTREAM_TRAINER_SIGNING_KEY" in str(ei.value) and words in str(ei.value)
    with pytest.raises(KeyRefused):
        load_signer(value, None, env_var="E", file_env_var="F")


def test_a_placeholder_key_file_is_refused(clean_env, tmp_path):
    (tmp_path / "k.pem").write_text("REPLACE-ME\n")
    with pytest.raises(ValidationError, match="COLDSTREAM_TRAINER_SIGNING_KEY_FILE"):
        TrainerSettings(signing_key_file=tmp_path / "k.pem")
    with pytest.raises(ValidationError, match="COLDSTREAM_VERIFY_KEYS_FILE"):
        Settings(verify_keys_file=tmp_path / "k.pem")


def test_settings_read_the_keys_from_the_environment(clean_env, monkeypatch, tmp_path):
    signer = Signer.generate()
    priv, _ = signer.write(tmp_path)
    monkeypatch.setenv("COLDSTREAM_VERIFY_KEYS", signer.public_b64())
    monkeypatch.setenv("COLDSTREAM_TRAINER_SIGNING_KEY_FILE", str(priv))
    assert Settings().verify_keyring().key_ids == [signer.key_id]
    t = TrainerSettings()
    assert t.verify_keyring().key_ids == [signer.key_id]
    trainer_signer = t.signer()
    assert trainer_signer is not None and trainer_signer.key_id == signer.key_id
    assert not hasattr(Settings(), "signer")  # the worker has no private key setting
