"""The adapted teacher's head in the trainer service: kept beside the checkpoints, and the
scorer that turns histories into teacher logits through it.

A :class:`~trainer.teacher.adapt.TeacherHead` is not part of a student checkpoint; the service
keeps the one each promoted version was distilled from as
``<store>/teacher-heads/v000007.safetensors`` (:func:`save_teacher_head`, written
atomically; :func:`load_teacher_head` reads a version's or the newest).
:class:`TeacherScorer` scores histories of item rows with the encoder and that head, and
fits a head on the buffer when there is none yet (the service's first cycle).

A LoRA adapter of the teacher's encoder (:mod:`trainer.teacher.lora`) is kept in the same folder as
``adapter-v000007.safetensors`` (:func:`save_teacher_adapter`); :func:`load_teacher_adapter`
attaches a version's (or the newest) to the service's teacher, and from then on
:class:`TeacherScorer` encodes histories with the adapted encoder (item vectors stay the stock
encoder's, so the item table and ``item-vectors`` do not change).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainer.teacher.adapt import HeadConfig, TeacherHead, calibrate_temperature, fit_head
from trainer.teacher.encoder import teacher_features

HEADS_DIR = "teacher-heads"
"""Folder of the heads inside the model store."""


def teacher_head_path(store_root: Path | str, version: int) -> Path:
    return Path(store_root) / HEADS_DIR / f"v{version:06d}.safetensors"


def teacher_adapter_path(store_root: Path | str, version: int) -> Path:
    """Beside the heads; the name does not match the heads' ``v*.safetensors``."""
    return Path(store_root) / HEADS_DIR / f"adapter-v{version:06d}.safetensors"


def save_teacher_adapter(store_root: Path | str, version: int, teacher: Any) -> Path | None:
    """Write the teacher's LoRA adapter for ``version`` (safetensors, atomically); ``None``
    when the teacher has no adapter."""
    from trainer.teacher.lora import save_adapter

    if getattr(teacher, "adapter", None) is None:
        return None
    return save_adapter(teacher_adapter_path(store_root, version), teacher)


def load_teacher_adapter(
    store_root: Path | str, teacher: Any, version: int | None = None
) -> Path | None:
    """Attach the adapter saved for ``version`` (default: the newest) to a stock ``teacher``;
    the file, or ``None`` when there is none (the teacher stays stock). An adapter of another
    base encoder raises ``ValueError``."""
    from trainer.teacher.lora import detach_lora, load_adapter

    folder = Path(store_root) / HEADS_DIR
    if version is not None:
        path: Path | None = teacher_adapter_path(store_root, version)
    else:
        found = sorted(folder.glob("adapter-v*.safetensors")) if folder.is_dir() else []
        path = found[-1] if found else None
    if path is None or not path.is_file():
        return None
    detach_lora(teacher)
    desc = load_adapter(path, teacher)
    if desc.get("side", "history") != "history":
        detach_lora(teacher)
        raise ValueError(
            f"adapter {path} is item-side (an evaluation variant): the scorer encodes "
            "histories and takes history-side adapters only"
        )
    return path


def save_teacher_head(store_root: Path | str, version: int, head: TeacherHead, tau: float) -> Path:
    """Write a :class:`~trainer.teacher.adapt.TeacherHead` and its temperature (safetensors, atomically)."""
    from safetensors.torch import save_file

    dest = teacher_head_path(store_root, version)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
    os.close(fd)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(state, tmp, metadata={"dim": str(head.dim), "tau": repr(float(tau))})
    os.replace(tmp, dest)
    return dest


def load_teacher_head(
    store_root: Path | str, version: int | None = None
) -> tuple[TeacherHead, float] | None:
    """The head saved for ``version`` (default: the newest saved) and its temperature, or ``None``."""
    from safetensors import safe_open

    folder = Path(store_root) / HEADS_DIR
    if version is not None:
        path = teacher_head_path(store_root, version)
    else:
        found = sorted(folder.glob("v*.safetensors")) if folder.is_dir() else []
        path = found[-1] if found else None
    if path is None or not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open API
    head = TeacherHead(int(meta["dim"]))
    head.load_state_dict(state)
    head.eval()
    return head, float(meta.get("tau", 1.0))


class TeacherScorer:
    """Teacher logits for histories of item rows: encoder features of the history text
    through the adapted head (fitted on the buffer when none is given), divided by ``tau``.
    When the teacher carries a LoRA adapter (:func:`load_teacher_adapter`), histories are
    encoded through it (:attr:`adapted`)."""

    def __init__(
        self,
        teacher: Any,
        texts: Sequence[str],
        item_vecs: np.ndarray,
        head: TeacherHead | None = None,
        tau: float = 1.0,
    ) -> None:
        self.teacher, self.texts, self.item_vecs = teacher, list(texts), item_vecs
        self.head, self.tau = head, tau
        self.fitted = False

    @property
    def adapted(self) -> bool:
        """Whether histories go through a LoRA-adapted encoder."""
        return getattr(self.teacher, "adapter", None) is not None

    def features(self, histories: list[np.ndarray]) -> np.ndarray:
        return teacher_features(self.teacher, self.item_vecs, self.texts, histories)

    def fit_head(
        self, histories: list[np.ndarray], targets: list[np.ndarray], feats: np.ndarray
    ) -> None:
        """Fit a head on ``feats`` -> ``targets`` (all items in the catalogue) and calibrate ``tau``."""
        head, _ = fit_head(
            feats,
            targets,
            self.item_vecs,
            np.ones(len(self.item_vecs), bool),
            config=HeadConfig(epochs=15, patience=3),
        )
        self.tau = calibrate_temperature(
            head.score(feats, self.item_vecs), np.array([t[0] for t in targets])
        )
        self.head, self.fitted = head, True

    def __call__(self, histories: list[np.ndarray], feats: np.ndarray | None = None) -> np.ndarray:
        feats = self.features(histories) if feats is None else feats
        if self.head is None:
            return feats[:, : self.item_vecs.shape[1]] @ self.item_vecs.T / self.tau
        return self.head.score(feats, self.item_vecs) / self.tau
