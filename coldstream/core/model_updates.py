"""The signed control records: ``model-updates`` and ``item-vectors`` (trainer signs,
workers verify with public keys: :mod:`coldstream.core.signing`).

A ``model-updates`` record announces a promotion (or a rollback) of the store's pointer::

    {"version": 7, "seq": 12, "uri": "file:///models/v000007",
     "sha256": "<sha256 of manifest.json>", "created_at": 1790000000.0, "metrics": {...},
     "key_id": "<16 hex>", "signature": "<base64 Ed25519>"}

``seq`` is the sequence number of the ``CURRENT.json`` pointer written with it
(:mod:`coldstream.core.pointer`); a worker swaps only to a record whose ``seq`` is above
the one it serves (rollback works, replays do not).

A record may also carry the rollout fields (:mod:`coldstream.core.rollout`, inside the signed
payload): ``"arm": "canary", "share": 0.1, "rollout_id": "r-8-1790000000"`` (a canary served to
10% of users), ``"arm": "shadow", "rollout_id": ...`` (scored, never published) or
``"arm": "live", "rollout_id": ...`` (a candidate promoted out of its rollout). A record
without them is ``live`` with share 1.0, as before; malformed ones are ``bad_record``.

An ``item-vectors`` record places one new item under one model version::

    {"item_id": "42", "model_version": "7", "vector": [0.1, ...], "key_id": ..., "signature": ...}

Both are refused, each with its own reason code (the ``reason`` label of
``coldstream_model_swap_failures_total`` and ``coldstream_control_records_total``):

``oversize``            larger than the topic's record cap (checked before parsing)
``bad_record``          not a JSON object / missing or mistyped fields / nested too deeply
``unsigned``            no signature, or no public key configured
``unknown_key``         signed by a key id that is not configured
``bad_signature``       the signature does not verify
``bad_scheme``          (updates) URI scheme other than ``file`` (or a bare path)
``uri_outside_store``   (updates) the path leaves the store root (``..``, another absolute path)
``symlink_escape``      (updates) the path resolves, through a symlink, outside the store root
``bad_id``              (vectors) the item id breaks the event id rules
``bad_version``         (vectors) ``model_version`` is not a version number string
``non_finite``          (vectors) NaN or infinite components

then (updates) every :class:`coldstream.core.checkpoint.CheckpointError` reason. Nothing here
imports torch: verification is cheap and happens before any load.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from coldstream.core.errors import Refused
from coldstream.core.events import check_id
from coldstream.core.rollout import Arm, check_rollout_fields
from coldstream.core.signing import Keyring, SignatureRefused, Signer, canonical

UPDATE_KIND = "model-update"
VECTOR_KIND = "item-vector"
MAX_UPDATE_BYTES = 256 * 1024
"""Largest ``model-updates`` record read (a real one is a few KB: the gate's metrics)."""
MAX_VECTOR_BYTES = 64 * 1024
"""Largest ``item-vectors`` record read (a 1,024-dim vector at 6 decimals is ~12 KB)."""
MAX_DIM = 4096
"""Most components an item vector may have (the served model's dim is checked too)."""
_VERSION = re.compile(r"^[0-9]{1,12}$")


class UpdateRefused(Refused):
    """A ``model-updates`` record was refused (``reason``: one of the codes above)."""


class VectorRefused(Refused):
    """An ``item-vectors`` record was refused (``reason``: one of the codes above)."""


@dataclass(frozen=True)
class ModelUpdate:
    version: int
    seq: int
    uri: str
    sha256: str
    created_at: float
    metrics: dict[str, Any]
    key_id: str | None = None
    signature: str | None = None
    arm: Arm = "live"
    share: float | None = None
    """The canary's share of users; ``None`` for ``live`` (all the rest) and ``shadow``."""
    rollout_id: str | None = None
    """The rollout (and the salt of :func:`coldstream.core.rollout.assign`); ``None``: a
    plain record, ``live``."""

    @property
    def served_share(self) -> float:
        """The share of users this version is meant for: 1.0 live, the canary's share, 0.0
        for a shadow."""
        if self.arm == "canary" and self.share is not None:
            return self.share
        return 0.0 if self.arm == "shadow" else 1.0

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "version": self.version,
            "seq": self.seq,
            "uri": self.uri,
            "sha256": self.sha256,
            "created_at": self.created_at,
            "metrics": self.metrics,
        }
        if self.rollout_id is not None:  # a plain live record keeps its old shape
            body["arm"] = self.arm
            body["rollout_id"] = self.rollout_id
            if self.share is not None:
                body["share"] = self.share
        return body

    def record(self) -> dict[str, Any]:
        return {**self.payload(), "key_id": self.key_id, "signature": self.signature}

    def to_json(self) -> bytes:
        return canonical(self.record())


def _loads(raw: bytes | str | dict[str, Any], limit: int, exc: type[Refused]) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if raw is None:
        raise exc("bad_record", "empty record")
    if len(raw) > limit:
        raise exc("oversize", f"{len(raw)} bytes > cap {limit} (not parsed)")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise exc("bad_record", f"not JSON: {str(e)[:100]}") from None
    except RecursionError:
        raise exc("bad_record", "nested too deeply") from None
    if not isinstance(data, dict):
        raise exc("bad_record", "not a JSON object")
    return data


def make_update(
    *,
    version: int,
    seq: int,
    checkpoint_dir: Path,
    manifest_sha256: str,
    metrics: dict[str, Any],
    signer: Signer,
    created_at: float | None = None,
    arm: Arm = "live",
    share: float | None = None,
    rollout_id: str | None = None,
) -> ModelUpdate:
    """Build and sign a record for a checkpoint directory (trainer side). ``arm``, ``share``
    and ``rollout_id`` place the version in a rollout (:mod:`coldstream.core.rollout`);
    left out, the record is a plain ``live`` one. Malformed ones raise
    :class:`UpdateRefused` (``bad_record``) before anything is signed."""
    if rollout_id is None and arm == "live" and share is None:
        fields: tuple[Any, Any, Any] = (None, None, None)
    else:
        fields = (arm, share, rollout_id)
    why = check_rollout_fields(*fields)
    if why:
        raise UpdateRefused("bad_record", why)
    body = ModelUpdate(
        version=int(version),
        seq=int(seq),
        uri=Path(checkpoint_dir).resolve().as_uri(),
        sha256=manifest_sha256,
        created_at=float(created_at or time.time()),
        metrics=metrics,
        arm=arm,
        share=None if share is None else float(share),
        rollout_id=rollout_id,
    ).payload()
    signed = signer.sign(UPDATE_KIND, body)
    return parse_update(signed)


def parse_update(raw: bytes | str | dict[str, Any]) -> ModelUpdate:
    data = _loads(raw, MAX_UPDATE_BYTES, UpdateRefused)
    checks: dict[str, type | tuple[type, ...]] = {
        "version": int,
        "seq": int,
        "uri": str,
        "sha256": str,
        "created_at": (int, float),
        "metrics": dict,
    }
    for name, typ in checks.items():
        value = data.get(name)
        if value is None or isinstance(value, bool) or not isinstance(value, typ):
            raise UpdateRefused("bad_record", f"field {name!r} missing or not {typ}")
    sig, kid = data.get("signature"), data.get("key_id")
    if sig is not None and not isinstance(sig, str):
        raise UpdateRefused("bad_record", "signature is not a string")
    if kid is not None and not isinstance(kid, str):
        raise UpdateRefused("bad_record", "key_id is not a string")
    arm, share, rollout_id = data.get("arm"), data.get("share"), data.get("rollout_id")
    why = check_rollout_fields(arm, share, rollout_id)
    if why:
        raise UpdateRefused("bad_record", why)
    return ModelUpdate(
        version=data["version"],
        seq=data["seq"],
        uri=data["uri"],
        sha256=data["sha256"],
        created_at=data["created_at"],
        metrics=data["metrics"],
        key_id=kid,
        signature=sig,
        arm=arm if arm is not None else "live",
        share=None if share is None else float(share),
        rollout_id=rollout_id,
    )


def resolve_uri(uri: str, store_root: Path) -> Path:
    """Map an update's URI to a directory inside ``store_root`` or refuse."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file") or (
        parsed.scheme == "file" and parsed.netloc not in ("", "localhost")
    ):
        raise UpdateRefused(
            "bad_scheme", f"only file:// URIs inside the model store are accepted, got {uri!r}"
        )
    raw = Path(unquote(parsed.path))
    if ".." in raw.parts:
        raise UpdateRefused("uri_outside_store", f"{uri!r} contains '..'")
    root = Path(store_root).absolute()
    path = raw if raw.is_absolute() else root / raw
    # lexical containment first (another absolute path), then through symlinks
    try:
        path.relative_to(root)
    except ValueError:
        try:
            path.relative_to(Path(store_root).resolve())
        except ValueError:
            raise UpdateRefused(
                "uri_outside_store", f"{path} is not inside the model store {root}"
            ) from None
    real_root = Path(store_root).resolve()
    real = path.resolve()
    if real != real_root and real_root not in real.parents:
        raise UpdateRefused("symlink_escape", f"{path} resolves to {real}, outside the model store")
    return real


def verify_update(
    raw: bytes | str | dict[str, Any], *, keys: Keyring, store_root: Path
) -> tuple[ModelUpdate, Path]:
    """Check an update record before anything is loaded: size, shape, signature (one of
    ``keys``), URI containment; returns the record and the checkpoint directory. The
    checkpoint itself is checked by :func:`coldstream.core.checkpoint.load_checkpoint`
    (``expected_sha256=update.sha256``, ``verify_keys=keys``); the sequence number by the
    caller, against the one it serves."""
    data = _loads(raw, MAX_UPDATE_BYTES, UpdateRefused)
    update = parse_update(data)
    try:
        keys.verify(UPDATE_KIND, data)
    except SignatureRefused as e:
        raise UpdateRefused(e.reason, e.message) from None
    return update, resolve_uri(update.uri, store_root)


# -------------------------------------------------------------------------------------
# item-vectors
# -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemVector:
    item_id: str
    model_version: str
    vector: list[float]
    key_id: str


def make_item_vector(item_id: str, model_version: int | str, vector: Any, signer: Signer) -> bytes:
    """A signed ``item-vectors`` record (components rounded to 6 decimals)."""
    body = {
        "item_id": str(item_id),
        "model_version": str(model_version),
        "vector": [round(float(x), 6) for x in vector],
    }
    return canonical(signer.sign(VECTOR_KIND, body))


def verify_item_vector(raw: bytes | str | dict[str, Any], *, keys: Keyring) -> ItemVector:
    """Size cap, shape, id rules, version string, finite components, then the signature
    (:class:`VectorRefused` with the reason). The served model's dimension and norm bound
    are the caller's (``stream_app.control.ItemVectorSink``)."""
    data = _loads(raw, MAX_VECTOR_BYTES, VectorRefused)
    iid, ver, vec = data.get("item_id"), data.get("model_version"), data.get("vector")
    try:
        item_id = check_id(iid, "item_id")
    except ValueError as e:
        raise VectorRefused("bad_id", str(e)) from None
    if not isinstance(ver, str) or not _VERSION.match(ver):
        raise VectorRefused("bad_version", f"model_version must be a version string, got {ver!r}")
    if not isinstance(vec, list) or not 0 < len(vec) <= MAX_DIM:
        raise VectorRefused("bad_record", f"vector must be a list of 1..{MAX_DIM} numbers")
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in vec):
        raise VectorRefused("bad_record", "vector components must be numbers")
    try:
        floats = [float(x) for x in vec]
    except OverflowError:
        raise VectorRefused("non_finite", "a vector component overflows a float") from None
    if not all(math.isfinite(x) for x in floats):
        raise VectorRefused("non_finite", "vector has NaN or infinite components")
    try:
        key_id = keys.verify(VECTOR_KIND, data)
    except SignatureRefused as e:
        raise VectorRefused(e.reason, e.message) from None
    except ValueError:  # not canonicalisable (NaN, ...)
        raise VectorRefused("bad_record", "record cannot be canonicalised") from None
    return ItemVector(item_id, ver, floats, key_id)
