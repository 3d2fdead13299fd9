"""The model store: versioned, self-describing, checksummed checkpoints.

A checkpoint is a directory ``<root>/v000007/`` holding

==========================  ==============================================================
``weights.safetensors``     the student's ``state_dict``
``items.safetensors``       ``text_vecs [N, text_dim]`` (teacher) and ``item_vectors [N, dim]``
``items.json``              ``{"ids": [...], "titles": [...]}`` (row order of the tensors)
``config.json``             ``{"student": StudentConfig, "teacher": {...}}``
``metrics.json``            training / gate metrics
``manifest.json``           ``format``, ``version``, ``created_at``, ``files: {name: {sha256, bytes}}``
``signature.json``          Ed25519 signature over the sha256 of ``manifest.json`` (when
                            written with the private key; :func:`sign_checkpoint`)
==========================  ==============================================================

It is written atomically (a temp dir inside the root, fsync, rename) and read by one
function, :func:`load_checkpoint`, used by training, evaluation and serving alike. Every
file is opened once -- never through a symlink (``O_NOFOLLOW``), never with a second hard
link, regular files only -- its size checked on the open descriptor against the manifest
and the limits *before* anything large is allocated, read into memory once and hashed;
tensors and JSON are parsed from those same bytes. Pickle is never read. Which checkpoint
a process serves is decided by the store's signed pointer (:mod:`coldstream.core.pointer`);
:func:`prune_store` bounds the store.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import struct
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from coldstream.core.errors import Refused
from coldstream.core.events import EVENT_TYPES
from coldstream.core.signing import Keyring, SignatureRefused, Signer
from coldstream.core.student import Student, StudentConfig, pack_histories

FORMAT = "coldstream-checkpoint/1"
MANIFEST = "manifest.json"
REQUIRED_FILES = (
    "weights.safetensors",
    "items.safetensors",
    "items.json",
    "config.json",
    "metrics.json",
)
JSON_FILES = ("items.json", "config.json", "metrics.json")
VERSION_DIR = re.compile(r"^v(\d{6,})$")

DEFAULT_MAX_FILE_BYTES = 4 * 1024**3
"""Largest single file accepted (4 GiB: a 1M-item table at 384+64 floats is ~1.8 GB)."""
MAX_JSON_BYTES = 256 * 1024**2
MAX_MANIFEST_BYTES = 1024**2
SIGNATURE = "signature.json"
"""The checkpoint's own signature (over its manifest's sha256); not listed in the manifest."""
SIGNATURE_KIND = "checkpoint"
SIGNATURE_FORMAT = "coldstream-checkpoint-signature/1"
MAX_SIGNATURE_BYTES = 64 * 1024
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class CheckpointError(Refused):
    """A checkpoint was refused. ``reason`` is a stable, metric-friendly code; ``file``
    names the offending file when there is one."""


# -------------------------------------------------------------------------------------
# writing
# -------------------------------------------------------------------------------------


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())


def list_versions(root: Path | str) -> list[int]:
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = VERSION_DIR.match(p.name)
        if m and p.is_dir() and not p.is_symlink():
            out.append(int(m.group(1)))
    return sorted(out)


def version_path(root: Path | str, version: int) -> Path:
    return Path(root) / f"v{version:06d}"


def latest_checkpoint(root: Path | str) -> Path | None:
    """The newest version directory that has a manifest, or ``None``."""
    for v in reversed(list_versions(root)):
        p = version_path(root, v)
        if (p / MANIFEST).is_file():
            return p
    return None


@torch.no_grad()
def save_checkpoint(
    root: Path | str,
    *,
    model: Student,
    item_ids: Sequence[str],
    item_text_vecs: np.ndarray,
    item_titles: Sequence[str] | None = None,
    metrics: dict[str, Any] | None = None,
    teacher: dict[str, Any] | None = None,
    version: int | None = None,
    signer: Signer | None = None,
) -> Path:
    """Write a checkpoint atomically and return its directory.

    ``signer``: also write ``signature.json`` (the private key's signature over the
    manifest's sha256) before the directory appears under its version name.

    ``item_ids[i]`` is the item whose id embedding is row ``i`` (``i < n_items``); rows
    beyond ``n_items`` are items without an id embedding (placed by text only).
    ``version`` defaults to one past the newest version in ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    item_ids = [str(i) for i in item_ids]
    n = len(item_ids)
    if len(set(item_ids)) != n:
        raise ValueError("item_ids are not unique")
    text = np.ascontiguousarray(item_text_vecs, dtype=np.float32)
    if text.shape != (n, model.config.text_dim):
        raise ValueError(f"item_text_vecs shape {text.shape} != ({n}, {model.config.text_dim})")
    titles = [str(t) for t in item_titles] if item_titles is not None else [""] * n
    if len(titles) != n:
        raise ValueError("item_titles and item_ids differ in length")

    was_training = model.training
    model.eval()
    cpu_state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    dev = next(model.parameters()).device
    idx = torch.arange(n, device=dev)
    idx = torch.where(idx < model.config.n_items, idx, torch.full_like(idx, -1))
    vectors = model.item_vectors(torch.from_numpy(text).to(dev), idx).float().cpu().contiguous()
    model.train(was_training)
    bad = [k for k, v in cpu_state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad or not np.isfinite(text).all() or not torch.isfinite(vectors).all():
        raise ValueError(
            "refusing to write a checkpoint with NaN or infinity in "
            f"{bad[:5] or 'the item tensors'} (training diverged?)"
        )

    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        save_file(cpu_state, str(tmp / "weights.safetensors"))
        save_file(
            {"text_vecs": torch.from_numpy(text), "item_vectors": vectors},
            str(tmp / "items.safetensors"),
        )
        _write_json(tmp / "items.json", {"ids": item_ids, "titles": titles})
        _write_json(
            tmp / "config.json", {"student": model.config.to_dict(), "teacher": teacher or {}}
        )
        _write_json(tmp / "metrics.json", metrics or {})
        for name in ("weights.safetensors", "items.safetensors"):
            with open(tmp / name, "rb+") as f:
                os.fsync(f.fileno())
        files = {
            name: {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
            for name in REQUIRED_FILES
        }
        # the version is claimed by the rename: retry with the next one on a race
        for _ in range(100):
            v = version if version is not None else (max(list_versions(root), default=0) + 1)
            _write_json(
                tmp / MANIFEST,
                {
                    "format": FORMAT,
                    "version": v,
                    "created_at": time.time(),
                    "files": files,
                    "n_items": n,
                    "dim": model.config.dim,
                },
            )
            if signer is not None:
                _write_json(
                    tmp / SIGNATURE, _signature_record(signer, v, sha256_file(tmp / MANIFEST))
                )
            _fsync_dir(tmp)
            dest = version_path(root, v)
            try:
                os.rename(tmp, dest)  # atomic; fails if dest exists and is non-empty
            except OSError:
                if version is not None:
                    raise FileExistsError(
                        f"checkpoint version {v} already exists in {root}"
                    ) from None
                continue
            _fsync_dir(root)
            return dest
        raise RuntimeError(f"could not claim a version in {root}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# -------------------------------------------------------------------------------------
# signing (the private key's holder: the trainer service, ``coldstream train`` with a key)
# -------------------------------------------------------------------------------------


def _signature_record(signer: Signer, version: int, manifest_sha: str) -> dict[str, Any]:
    return signer.sign(
        SIGNATURE_KIND,
        {
            "format": SIGNATURE_FORMAT,
            "version": int(version),
            "manifest_sha256": manifest_sha,
            "created_at": round(time.time(), 3),
        },
    )


def sign_checkpoint(path: Path | str, signer: Signer) -> dict[str, Any]:
    """Write ``signature.json`` into an existing checkpoint: the signer's signature over the
    sha256 of its ``manifest.json`` (read once, through the same checks as loading)."""
    path = Path(path)
    dfd = _open_dir(path)
    try:
        raw = _read_member(dfd, MANIFEST, limit=MAX_MANIFEST_BYTES)
    finally:
        os.close(dfd)
    manifest = _parse_json(raw, MANIFEST)
    version = manifest.get("version") if isinstance(manifest, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError("bad_manifest", f"bad version {version!r}", MANIFEST)
    rec = _signature_record(signer, version, _sha256(raw))
    tmp = path / f".{SIGNATURE}.{uuid.uuid4().hex[:8]}"
    _write_json(tmp, rec)
    os.replace(tmp, path / SIGNATURE)
    _fsync_dir(path)
    return rec


# -------------------------------------------------------------------------------------
# reading: every file opened once (no symlink, no hard link, regular files only), read into
# memory once; the bytes that were hashed are the bytes that are parsed
# -------------------------------------------------------------------------------------


def _sha256(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _open_dir(path: Path) -> int:
    """The checkpoint directory, opened without following a symlink as its last component."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _O_CLOEXEC)
    except FileNotFoundError:
        raise CheckpointError("missing", f"{path} does not exist") from None
    except NotADirectoryError:
        raise CheckpointError("missing", f"{path} is not a directory") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise CheckpointError("path_escape", f"{path} is a symlink") from None
        raise CheckpointError("unreadable", f"{path}: {e.strerror}") from None


def _read_member(
    dfd: int, name: str, *, limit: int, expected_bytes: int | None = None
) -> bytearray:
    """Open ``name`` inside the directory ``dfd`` once and read it whole.

    Refused: a symlink (``O_NOFOLLOW``), anything but a regular file, a file with another
    hard link (its bytes could be changed through the other name), a size above ``limit`` or
    different from ``expected_bytes`` -- all checked on the open descriptor before a byte of
    it is read."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=dfd)
    except FileNotFoundError:
        raise CheckpointError("missing_file", "absent", name) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise CheckpointError("path_escape", "file is a symlink (refused)", name) from None
        raise CheckpointError("unreadable", e.strerror or str(e), name) from None
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError("not_regular_file", "not a regular file (refused)", name)
        if st.st_nlink != 1:
            raise CheckpointError(
                "hard_link", f"file has {st.st_nlink} hard links (refused: exactly 1)", name
            )
        size = st.st_size
        if size > limit or (expected_bytes is not None and expected_bytes > limit):
            raise CheckpointError(
                "too_large", f"{max(size, expected_bytes or 0)} bytes > limit {limit}", name
            )
        if expected_bytes is not None and size != expected_bytes:
            reason = "truncated" if size < expected_bytes else "size_mismatch"
            raise CheckpointError(
                reason, f"{size} bytes on disk, manifest says {expected_bytes}", name
            )
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            n = f.readinto(view[got:])
            if not n:
                break
            got += n
        view.release()
        if got < size:
            raise CheckpointError("truncated", f"file shrank while read ({got} < {size})", name)
        if f.read(1):
            raise CheckpointError("size_mismatch", "file grew while read", name)
    return buf


def _parse_json(raw: bytes | bytearray, name: str) -> Any:
    try:
        return json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError("bad_json", str(e)[:200], name) from None
    except RecursionError:
        raise CheckpointError("bad_json", "nested too deeply", name) from None


def _safetensors_header(buf: bytes | bytearray, name: str) -> tuple[dict[str, Any], int]:
    """Parse a safetensors header from the file's bytes; refuse pickles and junk. Returns the
    header and the offset where tensor data starts."""
    size = len(buf)
    if size < 8:
        raise CheckpointError("truncated", "file shorter than a safetensors header", name)
    head = bytes(buf[:8])
    (hlen,) = struct.unpack("<Q", head)
    # a pickle (0x80 proto) or zip ("PK") start is only one if it is not a header length
    # that fits: a real header of e.g. 0x0380 bytes also starts with 0x80
    if (head[:1] == b"\x80" or head[:2] == b"PK") and hlen > min(size - 8, 100 * 1024**2):
        raise CheckpointError("not_safetensors", "pickle/zip data, not safetensors (refused)", name)
    if hlen > min(size - 8, 100 * 1024**2):
        raise CheckpointError(
            "not_safetensors", f"header length {hlen} does not fit the file", name
        )
    try:
        header = json.loads(bytes(buf[8 : 8 + hlen]))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CheckpointError("not_safetensors", "header is not JSON", name) from None
    if not isinstance(header, dict):
        raise CheckpointError("not_safetensors", "header is not an object", name)
    end = 0
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        try:
            end = max(end, int(meta["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise CheckpointError("not_safetensors", f"bad tensor entry {key!r}", name) from None
    if 8 + hlen + end != size:
        raise CheckpointError(
            "truncated", f"tensor data ends at {8 + hlen + end}, file has {size} bytes", name
        )
    return header, 8 + hlen


_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def _tensors(
    buf: bytearray, header: dict[str, Any], start: int, name: str
) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file as numpy views of its (already hashed) bytes: no
    copy, no second read."""
    out: dict[str, np.ndarray] = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype = np.dtype(_DTYPES[meta["dtype"]])
            shape = tuple(int(d) for d in meta["shape"])
            begin, stop = (int(x) for x in meta["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(
                "not_safetensors", f"tensor {key!r}: unsupported dtype or bad entry", name
            ) from None
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if any(d < 0 for d in shape) or begin < 0 or stop - begin != count * dtype.itemsize:
            raise CheckpointError(
                "not_safetensors", f"tensor {key!r}: offsets and shape differ", name
            )
        out[key] = np.frombuffer(buf, dtype=dtype, count=count, offset=start + begin).reshape(shape)
    return out


@dataclass
class _Verified:
    """A checkpoint directory read once and checked: the manifest and every file's bytes."""

    manifest: dict[str, Any]
    manifest_sha256: str
    data: dict[str, bytearray]
    headers: dict[str, tuple[dict[str, Any], int]]
    signed_by: str | None


def _check_signature(dfd: int, keyring: Keyring, manifest_sha: str, version: int) -> str:
    try:
        raw = _read_member(dfd, SIGNATURE, limit=MAX_SIGNATURE_BYTES)
    except CheckpointError as e:
        if e.reason == "missing_file":
            raise CheckpointError("unsigned", "no signature.json (refused)", SIGNATURE) from None
        raise
    rec = _parse_json(raw, SIGNATURE)
    if not isinstance(rec, dict) or rec.get("format") != SIGNATURE_FORMAT:
        raise CheckpointError("bad_signature", f"format is not {SIGNATURE_FORMAT!r}", SIGNATURE)
    try:
        key_id = keyring.verify(SIGNATURE_KIND, rec)
    except SignatureRefused as e:
        raise CheckpointError(e.reason, e.message, SIGNATURE) from None
    if rec.get("manifest_sha256") != manifest_sha or rec.get("version") != version:
        raise CheckpointError(
            "bad_signature", "the signature is for another manifest or version", SIGNATURE
        )
    return key_id


def _read_verified(
    path: Path,
    *,
    max_file_bytes: int,
    expected_sha256: str | None,
    verify_keys: Keyring | None,
) -> _Verified:
    dfd = _open_dir(path)
    try:
        mraw = _read_member(dfd, MANIFEST, limit=MAX_MANIFEST_BYTES)
        msha = _sha256(mraw)
        if expected_sha256 is not None and msha != expected_sha256:
            raise CheckpointError(
                "checksum_mismatch", "manifest sha256 differs from the announced one", MANIFEST
            )
        manifest = _parse_json(mraw, MANIFEST)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CheckpointError("bad_manifest", f"format is not {FORMAT!r}", MANIFEST)
        files = manifest.get("files")
        if not isinstance(files, dict):
            raise CheckpointError("bad_manifest", "no files table", MANIFEST)
        version = manifest.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise CheckpointError("bad_manifest", f"bad version {version!r}", MANIFEST)
        for name in files:
            if (
                not isinstance(name, str)
                or name != os.path.basename(name)
                or name in ("", ".", "..")
                or "\\" in name
                or name.startswith(".")
                or name == SIGNATURE
            ):
                raise CheckpointError(
                    "path_escape",
                    f"manifest lists a file outside the checkpoint: {name!r}",
                    MANIFEST,
                )
        missing = [n for n in REQUIRED_FILES if n not in files]
        if missing:
            raise CheckpointError("bad_manifest", f"manifest lacks {missing}", MANIFEST)
        for name, meta in files.items():
            if (
                not isinstance(meta, dict)
                or not isinstance(meta.get("bytes"), int)
                or isinstance(meta.get("bytes"), bool)
                or not isinstance(meta.get("sha256"), str)
            ):
                raise CheckpointError("bad_manifest", "entry lacks bytes/sha256", name)
            if meta["bytes"] > max_file_bytes or meta["bytes"] < 0:
                raise CheckpointError(
                    "too_large", f"{meta['bytes']} bytes > limit {max_file_bytes}", name
                )
        # the signature first: an unsigned directory costs one small read, nothing more
        signed_by = (
            _check_signature(dfd, verify_keys, msha, version) if verify_keys is not None else None
        )
        data: dict[str, bytearray] = {}
        headers: dict[str, tuple[dict[str, Any], int]] = {}
        for name, meta in files.items():
            limit = MAX_JSON_BYTES if name in JSON_FILES else max_file_bytes
            buf = _read_member(dfd, name, limit=limit, expected_bytes=meta["bytes"])
            if name.endswith(".safetensors"):
                headers[name] = _safetensors_header(buf, name)
            if _sha256(buf) != meta["sha256"]:
                raise CheckpointError("checksum_mismatch", "sha256 differs from the manifest", name)
            data[name] = buf
    finally:
        os.close(dfd)
    return _Verified(manifest, msha, data, headers, signed_by)


def verify_checkpoint(
    path: Path | str,
    *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    expected_sha256: str | None = None,
    verify_keys: Keyring | None = None,
) -> dict[str, Any]:
    """Check a checkpoint directory against its manifest without building the model.

    Returns the manifest. ``expected_sha256`` (from a ``model-updates`` record or the
    pointer) must equal the sha256 of ``manifest.json`` when given; with ``verify_keys``,
    ``signature.json`` must be a valid signature of one of those keys over that sha256."""
    return _read_verified(
        Path(path),
        max_file_bytes=max_file_bytes,
        expected_sha256=expected_sha256,
        verify_keys=verify_keys,
    ).manifest


@dataclass
class Checkpoint:
    """A loaded checkpoint: the student plus its item table, ready to serve."""

    path: Path
    version: int
    config: StudentConfig
    model: Student
    item_ids: list[str]
    item_titles: list[str]
    item_text_vecs: np.ndarray
    item_vectors: np.ndarray
    metrics: dict[str, Any]
    teacher: dict[str, Any]
    manifest: dict[str, Any]
    device: torch.device
    index_of: dict[str, int] = field(default_factory=dict)
    manifest_sha256: str = ""
    """sha256 of the ``manifest.json`` bytes this checkpoint was loaded from."""
    signed_by: str | None = None
    """Key id of the verified ``signature.json`` (``None``: loaded without verifying one)."""
    table: torch.Tensor = field(init=False, repr=False)
    """The student item vectors as a tensor on ``device`` (what the student encodes with)."""
    max_item_norm: float = field(init=False, repr=False, default=0.0)
    """The largest L2 norm among ``item_vectors`` (bounds the vectors ``item-vectors`` may add)."""

    def __post_init__(self) -> None:
        self.index_of = {iid: i for i, iid in enumerate(self.item_ids)}
        self.max_item_norm = (
            float(np.linalg.norm(self.item_vectors, axis=1).max())
            if len(self.item_vectors)
            else 0.0
        )
        self.table = torch.from_numpy(self.item_vectors).to(self.device)

    # -- encoding ------------------------------------------------------------------------
    def rows_of(self, history: Sequence[Any]) -> tuple[list[int], list[int]]:
        """Rows and event types of a history (``item_id`` or ``(item_id, event_type)``
        entries; event type as ``int`` or ``"click"``/``"purchase"``). Unknown items are
        skipped (they stay in the caller's session)."""
        rows, types = [], []
        for ev in history:
            if isinstance(ev, tuple | list):
                iid, et = ev[0], ev[1]
            else:
                iid, et = ev, 0
            r = self.index_of.get(str(iid))
            if r is None:
                continue
            rows.append(r)
            types.append(EVENT_TYPES.get(et, 0) if isinstance(et, str) else int(et))
        return rows, types

    @torch.no_grad()
    def embed_users(self, histories: Sequence[Sequence[Any]]) -> np.ndarray:
        """User vectors ``[B, dim]`` (float32) for a batch of histories, oldest first."""
        packed = [self.rows_of(h) for h in histories]
        idx, typ, mask = pack_histories(
            [p[0] for p in packed], [p[1] for p in packed], self.config.max_len, self.device
        )
        return self.model.encode_indexed(self.table, idx, typ, mask).float().cpu().numpy()

    def recommend(
        self, history: Sequence[Any], k: int = 10, exclude_seen: bool = True
    ) -> list[tuple[str, float]]:
        """Top-``k`` ``(item_id, score)`` for one history by exact inner product."""
        u = self.embed_users([history])[0]
        scores = self.item_vectors @ u
        if exclude_seen:
            seen = {
                self.index_of[str(e[0] if isinstance(e, tuple | list) else e)]
                for e in history
                if str(e[0] if isinstance(e, tuple | list) else e) in self.index_of
            }
            if seen:
                scores[list(seen)] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        top = np.argpartition(-scores, k - 1)[:k] if k > 0 else np.array([], dtype=int)
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.item_ids[i], float(scores[i])) for i in top]

    @torch.no_grad()
    def item_vector_for_text(self, text_vec: np.ndarray) -> np.ndarray:
        """Place a brand-new item (no id embedding) by its teacher text vector(s)."""
        t = torch.as_tensor(np.atleast_2d(text_vec), dtype=torch.float32, device=self.device)
        v = self.model.item_vectors(
            t, torch.full((t.shape[0],), -1, dtype=torch.long, device=self.device)
        )
        out = v.float().cpu().numpy()
        return out[0] if np.ndim(text_vec) == 1 else out


def _require_finite(arrays: dict[str, np.ndarray], name: str) -> None:
    """Refuse NaN or infinity in any floating tensor (hashes, signature and shapes can all be
    right on a checkpoint that ranks every item to nothing)."""
    for key, a in arrays.items():
        if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
            raise CheckpointError("non_finite", f"tensor {key!r} holds NaN or infinity", name)


def load_checkpoint(
    path: Path | str,
    *,
    device: str | torch.device = "cpu",
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    expected_sha256: str | None = None,
    verify_keys: Keyring | None = None,
) -> Checkpoint:
    """Verify and rebuild a checkpoint exactly. Raises :class:`CheckpointError` (with a
    reason code and the offending file) on anything suspicious; nothing large is
    allocated before the manifest, sizes, headers and config bounds are checked.

    Every file is read once into memory and hashed; tensors and JSON are parsed from those
    very bytes (a file swapped on disk after it was hashed is never what gets loaded).
    ``verify_keys``: require ``signature.json`` signed by one of these keys over the
    manifest's sha256 (``unsigned``, ``unknown_key``, ``bad_signature`` otherwise)."""
    path = Path(path)
    got = _read_verified(
        path,
        max_file_bytes=max_file_bytes,
        expected_sha256=expected_sha256,
        verify_keys=verify_keys,
    )
    manifest, data = got.manifest, got.data
    cfg_raw = _parse_json(data["config.json"], "config.json")
    if not isinstance(cfg_raw, dict):
        raise CheckpointError("bad_config", "config.json is not an object", "config.json")
    try:
        config = StudentConfig.from_dict(cfg_raw.get("student"))  # refuses a non-object
    except (TypeError, ValueError) as e:
        raise CheckpointError("bad_config", str(e), "config.json") from None
    items = _parse_json(data["items.json"], "items.json")
    if not isinstance(items, dict) or not isinstance(items.get("ids"), list):
        raise CheckpointError("bad_items", "items.json lacks ids", "items.json")
    ids = [str(i) for i in items["ids"]]
    titles = [str(t) for t in items.get("titles", [""] * len(ids))]
    n = len(ids)
    if len(titles) != n or len(set(ids)) != n or n < config.n_items:
        raise CheckpointError("bad_items", "item table inconsistent with the config", "items.json")
    metrics = _parse_json(data["metrics.json"], "metrics.json")

    dev = torch.device(device)
    # The config's shapes on the meta device (nothing allocated) must match the weights
    # file's header before the model is built: a config asking for billions of parameters
    # beside a small file is refused here, not after allocating them.
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Student(config).state_dict().items()}
    header, start = got.headers["weights.safetensors"]
    declared = {
        k: tuple(v.get("shape") or ())
        for k, v in header.items()
        if k != "__metadata__" and isinstance(v, dict)
    }
    if declared != expected:
        raise CheckpointError(
            "shape_mismatch",
            "weights header disagrees with the config's model: "
            f"{sorted(set(declared) ^ set(expected))[:5] or 'shapes differ'}",
            "weights.safetensors",
        )
    arrays = _tensors(data.pop("weights.safetensors"), header, start, "weights.safetensors")
    _require_finite(arrays, "weights.safetensors")
    model = Student(config)
    model.load_state_dict({k: torch.from_numpy(a) for k, a in arrays.items()})
    del arrays
    model.to(dev).eval()
    iheader, istart = got.headers["items.safetensors"]
    tensors = _tensors(data.pop("items.safetensors"), iheader, istart, "items.safetensors")
    if set(tensors) != {"text_vecs", "item_vectors"}:
        raise CheckpointError(
            "shape_mismatch",
            "items.safetensors must hold text_vecs and item_vectors",
            "items.safetensors",
        )
    _require_finite(tensors, "items.safetensors")
    text, vecs = tensors["text_vecs"], tensors["item_vectors"]
    if text.shape != (n, config.text_dim) or vecs.shape != (n, config.dim):
        raise CheckpointError(
            "shape_mismatch",
            f"item tensors {text.shape}/{vecs.shape} vs {n} items",
            "items.safetensors",
        )
    return Checkpoint(
        path=path,
        version=int(manifest["version"]),
        config=config,
        model=model,
        item_ids=ids,
        item_titles=titles,
        item_text_vecs=np.ascontiguousarray(text, dtype=np.float32),
        item_vectors=np.ascontiguousarray(vecs, dtype=np.float32),
        metrics=metrics if isinstance(metrics, dict) else {},
        teacher=cfg_raw.get("teacher") or {},
        manifest=manifest,
        device=dev,
        manifest_sha256=got.manifest_sha256,
        signed_by=got.signed_by,
    )


def prune_store(root: Path | str, *, keep: int, protect: Sequence[int] = ()) -> list[int]:
    """Delete all version directories but the newest ``keep`` and those in ``protect`` (the
    pointer's); also temp dirs of interrupted writes older than an hour. Returns the
    versions deleted."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    root = Path(root)
    versions = list_versions(root)
    kept = set(versions[-keep:]) | {int(v) for v in protect}
    gone = []
    for v in versions:
        if v in kept:
            continue
        shutil.rmtree(version_path(root, v))
        gone.append(v)
    if root.is_dir():
        for p in root.iterdir():
            stale = p.name.startswith(".tmp-") and p.is_dir() and not p.is_symlink()
            if stale and time.time() - p.stat().st_mtime > 3600:
                shutil.rmtree(p, ignore_errors=True)
    if gone:
        _fsync_dir(root)
    return gone


def manifest_sha256(path: Path | str) -> str:
    """sha256 of a checkpoint's ``manifest.json`` (what ``model-updates`` announces)."""
    return sha256_file(Path(path) / MANIFEST)


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]
