"""The store's signed "current" pointer, and the start-up choice of the checkpoint to serve.

``<store>/CURRENT.json`` names the version every process serves::

    {"format": "coldstream-pointer/1", "version": 7, "manifest_sha256": "<sha256>",
     "seq": 12, "created_at": 1790000000.0, "key_id": "<16 hex>", "signature": "<base64>"}

It is written by the holder of the private key when it promotes (the trainer service after
a gate, ``coldstream rollback --to``, ``coldstream train`` with a key): ``seq`` goes up by
one on every write (a file lock serialises writers), and the ``model-updates`` record of
that promotion carries the same ``seq``. Workers accept an update only when its ``seq`` is
above the one they serve, so a rollback (a pointer to an *older* version with a *higher*
``seq``) is followed, and a replayed old update is not.

:func:`select_checkpoint` is the one start-up choice (worker and trainer):

1. the pointer, verified with the public keys, and the checkpoint it names, loaded with
   the pointer's manifest sha256 and its own signature checked;
2. if the pointer is missing, invalid, or names a refused checkpoint: the newest version
   whose ``signature.json`` verifies (``source="fallback"``, with the reason);
3. only with ``allow_unsigned`` (dev only) and nothing verified: the newest loadable one.

An unsigned or wrongly signed directory is never served otherwise.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from coldstream.core.checkpoint import (
    DEFAULT_MAX_FILE_BYTES,
    Checkpoint,
    CheckpointError,
    list_versions,
    load_checkpoint,
    version_path,
)
from coldstream.core.errors import NoModelError, Refused
from coldstream.core.signing import Keyring, SignatureRefused, Signer

__all__ = [
    "POINTER",
    "NoServableModel",
    "Pointer",
    "PointerError",
    "Selection",
    "peek_pointer",
    "read_pointer",
    "select_checkpoint",
    "write_pointer",
]

log = logging.getLogger(__name__)

POINTER = "CURRENT.json"
POINTER_FORMAT = "coldstream-pointer/1"
POINTER_KIND = "current-pointer"
MAX_POINTER_BYTES = 64 * 1024
LOCK = ".pointer.lock"


class PointerError(Refused):
    """``CURRENT.json`` is missing (``missing``), malformed (``bad_pointer``) or not signed by
    a configured key (``unsigned``, ``unknown_key``, ``bad_signature``)."""


class NoServableModel(NoModelError):
    """No checkpoint of the store may be served (the message says what was refused)."""


@dataclass(frozen=True)
class Pointer:
    version: int
    manifest_sha256: str
    seq: int
    created_at: float
    key_id: str


def _read_raw(root: Path) -> dict[str, Any]:
    try:
        fd = os.open(
            root / POINTER,
            os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0),
        )
    except FileNotFoundError:
        raise PointerError("missing", f"no {POINTER} in {root}", POINTER) from None
    except OSError as e:
        raise PointerError(
            "bad_pointer", f"cannot open (symlink?): {e.strerror}", POINTER
        ) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not (st.st_mode & 0o170000 == 0o100000) or st.st_nlink != 1:
            raise PointerError("bad_pointer", "not a regular file with one link", POINTER)
        raw = f.read(MAX_POINTER_BYTES + 1)
    if len(raw) > MAX_POINTER_BYTES:
        raise PointerError("bad_pointer", f"larger than {MAX_POINTER_BYTES} bytes", POINTER)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise PointerError("bad_pointer", "not JSON", POINTER) from None
    if not isinstance(data, dict) or data.get("format") != POINTER_FORMAT:
        raise PointerError("bad_pointer", f"format is not {POINTER_FORMAT!r}", POINTER)
    return data


def _parse(data: dict[str, Any]) -> Pointer:
    v, seq, sha = data.get("version"), data.get("seq"), data.get("manifest_sha256")
    ok = all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in (v, seq))
    if not ok or not isinstance(sha, str) or len(sha) != 64:
        raise PointerError("bad_pointer", "version, seq or manifest_sha256 malformed", POINTER)
    created = data.get("created_at")
    assert isinstance(v, int) and isinstance(seq, int)
    return Pointer(
        version=v,
        manifest_sha256=sha,
        seq=seq,
        created_at=float(created) if isinstance(created, int | float) else 0.0,
        key_id=str(data.get("key_id", "")),
    )


def peek_pointer(root: Path | str) -> Pointer | None:
    """The pointer *without* verifying its signature (``None`` if absent or malformed): only
    for choices that must err on the safe side, such as what pruning keeps."""
    try:
        return _parse(_read_raw(Path(root)))
    except PointerError:
        return None


def read_pointer(root: Path | str, keyring: Keyring) -> Pointer:
    """The verified pointer of the store at ``root`` (:class:`PointerError` otherwise)."""
    data = _read_raw(Path(root))
    try:
        keyring.verify(POINTER_KIND, data)
    except SignatureRefused as e:
        raise PointerError(e.reason, e.message, POINTER) from None
    return _parse(data)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def write_pointer(
    root: Path | str, *, version: int, manifest_sha256: str, signer: Signer
) -> Pointer:
    """Point the store at ``version`` with ``seq`` one above the current pointer's (any
    readable pointer's, signed by us or not: the sequence only grows). Atomic (temp file,
    fsync, rename) and serialised with other writers by a file lock."""
    root = Path(root)
    with _locked(root):
        try:
            prev = _parse(_read_raw(root)).seq
        except PointerError:
            prev = 0
        rec = signer.sign(
            POINTER_KIND,
            {
                "format": POINTER_FORMAT,
                "version": int(version),
                "manifest_sha256": manifest_sha256,
                "seq": prev + 1,
                "created_at": round(time.time(), 3),
            },
        )
        tmp = root / f".{POINTER}.{uuid.uuid4().hex[:8]}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(rec, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, root / POINTER)
        dfd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return _parse(rec)


@dataclass
class Selection:
    """What :func:`select_checkpoint` chose and why."""

    checkpoint: Checkpoint
    seq: int
    """The sequence number served: the pointer's when it verified (even if its checkpoint
    was refused), else 0 -- updates must carry a higher one."""
    source: Literal["pointer", "fallback", "unsigned"]
    reason: str | None = None
    """Why not the pointer: ``no_pointer``, ``bad_pointer`` (unsigned, unknown key, bad
    signature, malformed) or ``pointed_checkpoint_refused``."""
    refused: list[str] = field(default_factory=list)
    """``v000007: reason`` for every checkpoint passed over."""

    def describe(self) -> str:
        ck = self.checkpoint
        if self.source == "pointer":
            return f"v{ck.version} from {POINTER} (seq {self.seq}, key {ck.signed_by})"
        what = "newest verified" if self.source == "fallback" else "newest UNSIGNED (dev only)"
        served = f"v{ck.version:06d}:"
        others = [r for r in self.refused if not r.startswith(served)]  # not the one served
        refused = f"; passed over: {', '.join(others[:5])}" if others else ""
        reason = "no CURRENT.json" if self.reason == "no_pointer" else self.reason
        return f"v{ck.version}, the {what} checkpoint ({reason}){refused}"


def select_checkpoint(
    root: Path | str,
    *,
    keyring: Keyring,
    device: Any = "cpu",
    allow_unsigned: bool = False,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> Selection:
    """The checkpoint to serve at start-up (module docstring); :class:`NoServableModel`
    when there is none."""
    root = Path(root)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise NoServableModel(
            f"model store {root} {what} (env COLDSTREAM_MODEL_STORE, flag --model-store); "
            f"train a model into it first: coldstream train --model-store {root}"
        )
    refused: list[str] = []
    seq, reason, skip = 0, "no_pointer", None
    try:
        ptr = read_pointer(root, keyring)
    except PointerError as e:
        if e.reason != "missing":
            reason = "bad_pointer"
            refused.append(f"{POINTER}: {e.reason}")
    else:
        seq, skip = ptr.seq, ptr.version
        try:
            ck = load_checkpoint(
                version_path(root, ptr.version),
                device=device,
                max_file_bytes=max_file_bytes,
                expected_sha256=ptr.manifest_sha256,
                verify_keys=keyring,
            )
        except CheckpointError as e:
            reason = "pointed_checkpoint_refused"
            refused.append(f"v{ptr.version:06d}: {e.reason}")
        else:
            if ck.version == ptr.version:
                return Selection(ck, seq, "pointer")
            reason = "pointed_checkpoint_refused"
            refused.append(f"v{ptr.version:06d}: version_mismatch")
    versions = [v for v in reversed(list_versions(root)) if v != skip]
    for v in versions:
        try:
            ck = load_checkpoint(
                version_path(root, v),
                device=device,
                max_file_bytes=max_file_bytes,
                verify_keys=keyring,
            )
        except CheckpointError as e:
            refused.append(f"v{v:06d}: {e.reason}")
            continue
        return Selection(ck, seq, "fallback", reason, refused)
    if allow_unsigned:
        for v in reversed(list_versions(root)):
            try:
                ck = load_checkpoint(version_path(root, v), device=device)
            except CheckpointError:
                continue
            return Selection(ck, seq, "unsigned", reason, refused)
    keys = ", ".join(keyring.key_ids) or "none configured (COLDSTREAM_VERIFY_KEYS / _FILE)"
    raise NoServableModel(
        f"no servable checkpoint in model store {root} (verify keys: {keys}); "
        + (f"refused: {', '.join(refused[:8])}" if refused else "the store is empty")
        + " -- train one with a signing key (coldstream keys generate; coldstream train), "
        "or for a local first run set COLDSTREAM_ALLOW_UNSIGNED_CHECKPOINTS=true (dev only)"
    )
