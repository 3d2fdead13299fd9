"""Teacher item-text vectors on disk, keyed by a hash of the text: encode each item once.

An :class:`ItemVectorCache` is a folder per encoder (``<root>/<encoder key>/``, the key a
fingerprint of the encoder's files, :func:`folder_fingerprint`) of append-only *shards*:
``keys-<id>.npy`` (``[n, 2]`` uint64: the first 16 bytes of ``sha256(text)``) and
``vectors-<id>.npy`` (``[n, D]`` float32). :meth:`ItemVectorCache.encode` looks every text up
(a sorted index of the keys: ``O(log n)`` per text), encodes only the missing ones, and writes
them as one new shard (vectors first, keys last and atomically renamed, so a reader never
sees a half-written shard; several processes may share a folder). Shards are merged into one
when there are more than ``max_shards``. Memory: the index (24 bytes per cached text) and the
rows asked for; the vectors stay on disk (memory-mapped reads).

A re-distillation cycle, a restart of the trainer or a second ``coldstream train`` on the same
catalogue therefore encodes nothing; a changed text is a new key (encoded once).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CachedEncoder", "ItemVectorCache", "folder_fingerprint", "text_keys"]

log = logging.getLogger(__name__)

FORMAT = "v1"
"""Bumped when the layout or the meaning of a vector changes (a new folder, a fresh cache)."""


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """``[n, 2]`` uint64: the first 16 bytes of each text's sha256."""
    out = np.empty((len(texts), 2), dtype=np.uint64)
    for i, t in enumerate(texts):
        out[i] = np.frombuffer(hashlib.sha256(t.encode("utf-8")).digest()[:16], dtype=np.uint64)
    return out


def folder_fingerprint(path: Path | str, *extra: object) -> str:
    """A short sha256 of every regular file in ``path`` (names and bytes, sorted) and ``extra``
    (e.g. the token limit): the identity of an encoder's weights, tokenizer and config."""
    h = hashlib.sha256(repr(extra).encode())
    root = Path(path)
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()[:20]


class ItemVectorCache:
    """The on-disk text -> vector cache of one encoder (see the module doc)."""

    def __init__(
        self, root: Path | str, encoder_key: str, dim: int, *, max_shards: int = 64
    ) -> None:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", encoder_key)
        self.folder = Path(root).expanduser() / f"{safe}-{FORMAT}"
        self.dim = int(dim)
        self.max_shards = max_shards
        self.encoded = 0
        """Texts this object encoded (cache misses), over its lifetime."""
        self.read_only = False
        """Set when a write failed (read-only or full disk): lookups go on, nothing is added."""
        self._shards: list[str] = []
        self._k1 = np.zeros(0, np.uint64)
        self._k2 = np.zeros(0, np.uint64)
        self._shard = np.zeros(0, np.int32)
        self._row = np.zeros(0, np.int64)

    # -- the index -------------------------------------------------------------------------
    def _listed(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.name[5:-4] for p in self.folder.glob("keys-*.npy"))

    def refresh(self) -> None:
        """(Re)build the index from the shards on disk."""
        shards = self._listed()
        if shards == self._shards:
            return
        keys = [np.load(self.folder / f"keys-{s}.npy") for s in shards]
        k = np.concatenate(keys) if keys else np.zeros((0, 2), np.uint64)
        shard = np.concatenate([np.full(len(x), i, np.int32) for i, x in enumerate(keys)] or [[]])
        row = np.concatenate([np.arange(len(x)) for x in keys] or [[]]).astype(np.int64)
        order = np.lexsort((k[:, 1], k[:, 0])) if len(k) else np.zeros(0, np.int64)
        self._shards = shards
        self._k1, self._k2 = k[order, 0], k[order, 1]
        self._shard, self._row = shard.astype(np.int32)[order], row[order]

    def __len__(self) -> int:
        self.refresh()
        return len(self._k1)

    def _find(self, keys: np.ndarray) -> np.ndarray:
        """Index positions of ``keys`` (``-1``: not cached)."""
        pos = np.searchsorted(self._k1, keys[:, 0])
        pos = np.minimum(pos, max(len(self._k1) - 1, 0))
        if not len(self._k1):
            return np.full(len(keys), -1, np.int64)
        ok = (self._k1[pos] == keys[:, 0]) & (self._k2[pos] == keys[:, 1])
        return np.where(ok, pos, -1)

    def _gather(self, pos: np.ndarray) -> np.ndarray:
        out = np.empty((len(pos), self.dim), dtype=np.float32)
        shard, row = self._shard[pos], self._row[pos]
        for s in np.unique(shard):
            sel = np.flatnonzero(shard == s)
            vecs = np.load(self.folder / f"vectors-{self._shards[s]}.npy", mmap_mode="r")
            out[sel] = vecs[row[sel]]
        return out

    # -- reading and writing -----------------------------------------------------------------
    def lookup(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors [n, D], found bool [n])``; rows not found are zero."""
        return self._lookup_keys(text_keys(texts))

    def _lookup_keys(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.refresh()
        pos = self._find(keys)
        found = pos >= 0
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        if found.any():
            try:
                out[found] = self._gather(pos[found])
            except FileNotFoundError:  # another process merged the shards: read them again
                self._shards = []
                return self._lookup_keys(keys)
        return out, found

    def add(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Write ``texts`` -> ``vectors`` as one new shard (then merge if there are too many)."""
        self._add_keys(text_keys(texts), vectors)

    def _add_keys(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        if not len(keys) or self.read_only:
            return
        vecs = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(keys), self.dim)
        try:
            self._write(keys, vecs)
            if len(self._listed()) > self.max_shards:
                self.compact()
        except OSError as e:  # a read-only or full disk: keep encoding, stop caching
            self.read_only = True
            log.warning(
                "item-vector cache %s not writable (%s): vectors not cached", self.folder, e
            )

    def _write(self, keys: np.ndarray, vecs: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        sid = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        tmp_v = self.folder / f".vectors-{sid}.tmp.npy"
        tmp_k = self.folder / f".keys-{sid}.tmp.npy"
        np.save(tmp_v, vecs)
        os.replace(tmp_v, self.folder / f"vectors-{sid}.npy")
        np.save(tmp_k, np.ascontiguousarray(keys, dtype=np.uint64))
        os.replace(tmp_k, self.folder / f"keys-{sid}.npy")  # the shard exists from here on

    def compact(self) -> None:
        """Merge every shard into one (duplicate keys kept once)."""
        self._shards = []
        self.refresh()
        old = list(self._shards)
        if len(old) <= 1:
            return
        first = np.ones(len(self._k1), bool)
        first[1:] = (self._k1[1:] != self._k1[:-1]) | (self._k2[1:] != self._k2[:-1])
        pos = np.flatnonzero(first)
        self._write(np.stack([self._k1[pos], self._k2[pos]], axis=1), self._gather(pos))
        for s in old:
            (self.folder / f"keys-{s}.npy").unlink(missing_ok=True)
            (self.folder / f"vectors-{s}.npy").unlink(missing_ok=True)
        self._shards = []

    def encode(self, texts: Sequence[str], encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """Vectors ``[len(texts), D]`` of ``texts``: cached ones read, the others encoded once
        (``encode(unique missing texts)``) and added as one shard."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = text_keys(texts)
        uniq, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        vecs, found = self._lookup_keys(uniq)
        miss = np.flatnonzero(~found)
        if len(miss):
            new = np.asarray(encode([texts[i] for i in first[miss]]), dtype=np.float32)
            self._add_keys(uniq[miss], new)
            self.encoded += len(miss)
            vecs[miss] = new
        return vecs[inverse.reshape(-1)]


class CachedEncoder:
    """An encoder (``teacher.encode(texts, progress=...)``, ``teacher.dim``) through an
    :class:`ItemVectorCache` named ``key`` under ``folder``: ``coldstream evaluate`` encodes the
    same history texts again and again (the splits' training prefixes overlap, a re-run repeats
    them all). The key names the encoder (the teacher's folder and, when one is attached, its
    adapter's identity): an adapter change is a new key. ``hits``/``misses`` count texts."""

    def __init__(self, teacher: Any, folder: Path | str, key: str) -> None:
        self.teacher = teacher
        self.cache = ItemVectorCache(folder, key, int(teacher.dim))
        self.hits = self.misses = 0

    @property
    def dim(self) -> int:
        return int(self.teacher.dim)

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        before = self.cache.encoded
        out = self.cache.encode(texts, lambda miss: self.teacher.encode(miss, progress=progress))
        new = self.cache.encoded - before
        self.misses += new
        self.hits += len(texts) - new
        return out
