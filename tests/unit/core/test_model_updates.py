"""Control records: model-updates (signature, seq, URI containment) and item-vectors (size,
shape, id rules, version, finiteness, signature), each refusal with its reason."""

from __future__ import annotations

import json

import pytest

from coldstream.core.model_updates import (
    MAX_UPDATE_BYTES,
    MAX_VECTOR_BYTES,
    UpdateRefused,
    VectorRefused,
    make_item_vector,
    make_update,
    verify_item_vector,
    verify_update,
)
from coldstream.core.signing import Signer

SIGNER = Signer.generate()
KEYS = SIGNER.keyring
OTHER = Signer.generate()


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "store"
    (root / "v000001").mkdir(parents=True)
    return root


def _record(store, signer=SIGNER, **over):
    upd = make_update(
        version=1,
        seq=3,
        checkpoint_dir=store / "v000001",
        manifest_sha256="ab" * 32,
        metrics={"ndcg@10": 0.3},
        signer=signer,
    )
    data = json.loads(upd.to_json())
    data.update(over)
    return data


def _resign(rec, signer=SIGNER):
    return signer.sign("model-update", rec)


def _reason(raw, store, keys=KEYS):
    with pytest.raises(UpdateRefused) as ei:
        verify_update(raw, keys=keys, store_root=store)
    return ei.value.reason


def test_good_record_verifies_and_resolves(store):
    upd, path = verify_update(json.dumps(_record(store)).encode(), keys=KEYS, store_root=store)
    assert (upd.version, upd.seq, upd.key_id) == (1, 3, SIGNER.key_id)
    assert path == (store / "v000001").resolve()


def test_signature_covers_every_field(store):
    rec = _record(store)
    for field, value in [
        ("version", 2),
        ("seq", 99),
        ("sha256", "cd" * 32),
        ("metrics", {"ndcg@10": 0.9}),
        ("created_at", 1.0),
        ("uri", (store / "v000002").as_uri()),
    ]:
        assert _reason({**rec, field: value}, store) == "bad_signature", field


@pytest.mark.parametrize(
    "case,reason",
    [
        ("unsigned", "unsigned"),
        ("forged", "unknown_key"),
        ("not_json", "bad_record"),
        ("missing_field", "bad_record"),
        ("missing_seq", "bad_record"),
        ("http", "bad_scheme"),
        ("dotdot", "uri_outside_store"),
        ("elsewhere", "uri_outside_store"),
        ("oversize", "oversize"),
        ("nested", "bad_record"),
    ],
)
def test_refusals_have_distinct_reasons(store, tmp_path, case, reason):
    rec = _record(store)
    if case == "unsigned":
        rec.pop("signature")
    elif case == "forged":
        rec = _record(store, signer=OTHER)
    elif case == "not_json":
        rec = b"\xff not json"
    elif case == "missing_field":
        rec = _resign({k: v for k, v in rec.items() if k != "sha256"})
    elif case == "missing_seq":
        rec = _resign({k: v for k, v in rec.items() if k != "seq"})
    elif case == "oversize":
        rec = json.dumps({**rec, "metrics": {"pad": "x" * MAX_UPDATE_BYTES}}).encode()
    elif case == "nested":
        rec = b"[" * 50_000 + b"]" * 50_000  # 100 KB, under the cap: RecursionError, caught
    else:
        uri = {
            "http": "http://evil.example/v1",
            "dotdot": (store / "v000001").as_uri() + "/../../etc",
            "elsewhere": (tmp_path / "other").as_uri(),
        }[case]
        rec = _resign({**rec, "uri": uri})
    assert _reason(rec, store) == reason


def test_symlink_escaping_the_store_is_refused(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (store / "v000002").symlink_to(outside, target_is_directory=True)
    rec = _resign({**_record(store), "uri": (store / "v000002").as_uri(), "version": 2})
    assert _reason(rec, store) == "symlink_escape"


def test_no_key_configured_refuses_signed_records(store):
    from coldstream.core.signing import Keyring

    assert _reason(_record(store), store, keys=Keyring()) == "unsigned"


# ---------------------------------------------------------------------------- item-vectors


def _vector_reason(raw, keys=KEYS):
    with pytest.raises(VectorRefused) as ei:
        verify_item_vector(raw, keys=keys)
    return ei.value.reason


def test_a_signed_item_vector_verifies():
    raw = make_item_vector("new-1", 7, [0.5, -0.25, 1e-7], SIGNER)
    v = verify_item_vector(raw, keys=KEYS)
    assert (v.item_id, v.model_version, v.key_id) == ("new-1", "7", SIGNER.key_id)
    assert v.vector == [0.5, -0.25, 0.0]  # rounded to 6 decimals, as signed


def _hand_written(**fields):
    base = {"item_id": "x", "model_version": "1", "vector": [1.0, 2.0]}
    return json.dumps({**base, **fields}).encode()


@pytest.mark.parametrize(
    "raw,reason",
    [
        (_hand_written(), "unsigned"),
        (make_item_vector("x", 1, [1.0, 2.0], OTHER), "unknown_key"),
        (_hand_written(item_id="a b"), "bad_id"),
        (_hand_written(item_id="x" * 129), "bad_id"),
        (_hand_written(item_id="ab\u200b"), "bad_id"),  # a zero-width (format) character
        (_hand_written(item_id="e\u0301"), "bad_id"),  # not NFC
        (_hand_written(item_id={"a": 1}), "bad_id"),
        (_hand_written(model_version=1), "bad_version"),
        (_hand_written(model_version="v1"), "bad_version"),
        (_hand_written(vector="1,2"), "bad_record"),
        (_hand_written(vector=[]), "bad_record"),
        (_hand_written(vector=[True, 1.0]), "bad_record"),
        (b'{"item_id":"x","model_version":"1","vector":[1e999]}', "non_finite"),
        (b'{"item_id":"x","model_version":"1","vector":[NaN]}', "non_finite"),
        (b"[" * 60_000, "bad_record"),  # nested too deeply: RecursionError, caught
        (b"[" * (MAX_VECTOR_BYTES + 1), "oversize"),
        (b"", "bad_record"),
    ],
)
def test_item_vector_refusals(raw, reason):
    assert _vector_reason(raw) == reason


def test_a_tampered_item_vector_is_refused():
    rec = json.loads(make_item_vector("x", 1, [1.0, 2.0], SIGNER))
    rec["vector"] = [100.0, 200.0]
    assert _vector_reason(json.dumps(rec)) == "bad_signature"
