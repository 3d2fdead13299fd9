"""One re-distillation cycle of the trainer service, without a broker.

:func:`redistill` warm-starts from the current student (:class:`~coldstream.core.checkpoint.Checkpoint`)
and trains on the buffer's older part: CE on the next item + ``alpha * T^2 * KL`` to the
teacher's scores on a budget of buffer prefixes (:mod:`trainer.student.distill`), through the
stages of :mod:`trainer.student.pipeline` that ``fit`` and the evaluation run too. New items join
the item table with their text only (:func:`item_table`). The candidate is gated
(:mod:`trainer.service.gate`) against the current student on the buffer's latest slice, never
trained on; :func:`publish_checkpoint` writes a promoted one (and the teacher head it was
distilled from, :mod:`trainer.teacher.heads`) into the model store.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coldstream.core.checkpoint import Checkpoint, save_checkpoint
from coldstream.core.signing import Signer
from trainer.service.buffer import EventBuffer
from trainer.service.gate import GateResult, gate
from trainer.student import pipeline
from trainer.student.training import (
    Seq,
    TrainConfig,
    encode_users,
    student_item_vectors,
)
from trainer.teacher.heads import TeacherScorer, save_teacher_head
from trainer.teacher.topk import TopK, inner_product_topk, scorer_topk

Scorer = Callable[[list[np.ndarray]], np.ndarray]
"""Teacher logits ``[B, N]`` (already divided by the teacher temperature) for histories
given as rows of the cycle's item table."""

NewItems = Mapping[str, tuple[np.ndarray, str]]
"""Items the current student does not know: ``{item_id: (teacher text vector, title)}``."""


def cycle_train_config(**overrides: Any) -> TrainConfig:
    """The student training of one cycle: short warm-started runs on the buffer (4 epochs,
    lr 1e-3, batch 256, patience 2, prefixes up to 20 plus 2 longer per user, id dropout
    0.25, at most 600 s, ``auto`` device). ``overrides`` replace fields."""
    base: dict[str, Any] = {
        "epochs": 4,
        "batch_size": 256,
        "lr": 1e-3,
        "patience": 2,
        "seed": 0,
        "max_prefix": 20,
        "extra_per_user": 2,
        "id_dropout": 0.25,
        "max_seconds": 600.0,
        "device": "auto",
    }
    return TrainConfig(**{**base, **overrides})


@dataclass
class CycleConfig:
    holdout_share: float = 0.2
    """Latest share of the buffer held out for the gate (never trained on)."""
    margin: float = 0.01
    """The gate's margin (:func:`trainer.service.gate.gate`)."""
    teacher_prefixes: int = 1024
    """Training prefixes scored by the teacher (KD targets; 0: no KD)."""
    alpha: float = 1.0
    """KD weight (0: no KD)."""
    temperature: float = 2.0
    """KD temperature."""
    train: TrainConfig = field(default_factory=cycle_train_config)
    """The student's training (:func:`cycle_train_config`). Its ``seed`` also draws the prefixes
    and the teacher's budget; its KD fields are set by the cycle (:meth:`train_config`)."""

    def train_config(self, *, kd: bool) -> TrainConfig:
        """What the candidate trains with: :attr:`train`, with the cycle's KD (``kd``: teacher
        logits given) or none."""
        return self.distillation(kd=kd).config(self.train)

    def distillation(self, *, kd: bool) -> pipeline.Distillation:
        """The candidate's KD: the cycle's (``kd``: teacher logits given) or none."""
        if kd:
            return pipeline.Distillation("model", self.alpha, self.temperature)
        return pipeline.NO_KD


@dataclass
class CycleResult:
    candidate: torch.nn.Module
    gate: GateResult
    item_ids: list[str]
    titles: list[str]
    text_vecs: np.ndarray
    metrics: dict[str, Any]
    seconds: float
    head: Any = None
    tau: float = 1.0


@dataclass
class ItemTable:
    ids: list[str]
    titles: list[str]
    text_vecs: np.ndarray
    id_index: np.ndarray
    row_of: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.row_of = {i: r for r, i in enumerate(self.ids)}

    def rows(self, events: Sequence[tuple[str, int]]) -> Seq:
        """``(rows, event types)`` of the events whose item is in the table."""
        known = [(self.row_of[i], t) for i, t in events if i in self.row_of]
        return (
            np.array([r for r, _ in known], dtype=np.int64),
            np.array([t for _, t in known], dtype=np.int64),
        )


def item_table(ck: Checkpoint, new_items: NewItems) -> ItemTable:
    """The checkpoint's rows, then new items (text only, no id embedding)."""
    extra = [i for i in new_items if i not in ck.index_of]
    ids = list(ck.item_ids) + extra
    titles = list(ck.item_titles) + [new_items[i][1] for i in extra]
    vecs = np.vstack([ck.item_text_vecs] + [new_items[i][0][None, :] for i in extra]).astype(
        np.float32
    )
    id_index = np.where(np.arange(len(ids)) < ck.config.n_items, np.arange(len(ids)), -1)
    return ItemTable(ids, titles, vecs, id_index.astype(np.int64))


@dataclass
class CycleData:
    """The buffer as rows of the cycle's item table: training sequences, the gate's holdout
    and the training prefixes ``(user, t)``."""

    table: ItemTable
    seqs: list[Seq]
    holdout: list[Seq]
    truths: list[np.ndarray]
    positions: list[tuple[int, int]]


def cycle_data(
    ck: Checkpoint, buffer: EventBuffer, new_items: NewItems, config: CycleConfig
) -> CycleData:
    """Split the buffer (older part: training sessions with two known events or more; latest
    slice: the holdout, histories cut to the student's ``max_len``)."""
    table = item_table(ck, new_items)
    train_s, holdout = buffer.split(config.holdout_share)
    seqs = [s for s in (table.rows(ev) for ev in train_s.values()) if len(s[0]) >= 2]
    if not seqs:
        raise ValueError("buffer has no training session with two known events")
    hist, truths = [], []
    for h, t in zip(holdout.histories, holdout.truths, strict=True):
        hs = table.rows(h)
        tr = np.array([table.row_of[i] for i in t if i in table.row_of], dtype=np.int64)
        if len(hs[0]) and len(tr):
            hist.append((hs[0][-ck.config.max_len :], hs[1][-ck.config.max_len :]))
            truths.append(tr)
    positions = pipeline.as_pairs(pipeline.prefixes(seqs, pipeline.PrefixSpec.of(config.train)))
    return CycleData(table, seqs, hist, truths, positions)


@dataclass(frozen=True)
class HistoryScores:
    """A cycle's scorer on the teacher's prefixes (histories as rows of the item table), as the
    pipeline reads it (:class:`trainer.student.pipeline.TeacherScores`): dense logits, or the
    top-K in blocks (:func:`~trainer.teacher.topk.scorer_topk`)."""

    scorer: Any
    histories: list[np.ndarray]
    feats: np.ndarray | None
    n_items: int

    def dense(self) -> np.ndarray:
        if self.feats is not None:
            return self.scorer(self.histories, self.feats)
        return self.scorer(self.histories)

    def topk(self, k: int, temperatures: tuple[float, ...]) -> TopK:
        return scorer_topk(
            self.scorer,
            self.histories,
            k,
            feats=self.feats,
            n_items=self.n_items,
            temperatures=temperatures,
        )


def cycle_targets(scorer: Scorer, data: CycleData, config: CycleConfig) -> pipeline.TeacherTargets:
    """Teacher targets on a random budget of the training prefixes (:attr:`CycleConfig.teacher_prefixes`,
    drawn by the training seed; ``positions``: those prefixes as ``(user, t)`` pairs): dense
    logits ``[P, N]`` on the full-softmax path, the top-``teacher_topk`` (:class:`TopK`, scored in
    blocks: never ``[P, N]``) on the sampled one (``config.train.mode(N)``;
    :func:`trainer.student.pipeline.teacher_targets`). A
    :class:`~trainer.teacher.heads.TeacherScorer` without a head fits one on them first."""
    rng = np.random.default_rng(config.train.seed)
    positions, seqs = data.positions, data.seqs
    pick = np.sort(
        rng.choice(len(positions), size=min(config.teacher_prefixes, len(positions)), replace=False)
    )
    tpos = [positions[i] for i in pick]
    histories = [seqs[u][0][:t] for u, t in tpos]
    n_items = len(data.table.ids)
    feats = None
    if isinstance(scorer, TeacherScorer):
        feats = scorer.features(histories)
        if scorer.head is None:
            scorer.fit_head(histories, [seqs[u][0][t : t + 10] for u, t in tpos], feats)
    return pipeline.teacher_targets(
        HistoryScores(scorer, histories, feats, n_items),
        tpos,
        pipeline.TargetSpec.of(config.train, n_items, config.temperature),
    )


def teacher_targets(
    scorer: Scorer, data: CycleData, config: CycleConfig
) -> tuple[torch.Tensor | TopK, list[tuple[int, int]]]:
    """:func:`cycle_targets` as ``(targets, prefixes)``."""
    targets = cycle_targets(scorer, data, config)
    return targets.logits, list(targets.positions)


def redistill(
    ck: Checkpoint,
    buffer: EventBuffer,
    *,
    new_items: NewItems,
    scorer: Scorer | None,
    config: CycleConfig,
) -> CycleResult:
    """Warm-start from ``ck.model``, distil on the buffer, gate on its latest slice."""
    cfg = config
    t0 = time.perf_counter()
    data = cycle_data(ck, buffer, new_items, cfg)
    table = data.table
    targets = None
    info: dict[str, Any] = {}
    if scorer is not None and cfg.teacher_prefixes > 0 and cfg.alpha > 0:
        targets = cycle_targets(scorer, data, cfg)
        info["teacher_prefixes"] = len(targets.positions)
    examples = pipeline.examples(
        data.seqs,
        data.positions,
        max_len=ck.config.max_len,
        teacher_positions=None if targets is None else targets.positions,
    )
    trained = pipeline.train(
        examples,
        pipeline.StudentInputs(
            table.text_vecs, table.id_index, np.ones(len(table.ids), bool), ck.config
        ),
        cfg.train,
        kd=cfg.distillation(kd=targets is not None),
        targets=targets,
        progress=False,
        desc="re-distil",
        init=ck.model,
    )
    candidate, curve = trained.model, trained.curve
    current = ck.model.cpu().eval()
    g = gate(
        candidate,
        current,
        text_vecs=table.text_vecs,
        id_index=table.id_index,
        histories=data.holdout,
        truths=data.truths,
        margin=cfg.margin,
    )
    if targets is not None and data.holdout:
        info["topk_agreement@10"] = topk_agreement(candidate, scorer, table, data.holdout)
    metrics = {
        **g.as_dict(),
        **training_metrics(curve),
        "buffer_events": len(buffer),
        "train_users": len(data.seqs),
        "new_items": len(table.ids) - len(ck.item_ids),
        "parent_version": ck.version,
        "popular_items": popular_items(buffer, table),
        **info,
    }
    return CycleResult(
        candidate,
        g,
        table.ids,
        table.titles,
        table.text_vecs,
        metrics,
        time.perf_counter() - t0,
        head=getattr(scorer, "head", None),
        tau=getattr(scorer, "tau", 1.0),
    )


def training_metrics(curve: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The losses of the best epoch (lowest loss) and the epochs run."""
    best = min(curve, key=lambda r: r["loss"])
    return {
        "distill_loss": round(best["kd"], 5),
        "ce_loss": round(best["ce"], 5),
        "epochs": len(curve),
    }


def popular_items(buffer: EventBuffer, table: ItemTable, n: int = 200) -> list[str]:
    """The buffer's ``n`` most frequent items that are in the table, most frequent first."""
    return [
        i for i, _ in Counter(e.item for e in buffer.events()).most_common(n) if i in table.row_of
    ]


def topk_agreement(
    student: torch.nn.Module,
    scorer: Any,
    table: ItemTable,
    histories: list[tuple[np.ndarray, np.ndarray]],
    k: int = 10,
    limit: int = 256,
) -> float:
    """Mean share of the teacher's top-``k`` in the student's top-``k`` (revealed items
    excluded), both found in blocks (no ``[users x items]`` matrix)."""
    hs = histories[:limit]
    if not hs:
        return 0.0
    extra = max(len(h[0]) for h in hs)
    n = len(table.ids)
    vecs = student_item_vectors(student, table.text_vecs, table.id_index)
    users = encode_users(student, vecs, hs)
    s_top = inner_product_topk(users, vecs, min(n, k + extra)).ids.numpy()
    t_top = scorer_topk(scorer, [h[0] for h in hs], min(n, k + extra), n_items=n).ids.numpy()
    agree = []
    for b, h in enumerate(hs):
        seen = set(np.asarray(h[0]).tolist())
        s_k = [i for i in s_top[b] if i not in seen][:k]
        t_k = [i for i in t_top[b] if i not in seen][:k]
        agree.append(len(set(s_k) & set(t_k)) / k)
    return round(float(np.mean(agree)), 5)


def publish_checkpoint(
    store_root: Path | str,
    result: CycleResult,
    *,
    teacher: dict[str, Any],
    signer: Signer | None = None,
) -> Path:
    """Write the promoted candidate (and the teacher head it was distilled from), signed by
    ``signer`` (the trainer's private key) when given. Moving the store's pointer to it and
    announcing it are the service's (:meth:`trainer.service.loop.TrainerService.announce`)."""
    path = save_checkpoint(
        store_root,
        model=result.candidate,
        item_ids=result.item_ids,
        item_text_vecs=result.text_vecs,
        item_titles=result.titles,
        metrics=result.metrics,
        teacher=teacher,
        signer=signer,
    )
    if result.head is not None:
        save_teacher_head(store_root, int(path.name[1:]), result.head, result.tau)
    return path
