"""The public training API: :func:`fit` (interactions + items -> a checkpoint in the model
store) and :func:`train_bootstrap` (MovieLens-100K, for the demo).

``fit`` holds out ``val_share`` of the users that have data (at least two events; by
seed) for early stopping (:func:`fit_users`), adapts the teacher (unless ``quick``),
distils the student (CE + KD) and writes a versioned, checksummed checkpoint
(:func:`coldstream.core.checkpoint.save_checkpoint`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coldstream.core.checkpoint import save_checkpoint
from coldstream.core.device import resolve_device
from coldstream.core.settings import DEFAULT_MODEL_STORE
from coldstream.core.student import StudentConfig
from trainer.features import (
    attach_kd_rows,
    split_users,
    teacher_features,
    teacher_positions,
    warm_sets,
)
from trainer.training import (
    Seq,
    TrainConfig,
    build_examples,
    prefix_positions,
    set_threads,
    student_scores,
    train_student,
)


@dataclass
class FitConfig:
    """What :func:`fit` does. ``quick`` skips teacher adaptation and KD (CE student on
    the teacher's item text vectors): a usable checkpoint in about a minute or two."""

    quick: bool = False
    student: dict[str, Any] = field(
        default_factory=lambda: {"dim": 64, "max_len": 30, "dropout": 0.2}
    )
    train: dict[str, Any] = field(default_factory=dict)
    teacher_path: str | None = None
    device: str = "auto"
    threads: int = 2
    val_share: float = 0.1
    seed: int = 0
    alpha: float = 1.0
    temperature: float = 2.0
    teacher_prefixes_per_user: int = 7
    version: int | None = None


def fit(
    interactions,
    items,
    config: FitConfig | dict | None = None,
    *,
    store_root: Path | str = DEFAULT_MODEL_STORE,
    progress: bool = True,
) -> Path:
    """Train a student on ``interactions`` (:class:`trainer.data.Interactions`) and
    ``items`` (:class:`trainer.data.Items`), write a checkpoint into ``store_root`` and
    return its path. 10% of the users with at least two events (by seed) are held out for
    early stopping; users with fewer events are not used. Raises ``ValueError`` when too few
    users have data to train and validate."""
    cfg = config if isinstance(config, FitConfig) else FitConfig(**(config or {}))
    return fit_and_save(interactions, items, cfg, Path(store_root), progress=progress)


def train_bootstrap(store_root: Path | str, *, quick: bool = True, progress: bool = False) -> Path:
    """Train on MovieLens-100K and write a checkpoint into ``store_root`` (used by the
    demo). ``quick=True``: CE student, no teacher adaptation (about 1-2 min on 2 CPUs)."""
    from trainer.data import load_movielens

    inter, items = load_movielens()
    return fit(inter, items, FitConfig(quick=quick), store_root=store_root, progress=progress)


MIN_EVENTS = 2
"""Events a user needs to train (one prefix and its next item) or to be validated (k=1)."""


def fit_users(seqs: Sequence[Seq], seed: int, val_share: float) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation users (rows of ``seqs``): the users with at least
    :data:`MIN_EVENTS` events, split by ``seed`` (:func:`trainer.features.split_users`; when
    every user has that many, exactly the split of all users). Users with fewer events,
    such as listed users absent from the interactions, are in neither."""
    eligible = np.flatnonzero(np.array([len(s[0]) for s in seqs], dtype=np.int64) >= MIN_EVENTS)
    tr, va, _ = split_users(len(eligible), seed, (1 - val_share, val_share, 0.0))
    train_u, val_u = eligible[tr], eligible[va]
    if not len(train_u) or not len(val_u):
        raise ValueError(
            f"too few users with data to train and validate: {len(eligible)} of {len(seqs)} users have "
            f"at least {MIN_EVENTS} events, which gives {len(train_u)} training and {len(val_u)} "
            f"validation users (val_share={val_share}); fit needs at least one of each"
        )
    return train_u, val_u


def config_dict(obj) -> dict:
    return asdict(obj)


def fit_and_save(inter, items, cfg: FitConfig, store_root: Path, *, progress: bool = True) -> Path:
    """Body of :func:`fit` (config already parsed)."""
    from trainer.adapt import HeadConfig, calibrate_temperature, fit_head
    from trainer.teacher import Teacher

    set_threads(cfg.threads)
    t0 = time.perf_counter()
    seq_map = inter.sequences()
    seqs = [
        seq_map.get(u, (np.zeros(0, np.int64), np.zeros(0, np.int64)))
        for u in range(len(inter.user_ids))
    ]
    n_items = len(items)
    train_u, val_u = fit_users(seqs, cfg.seed, cfg.val_share)
    none = np.zeros(n_items, dtype=bool)
    train_seqs = [seqs[u] for u in train_u]
    seen = np.zeros(n_items, dtype=bool)
    for s in train_seqs:
        seen[s[0]] = True
    # rows: items seen in training first (they get id embeddings), then the rest
    order = np.r_[np.flatnonzero(seen), np.flatnonzero(~seen)]
    id_index = np.full(n_items, -1, dtype=np.int64)
    id_index[order[: int(seen.sum())]] = np.arange(int(seen.sum()))

    teacher = Teacher(cfg.teacher_path, device=resolve_device(cfg.device))
    item_vecs = teacher.encode_items(items.texts, progress=progress)
    # cells no validation user is long enough for (k=5 needs 6 events) are left out
    val_sets = {k: es for k, es in warm_sets(seqs, val_u, none).items() if es.histories}
    # quick (bootstrap) mode: shorter prefixes and fewer epochs keep it within ~3 min on 2 CPUs
    quick = {"max_prefix": 20, "extra_per_user": 3, "epochs": 12} if cfg.quick else {}
    tc = TrainConfig(**{"seed": cfg.seed, **quick, **cfg.train})
    scfg = StudentConfig(n_items=int(seen.sum()), text_dim=teacher.dim, **cfg.student)

    def validate(model) -> float:
        vals = [
            es.metrics(
                student_scores(
                    model, torch.as_tensor(item_vecs), torch.as_tensor(id_index), es.histories
                )
            )["ndcg@10"].mean()
            for es in val_sets.values()
        ]
        return float(np.mean(vals))

    positions = prefix_positions(
        train_seqs, max_prefix=tc.max_prefix, extra_per_user=tc.extra_per_user, seed=cfg.seed
    )
    ex = build_examples(train_seqs, positions, scfg.max_len)
    teacher_logits = None
    info: dict = {"quick": cfg.quick}
    if not cfg.quick:
        tpos = teacher_positions(
            train_seqs,
            first=5,
            random_more=max(0, cfg.teacher_prefixes_per_user - 5),
            max_prefix=tc.max_prefix,
            seed=cfg.seed,
        )
        feats = teacher_features(
            teacher,
            item_vecs,
            items.texts,
            [train_seqs[u][0][:t] for u, t in tpos],
            progress=progress,
        )
        targets = [train_seqs[u][0][t : t + 10] for u, t in tpos]
        vfeats = {
            k: teacher_features(teacher, item_vecs, items.texts, [h[0] for h in es.histories])
            for k, es in val_sets.items()
        }

        def vhead(head) -> float:
            return float(
                np.mean(
                    [
                        es.metrics(head.score(vfeats[k], item_vecs))["ndcg@10"].mean()
                        for k, es in val_sets.items()
                    ]
                )
            )

        head, _ = fit_head(
            feats, targets, item_vecs, seen, config=HeadConfig(seed=cfg.seed), validate=vhead
        )
        vl = np.concatenate([head.score(vfeats[k], item_vecs) for k in val_sets])
        vt = np.concatenate([[g[0] for g in es.gts] for es in val_sets.values()])
        tau = calibrate_temperature(vl, vt)
        teacher_logits = torch.as_tensor(head.score(feats, item_vecs) / tau, dtype=torch.float32)
        attach_kd_rows(ex, positions, tpos)
        tc.teacher, tc.alpha, tc.temperature = "model", cfg.alpha, cfg.temperature
        info.update(
            {
                "teacher_head_val_ndcg10": vhead(head),
                "teacher_tau": tau,
                "alpha": cfg.alpha,
                "temperature": cfg.temperature,
                "teacher_prefixes": len(tpos),
            }
        )
    model, curve = train_student(
        ex,
        text_vecs=item_vecs,
        id_index=id_index,
        catalogue=seen,
        student_config=scfg,
        config=tc,
        teacher_logits=teacher_logits,
        validate=validate,
        progress=progress,
    )
    metrics = {
        "val_ndcg@10_mean_k135": max(r["val"] for r in curve),
        "epochs": len(curve),
        "train_seconds": round(time.perf_counter() - t0, 1),
        **info,
    }
    return save_checkpoint(
        store_root,
        model=model,
        item_ids=[items.ids[i] for i in order],
        item_text_vecs=item_vecs[order],
        item_titles=[items.titles[i] for i in order],
        metrics=metrics,
        teacher=teacher.describe(),
        version=cfg.version,
    )
