"""``model-updates`` records: signing (trainer side) and verification (serving side).

A record announces a checkpoint in the model store::

    {"version": 7, "uri": "file:///models/v000007", "sha256": "<sha256 of manifest.json>",
     "created_at": 1790000000.0, "metrics": {...}, "signature": "<hex HMAC-SHA256>"}

The signature is an HMAC-SHA256, with the shared secret from the settings, over the
canonical JSON (sorted keys, no whitespace) of every field except ``signature``.

:func:`verify_update` checks, in this order, each failure with its own reason code (the
``reason`` label of ``coldstream_model_swap_failures_total``):

``bad_record``          not a JSON object / missing or mistyped fields
``unsigned``            no signature
``bad_signature``       signature does not match
``bad_scheme``          URI scheme other than ``file`` (or a bare path)
``uri_outside_store``   the path leaves the store root (``..``, another absolute path)
``symlink_escape``      the path resolves, through a symlink, outside the store root
then every :class:`coldstream.core.checkpoint.CheckpointError` reason (``checksum_mismatch``,
``truncated``, ``not_safetensors``, ``missing_file``, ``bad_config``, ...).

Nothing here imports torch: verification is cheap and happens before any load.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from coldstream.core.errors import Refused

SIGNED_FIELDS = ("version", "uri", "sha256", "created_at", "metrics")


class UpdateRefused(Refused):
    """A ``model-updates`` record was refused (``reason``: one of the codes above)."""


@dataclass(frozen=True)
class ModelUpdate:
    version: int
    uri: str
    sha256: str
    created_at: float
    metrics: dict[str, Any]
    signature: str | None = None

    def payload(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "uri": self.uri,
            "sha256": self.sha256,
            "created_at": self.created_at,
            "metrics": self.metrics,
        }

    def to_json(self) -> bytes:
        return json.dumps(
            {**self.payload(), "signature": self.signature}, sort_keys=True, separators=(",", ":")
        ).encode()


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def sign(payload: dict[str, Any], key: bytes | str) -> str:
    key = key.encode() if isinstance(key, str) else key
    return hmac.new(
        key, _canonical({k: payload[k] for k in SIGNED_FIELDS}), hashlib.sha256
    ).hexdigest()


def make_update(
    *,
    version: int,
    checkpoint_dir: Path,
    manifest_sha256: str,
    metrics: dict[str, Any],
    key: bytes | str,
    created_at: float | None = None,
) -> ModelUpdate:
    """Build and sign a record for a checkpoint directory (trainer side)."""
    update = ModelUpdate(
        version=int(version),
        uri=Path(checkpoint_dir).resolve().as_uri(),
        sha256=manifest_sha256,
        created_at=float(created_at or time.time()),
        metrics=metrics,
    )
    return replace(update, signature=sign(update.payload(), key))


def parse_update(raw: bytes | str | dict[str, Any]) -> ModelUpdate:
    try:
        data = raw if isinstance(raw, dict) else json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UpdateRefused("bad_record", f"not JSON: {e}") from None
    if not isinstance(data, dict):
        raise UpdateRefused("bad_record", "not a JSON object")
    checks: dict[str, type | tuple[type, ...]] = {
        "version": int,
        "uri": str,
        "sha256": str,
        "created_at": (int, float),
        "metrics": dict,
    }
    for name, typ in checks.items():
        value = data.get(name)
        if value is None or isinstance(value, bool) or not isinstance(value, typ):
            raise UpdateRefused("bad_record", f"field {name!r} missing or not {typ}")
    sig = data.get("signature")
    if sig is not None and not isinstance(sig, str):
        raise UpdateRefused("bad_record", "signature is not a string")
    return ModelUpdate(
        version=data["version"],
        uri=data["uri"],
        sha256=data["sha256"],
        created_at=float(data["created_at"]),
        metrics=data["metrics"],
        signature=sig,
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
    raw: bytes | str | dict[str, Any],
    *,
    key: bytes | str | None,
    store_root: Path,
    require_signature: bool = True,
) -> tuple[ModelUpdate, Path]:
    """Check an update record before anything is loaded; returns the record and the
    checkpoint directory. The checkpoint files themselves are verified by
    :func:`coldstream.core.checkpoint.verify_checkpoint` (with ``expected_sha256=update.sha256``)."""
    update = parse_update(raw)
    if require_signature:
        if not update.signature:
            raise UpdateRefused("unsigned", "record carries no signature")
        if not key:
            raise UpdateRefused("unsigned", "no HMAC key configured to check the signature")
        if not hmac.compare_digest(update.signature, sign(update.payload(), key)):
            raise UpdateRefused("bad_signature", "HMAC-SHA256 does not match")
    return update, resolve_uri(update.uri, store_root)
