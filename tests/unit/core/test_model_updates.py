"""model-updates records: signature and URI containment, each refusal with its reason."""

from __future__ import annotations

import json

import pytest

from coldstream.core.model_updates import UpdateRefused, make_update, sign, verify_update

KEY = "s3cret"


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "store"
    (root / "v000001").mkdir(parents=True)
    return root


def _record(store, **over):
    upd = make_update(
        version=1,
        checkpoint_dir=store / "v000001",
        manifest_sha256="ab" * 32,
        metrics={"ndcg@10": 0.3},
        key=KEY,
    )
    data = json.loads(upd.to_json())
    data.update(over)
    return data


def _reason(raw, store, **kw):
    with pytest.raises(UpdateRefused) as ei:
        verify_update(raw, key=kw.pop("key", KEY), store_root=store, **kw)
    return ei.value.reason


def test_good_record_verifies_and_resolves(store):
    upd, path = verify_update(json.dumps(_record(store)).encode(), key=KEY, store_root=store)
    assert upd.version == 1 and path == (store / "v000001").resolve()


def test_signature_covers_every_field(store):
    rec = _record(store)
    for field, value in [
        ("version", 2),
        ("sha256", "cd" * 32),
        ("metrics", {"ndcg@10": 0.9}),
        ("created_at", 1.0),
    ]:
        tampered = {**rec, field: value}
        assert _reason(tampered, store) == "bad_signature", field


@pytest.mark.parametrize(
    "case,reason",
    [
        ("unsigned", "unsigned"),
        ("wrong_key", "bad_signature"),
        ("not_json", "bad_record"),
        ("missing_field", "bad_record"),
        ("http", "bad_scheme"),
        ("dotdot", "uri_outside_store"),
        ("elsewhere", "uri_outside_store"),
    ],
)
def test_refusals_have_distinct_reasons(store, tmp_path, case, reason):
    rec = _record(store)
    if case == "unsigned":
        rec.pop("signature")
    elif case == "wrong_key":
        rec["signature"] = sign(rec, "other-key")
    elif case == "not_json":
        rec = b"\xff not json"
    elif case == "missing_field":
        rec.pop("sha256")
    else:
        uri = {
            "http": "http://evil.example/v1",
            "dotdot": (store / "v000001").as_uri() + "/../../etc",
            "elsewhere": (tmp_path / "other").as_uri(),
        }[case]
        rec = {**rec, "uri": uri}
        rec["signature"] = sign(rec, KEY)
    assert _reason(rec, store) == reason


def test_symlink_escaping_the_store_is_refused(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (store / "v000002").symlink_to(outside, target_is_directory=True)
    rec = {**_record(store), "uri": (store / "v000002").as_uri(), "version": 2}
    rec["signature"] = sign(rec, KEY)
    assert _reason(rec, store) == "symlink_escape"


def test_no_key_configured_refuses_signed_records(store):
    assert _reason(_record(store), store, key=None) == "unsigned"
