"""The model store: versioned, self-describing, checksummed checkpoints.

A checkpoint is a directory ``<root>/v000007/`` holding

==========================  ==============================================================
``weights.safetensors``     the student's ``state_dict``
``items.safetensors``       ``text_vecs [N, text_dim]`` (teacher) and ``item_vectors [N, dim]``
``items.json``              ``{"ids": [...], "titles": [...]}`` (row order of the tensors)
``config.json``             ``{"student": StudentConfig, "teacher": {...}}``
``metrics.json``            training / gate metrics
``manifest.json``           ``format``, ``version``, ``created_at``, ``files: {name: {sha256, bytes}}``
==========================  ==============================================================

It is written atomically (a temp dir inside the root, fsync, rename) and read by one
function, :func:`load_checkpoint`, used by training, evaluation and serving alike. Every
file is checked against the manifest (size first, then sha256) and every size against
limits *before* anything large is allocated. Pickle is never read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
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
from safetensors import safe_open
from safetensors.torch import save_file

from coldstream.core.errors import Refused
from coldstream.core.events import EVENT_TYPES
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
) -> Path:
    """Write a checkpoint atomically and return its directory.

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
# reading
# -------------------------------------------------------------------------------------


def _read_json(path: Path, name: str, limit: int) -> Any:
    if path.stat().st_size > limit:
        raise CheckpointError("too_large", f"{path.stat().st_size} bytes > limit {limit}", name)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError("bad_json", str(e), name) from None


def _check_safetensors_header(path: Path, name: str) -> dict[str, Any]:
    """Parse a safetensors header without loading tensors; refuse pickles and junk."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError("truncated", "file shorter than a safetensors header", name)
        (hlen,) = struct.unpack("<Q", head)
        # a pickle (0x80 proto) or zip ("PK") start is only one if it is not a header length
        # that fits: a real header of e.g. 0x0380 bytes also starts with 0x80
        if (head[:1] == b"\x80" or head[:2] == b"PK") and hlen > min(size - 8, 100 * 1024**2):
            raise CheckpointError(
                "not_safetensors", "pickle/zip data, not safetensors (refused)", name
            )
        if hlen > min(size - 8, 100 * 1024**2):
            raise CheckpointError(
                "not_safetensors", f"header length {hlen} does not fit the file", name
            )
        raw = f.read(hlen)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
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
    return header


def verify_checkpoint(
    path: Path | str,
    *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    expected_sha256: str | None = None,
) -> dict[str, Any]:
    """Check a checkpoint directory against its manifest without loading tensors.

    Returns the manifest. ``expected_sha256`` (from a ``model-updates`` record) must
    equal the sha256 of ``manifest.json`` when given."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError("missing", f"{path} is not a directory")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise CheckpointError("missing_file", "no manifest", MANIFEST)
    if expected_sha256 is not None and sha256_file(mpath) != expected_sha256:
        raise CheckpointError(
            "checksum_mismatch", "manifest sha256 differs from the announced one", MANIFEST
        )
    manifest = _read_json(mpath, MANIFEST, MAX_MANIFEST_BYTES)
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
        ):
            raise CheckpointError(
                "path_escape", f"manifest lists a file outside the checkpoint: {name!r}", MANIFEST
            )
    missing = [n for n in REQUIRED_FILES if n not in files]
    if missing:
        raise CheckpointError("bad_manifest", f"manifest lacks {missing}", MANIFEST)
    real_root = path.resolve()
    for name, meta in files.items():
        fpath = path / name
        if fpath.is_symlink() or fpath.resolve().parent != real_root:
            raise CheckpointError(
                "path_escape", "file is a symlink or resolves outside the checkpoint", name
            )
        if not fpath.is_file():
            raise CheckpointError("missing_file", "listed in the manifest but absent", name)
        if (
            not isinstance(meta, dict)
            or not isinstance(meta.get("bytes"), int)
            or not isinstance(meta.get("sha256"), str)
        ):
            raise CheckpointError("bad_manifest", "entry lacks bytes/sha256", name)
        size = fpath.stat().st_size
        if meta["bytes"] > max_file_bytes or size > max_file_bytes:
            raise CheckpointError(
                "too_large", f"{max(size, meta['bytes'])} bytes > limit {max_file_bytes}", name
            )
        if size != meta["bytes"]:
            reason = "truncated" if size < meta["bytes"] else "size_mismatch"
            raise CheckpointError(
                reason, f"{size} bytes on disk, manifest says {meta['bytes']}", name
            )
        if name.endswith(".safetensors"):
            _check_safetensors_header(fpath, name)
        if sha256_file(fpath) != meta["sha256"]:
            raise CheckpointError("checksum_mismatch", "sha256 differs from the manifest", name)
    return manifest


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
    table: torch.Tensor = field(init=False, repr=False)
    """The student item vectors as a tensor on ``device`` (what the student encodes with)."""

    def __post_init__(self) -> None:
        self.index_of = {iid: i for i, iid in enumerate(self.item_ids)}
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


def load_checkpoint(
    path: Path | str,
    *,
    device: str | torch.device = "cpu",
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    expected_sha256: str | None = None,
) -> Checkpoint:
    """Verify and rebuild a checkpoint exactly. Raises :class:`CheckpointError` (with a
    reason code and the offending file) on anything suspicious; nothing large is
    allocated before the manifest, sizes, headers and config bounds are checked."""
    path = Path(path)
    manifest = verify_checkpoint(
        path, max_file_bytes=max_file_bytes, expected_sha256=expected_sha256
    )
    cfg_raw = _read_json(path / "config.json", "config.json", MAX_JSON_BYTES)
    if not isinstance(cfg_raw, dict):
        raise CheckpointError("bad_config", "config.json is not an object", "config.json")
    try:
        config = StudentConfig.from_dict(cfg_raw.get("student"))  # refuses a non-object
    except (TypeError, ValueError) as e:
        raise CheckpointError("bad_config", str(e), "config.json") from None
    items = _read_json(path / "items.json", "items.json", MAX_JSON_BYTES)
    if not isinstance(items, dict) or not isinstance(items.get("ids"), list):
        raise CheckpointError("bad_items", "items.json lacks ids", "items.json")
    ids = [str(i) for i in items["ids"]]
    titles = [str(t) for t in items.get("titles", [""] * len(ids))]
    n = len(ids)
    if len(titles) != n or len(set(ids)) != n or n < config.n_items:
        raise CheckpointError("bad_items", "item table inconsistent with the config", "items.json")
    metrics = _read_json(path / "metrics.json", "metrics.json", MAX_JSON_BYTES)

    dev = torch.device(device)
    # The config's shapes on the meta device (nothing allocated) must match the weights
    # file's header before the model is built: a config asking for billions of parameters
    # beside a small file is refused here, not after allocating them.
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Student(config).state_dict().items()}
    header = _check_safetensors_header(path / "weights.safetensors", "weights.safetensors")
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
    model = Student(config)
    state: dict[str, torch.Tensor] = {}
    with safe_open(str(path / "weights.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        if keys != set(expected):
            raise CheckpointError(
                "shape_mismatch",
                f"weights keys differ from the config's model: {sorted(keys ^ set(expected))[:5]}",
                "weights.safetensors",
            )
        for k in keys:
            t = f.get_tensor(k)
            if tuple(t.shape) != expected[k]:
                raise CheckpointError(
                    "shape_mismatch",
                    f"{k}: {tuple(t.shape)} != {expected[k]}",
                    "weights.safetensors",
                )
            state[k] = t
    model.load_state_dict(state)
    model.to(dev).eval()
    with safe_open(str(path / "items.safetensors"), framework="np") as f:
        if set(f.keys()) != {"text_vecs", "item_vectors"}:
            raise CheckpointError(
                "shape_mismatch",
                "items.safetensors must hold text_vecs and item_vectors",
                "items.safetensors",
            )
        text = f.get_tensor("text_vecs")
        vecs = f.get_tensor("item_vectors")
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
    )


def manifest_sha256(path: Path | str) -> str:
    """sha256 of a checkpoint's ``manifest.json`` (what ``model-updates`` announces)."""
    return sha256_file(Path(path) / MANIFEST)


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]
