"""The distillation pipeline as typed stages: training prefixes -> examples -> teacher targets
-> a trained student. :func:`trainer.student.fitting.fit`, the trainer service's cycle
(:func:`trainer.service.redistill.redistill`) and the evaluation harness
(:class:`trainer.evaluation.evaluate.Evaluation`) run the same stages; each stage's inputs and
outputs are frozen dataclasses.

Stages:

* :func:`prefixes` -- the training prefixes ``(users, ts)`` of some sequences
  (:class:`PrefixSpec`: every prefix up to ``max_prefix`` plus ``extra_per_user`` random longer
  ones, drawn by ``seed``).
* :func:`examples` -- the :class:`~trainer.student.training.Examples` of those prefixes, each
  pointing to its row of the teacher's prefixes (``kd_row``) when those are given.
* :func:`teacher_targets` -- the teacher's KD targets on its prefixes: dense logits ``[P, N]``
  on the full-softmax path, the top-K (scored in blocks) on the sampled one (:class:`TargetSpec`).
* :func:`train` -- the student trained with early stopping on ``validate`` (:class:`Distillation`
  sets the KD kind, weight and temperature), its curve and best validation score.

Decisions (where the callers differ, the stage stops):

* **Which prefixes the teacher scores** is the caller's: ``fit`` and the evaluation take every
  prefix up to a length plus a few random longer ones
  (:func:`trainer.student.features.teacher_position_arrays`, ``fit`` also caps their number),
  the service a uniform budget of the training prefixes. Both are passed to :func:`examples`
  and :func:`teacher_targets` as prefixes.
* **The teacher's head and temperature** stay with the callers: ``fit`` fits a head with early
  stopping on its validation users (on a catalogue sample at scale), the evaluation picks the
  best of several teachers and variants and calibrates with cold and revealed items masked,
  the service fits one on its buffer without validation (or has one). :func:`teacher_targets`
  takes what scores the prefixes (:class:`HeadScores` for a fitted head, or any
  :class:`TeacherScores`, such as the service's scorers of histories). The evaluation
  scores its chosen head's dense logits in ``Evaluation.choose_teacher`` (the full path only,
  the same ``head.score(feats, item_vecs) / tau`` as :class:`HeadScores`): :func:`teacher_targets`
  has two callers, ``fit`` and the service.
* **Validation** is the caller's callback: ``fit`` and the evaluation score validation users
  (chunked at catalogue scale in ``fit``); the service has none (its candidate is gated on the
  buffer's latest slice, so the curve's ``val`` is minus the loss).
* **The checkpoint** is not a stage: ``fit`` and the service already share
  :func:`coldstream.core.checkpoint.save_checkpoint`, and what they put in it differs (``fit``:
  rows reordered so seen items come first, its version; the service: the table it trained on, a
  signature and the teacher head). The evaluation writes none.
* Hyper-parameter search (the evaluation's ``kd_grid`` x variants) is the evaluation's: it
  calls :func:`train` once per setting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

import numpy as np
import torch

from coldstream.core.student import Student, StudentConfig
from trainer.student.features import kd_rows
from trainer.student.training import (
    Examples,
    Positions,
    Seq,
    TrainConfig,
    build_examples,
    prefix_position_arrays,
    train_student,
)
from trainer.teacher.topk import TopK, head_topk

KDKind = Literal["none", "model", "uniform"]
"""The student's teacher: ``none`` (CE only), ``model`` (the teacher's targets) or ``uniform``
(the label-smoothing control)."""
RankKind = Literal["bpr", "dllm2rec"]
Softmax = Literal["full", "sampled"]
Targets = torch.Tensor | TopK
"""Teacher targets: dense logits ``[P, N]`` or a top-K."""


# -- prefixes and examples ---------------------------------------------------------------------
@dataclass(frozen=True)
class PrefixSpec:
    """Which training prefixes: every length ``1..max_prefix`` plus ``extra_per_user`` random
    longer ones per user, drawn by ``seed``."""

    max_prefix: int
    extra_per_user: int
    seed: int

    @classmethod
    def of(cls, config: TrainConfig, seed: int | None = None) -> PrefixSpec:
        """The prefixes of a training configuration (``seed``: instead of ``config.seed``)."""
        return cls(config.max_prefix, config.extra_per_user, config.seed if seed is None else seed)


def prefixes(seqs: Sequence[Seq], spec: PrefixSpec) -> tuple[np.ndarray, np.ndarray]:
    """The training prefixes ``(users, ts)`` of ``seqs`` (by user, then ``t``): the prefix
    ``seq[:t]`` predicts ``seq[t]`` (:func:`~trainer.student.training.prefix_position_arrays`)."""
    return prefix_position_arrays(
        seqs, max_prefix=spec.max_prefix, extra_per_user=spec.extra_per_user, seed=spec.seed
    )


def as_pairs(positions: tuple[np.ndarray, np.ndarray]) -> list[tuple[int, int]]:
    """``(user, t)`` pairs of prefix arrays (what :func:`trainer.student.training.prefix_positions` gives)."""
    return list(zip(positions[0].tolist(), positions[1].tolist(), strict=True))


@dataclass(frozen=True)
class TrainingExamples:
    """The examples of :func:`examples`, with the prefixes they were built from and the
    teacher's prefixes their ``kd_row`` points into (``None``: none, every ``kd_row`` is -1)."""

    examples: Examples
    positions: Positions
    teacher_positions: Positions | None = None

    def __len__(self) -> int:
        return len(self.examples)


def examples(
    seqs: Sequence[Seq],
    positions: Positions,
    *,
    max_len: int,
    teacher_positions: Positions | None = None,
) -> TrainingExamples:
    """The examples of ``positions`` over ``seqs`` (histories cut to the ``max_len`` most recent
    events); with ``teacher_positions``, each example's row in the teacher's targets."""
    ex = build_examples(seqs, positions, max_len)
    if teacher_positions is not None:
        ex.kd_row = kd_rows(positions, teacher_positions)
    return TrainingExamples(ex, positions, teacher_positions)


# -- teacher targets ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TargetSpec:
    """How the teacher's targets are kept: dense logits (``full``) or the top-``topk`` found in
    blocks (``sampled``), with the tails at ``temperatures``."""

    softmax: Softmax
    topk: int = 100
    temperatures: tuple[float, ...] = ()

    @classmethod
    def of(cls, config: TrainConfig, n_items: int, temperature: float) -> TargetSpec:
        """The targets the student's training reads: its path for ``n_items``, its
        ``teacher_topk``, and the tail at ``temperature`` only where the KD reads it
        (``kd_outside="tail"``; ``auto``/``scored`` use the top-K's pair scorer)."""
        mode = config.mode(n_items)
        softmax: Softmax = "sampled" if mode == "sampled" else "full"
        temps = (temperature,) if config.kd_outside == "tail" else ()
        return cls(softmax, config.teacher_topk, temps)


class TeacherScores(Protocol):
    """What scores the teacher's prefixes: dense logits, or their top-K in blocks."""

    def dense(self) -> np.ndarray | torch.Tensor: ...

    def topk(self, k: int, temperatures: tuple[float, ...]) -> TopK: ...


@dataclass(frozen=True)
class HeadScores:
    """A fitted teacher head (:class:`trainer.teacher.adapt.TeacherHead`) on the prefixes'
    features: logits ``head(feats, item_vecs) / tau``."""

    head: Any
    feats: np.ndarray
    item_vecs: np.ndarray
    tau: float = 1.0

    def dense(self) -> np.ndarray:
        return self.head.score(self.feats, self.item_vecs) / self.tau

    def topk(self, k: int, temperatures: tuple[float, ...]) -> TopK:
        return head_topk(
            self.head, self.feats, self.item_vecs, k, tau=self.tau, temperatures=temperatures
        )


@dataclass(frozen=True)
class TeacherTargets:
    """The teacher's targets (row ``r``: prefix ``positions[r]``)."""

    positions: Positions
    logits: Targets

    def __len__(self) -> int:
        return len(self.logits)


def teacher_targets(
    scores: TeacherScores, positions: Positions, spec: TargetSpec
) -> TeacherTargets:
    """The teacher's targets on ``positions``: float32 logits ``[P, N]`` (``full``) or the
    top-``spec.topk`` found in blocks, never ``[P, N]`` (``sampled``)."""
    if spec.softmax == "sampled":
        return TeacherTargets(positions, scores.topk(spec.topk, spec.temperatures))
    return TeacherTargets(positions, torch.as_tensor(scores.dense(), dtype=torch.float32))


# -- the student -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Distillation:
    """The KD of one student: its teacher (``kind``), the KL's weight ``alpha`` and temperature;
    the ranking term's fields where given (``None``: the training configuration's)."""

    kind: KDKind = "none"
    alpha: float = 0.0
    temperature: float = 1.0
    rank_weight: float | None = None
    rank_kind: RankKind | None = None
    rank_k: int | None = None

    def config(self, config: TrainConfig) -> TrainConfig:
        """``config`` with this KD."""
        rank = {
            k: v
            for k, v in (
                ("rank_weight", self.rank_weight),
                ("rank_kind", self.rank_kind),
                ("rank_k", self.rank_k),
            )
            if v is not None
        }
        return replace(
            config, teacher=self.kind, alpha=self.alpha, temperature=self.temperature, **rank
        )


NO_KD = Distillation("none", 0.0, 1.0)
"""CE only."""


@dataclass(frozen=True)
class StudentInputs:
    """What the student reads of the items: text vectors ``[N, text_dim]``, id-embedding rows
    (-1: none), the items known at training time (bool ``[N]``: CE targets and negatives),
    and its configuration."""

    text_vecs: np.ndarray
    id_index: np.ndarray
    catalogue: np.ndarray
    config: StudentConfig


@dataclass(frozen=True)
class TrainedStudent:
    """The best student (by validation), on the CPU, and its per-epoch curve."""

    model: Student
    curve: list[dict[str, Any]]

    @property
    def val(self) -> float:
        """The best validation score (minus the lowest loss without validation)."""
        return max(r["val"] for r in self.curve)

    @property
    def epochs(self) -> int:
        return len(self.curve)


def train(
    data: TrainingExamples,
    inputs: StudentInputs,
    config: TrainConfig,
    *,
    kd: Distillation | None = None,
    targets: TeacherTargets | None = None,
    validate: Callable[[Student], float] | None = None,
    progress: bool = True,
    desc: str = "student",
    init: Student | None = None,
) -> TrainedStudent:
    """Train a student on ``data`` (:func:`~trainer.student.training.train_student`: early
    stopping on ``validate``, the best epoch kept; ``init``: warm start). ``kd`` sets the
    training's teacher (``None``: ``config`` as it is); ``targets`` are read only by a ``model``
    teacher and must be the ones ``data``'s ``kd_row`` points into."""
    conf = kd.config(config) if kd is not None else config
    logits = None
    if conf.teacher == "model" and targets is not None:
        if data.teacher_positions is None:
            raise ValueError("teacher targets given, but the examples have no teacher rows")
        logits = targets.logits
    model, curve = train_student(
        data.examples,
        text_vecs=inputs.text_vecs,
        id_index=inputs.id_index,
        catalogue=inputs.catalogue,
        student_config=inputs.config,
        config=conf,
        teacher_logits=logits,
        validate=validate,
        progress=progress,
        desc=desc,
        init=init,
    )
    return TrainedStudent(model, curve)
