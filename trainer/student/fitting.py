"""The public training API: :func:`fit` (interactions + items -> a checkpoint in the model
store) and :func:`train_bootstrap` (MovieLens-100K, for the demo).

``fit`` holds out ``val_share`` of the users that have data (at least two events; by
seed) for early stopping (:func:`fit_users`), adapts the teacher (unless ``quick``),
distils the student (CE + KD; the stages of :mod:`trainer.student.pipeline`, shared with the
trainer service and the evaluation) and writes a versioned, checksummed checkpoint
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
from trainer.student import pipeline
from trainer.student.features import (
    split_users,
    subsample_positions,
    teacher_position_arrays,
    warm_sets,
)
from trainer.student.training import (
    Seq,
    TrainConfig,
    set_threads,
    student_scores,
)
from trainer.teacher.encoder import teacher_features


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
    item_cache: str | None = None
    """Folder of the on-disk teacher item-vector cache (:mod:`trainer.teacher.vector_cache`; ``None``:
    in memory): a second ``fit`` on the same catalogue encodes no item."""
    teacher_prefixes_max: int | None = 20_000
    """At most this many teacher prefixes (a uniform sample of the per-user budget): the
    encoder's cost grows with it, not with the number of users."""
    val_users_max: int | None = 2_000
    """At most this many validation users per cell (early stopping costs ``users x items``)."""
    head_items: int = 8_192
    """Sampled path (large catalogues): the teacher head is fitted and validated on this many
    items (half the most frequent training targets, half uniform from the rest), then scores
    the whole catalogue in blocks for its top-K."""
    head_val_users: int = 500
    """Sampled path: validation users per cell for the head's early stopping."""
    head_epochs: int | None = None
    """Most epochs of the teacher head (``None``: :class:`trainer.teacher.adapt.HeadConfig`'s)."""


def fit(
    interactions,
    items,
    config: FitConfig | dict | None = None,
    *,
    store_root: Path | str = DEFAULT_MODEL_STORE,
    progress: bool = True,
    teacher: Any = None,
) -> Path:
    """Train a student on ``interactions`` (:class:`trainer.data.Interactions`) and
    ``items`` (:class:`trainer.data.Items`), write a checkpoint into ``store_root`` and
    return its path. 10% of the users with at least two events (by seed) are held out for
    early stopping; users with fewer events are not used. Raises ``ValueError`` when too few
    users have data to train and validate. ``teacher``: an encoder already built (default:
    :class:`trainer.teacher.encoder.Teacher` from ``teacher_path``, with ``item_cache``).

    Large catalogues (``TrainConfig.mode``: above 20k items by default) take the sampled path:
    sampled softmax, the teacher's top-K per prefix (scored in blocks) and validation in
    chunks, so no step holds a ``[rows x items]`` matrix."""
    cfg = config if isinstance(config, FitConfig) else FitConfig(**(config or {}))
    return fit_and_save(
        interactions, items, cfg, Path(store_root), progress=progress, teacher=teacher
    )


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
    :data:`MIN_EVENTS` events, split by ``seed`` (:func:`trainer.student.features.split_users`; when
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


POPULAR_ITEMS = 200
"""Items in a checkpoint's ``popular_items`` (the serving fallback before any traffic)."""


def popular_item_ids(seqs: Sequence[Seq], ids: Sequence[str], n: int = POPULAR_ITEMS) -> list[str]:
    """The ``n`` most frequent items of the training users' sequences, most frequent first
    (ties: catalogue order): a checkpoint's ``popular_items`` (``metrics.json``)."""
    counts = np.zeros(len(ids), dtype=np.int64)
    for items_, _ in seqs:
        np.add.at(counts, items_, 1)
    order = np.argsort(-counts, kind="stable")
    return [ids[i] for i in order[:n] if counts[i] > 0]


def remap_rows(rows: np.ndarray, catalogue: np.ndarray) -> np.ndarray:
    """``rows`` as positions in the sorted item rows ``catalogue``; rows outside it dropped."""
    rows = np.asarray(rows, dtype=np.int64)
    pos = np.searchsorted(catalogue, rows).clip(max=max(len(catalogue) - 1, 0))
    return pos[catalogue[pos] == rows] if len(catalogue) else rows[:0]


def restrict_set(es, catalogue: np.ndarray, users: int | None = None):
    """An :class:`~trainer.student.features.EvalSet` ranked among ``catalogue`` only (sorted item rows;
    revealed and truth items outside it dropped), of its first ``users`` users (all: ``None``)."""
    from trainer.student.features import EvalSet

    hs = []
    for rows, types in es.histories[:users]:
        inside = np.isin(rows, catalogue)
        hs.append((remap_rows(rows[inside], catalogue), np.asarray(types)[inside]))
    cand = None if es.candidates is None else np.asarray(es.candidates)[catalogue]
    gts = [remap_rows(g, catalogue) for g in es.gts[: len(hs)]]
    return EvalSet(es.name, hs, gts, cand, es.users[: len(hs)])


def config_dict(obj) -> dict:
    return asdict(obj)


def head_catalogue(targets: Sequence[np.ndarray], n_items: int, size: int, seed: int) -> np.ndarray:
    """Sorted item rows the teacher head is fitted on at catalogue scale: the ``size // 2``
    most frequent training targets, then uniform draws from the other items (so the head's
    text prior also sees unpopular items as negatives)."""
    if size >= n_items:
        return np.arange(n_items)
    counts = np.bincount(
        np.concatenate([np.asarray(t, np.int64) for t in targets] or [[]]).astype(np.int64),
        minlength=n_items,
    )
    top = np.argsort(-counts, kind="stable")[: size // 2]
    top = top[counts[top] > 0]
    rest = np.setdiff1d(np.arange(n_items), top, assume_unique=False)
    rng = np.random.default_rng(seed + 31)
    more = rng.choice(rest, size=min(size - len(top), len(rest)), replace=False)
    return np.sort(np.r_[top, more])


def fit_and_save(
    inter, items, cfg: FitConfig, store_root: Path, *, progress: bool = True, teacher: Any = None
) -> Path:
    """Body of :func:`fit` (config already parsed)."""
    from trainer.teacher.adapt import HeadConfig, calibrate_temperature, fit_head

    set_threads(cfg.threads)
    t0 = time.perf_counter()
    stages: dict[str, float] = {}
    last = [t0]

    def lap(name: str) -> None:
        now = time.perf_counter()
        stages[name] = round(now - last[0], 1)
        last[0] = now

    seq_map = inter.sequences()
    seqs = [
        seq_map.get(u, (np.zeros(0, np.int64), np.zeros(0, np.int64)))
        for u in range(len(inter.user_ids))
    ]
    del seq_map
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

    if teacher is None:
        from trainer.teacher.encoder import Teacher

        teacher = Teacher(
            cfg.teacher_path, device=resolve_device(cfg.device), item_cache=cfg.item_cache
        )
    item_vecs = teacher.encode_items(items.texts, progress=progress)
    lap("item_vectors")
    if cfg.val_users_max is not None and len(val_u) > cfg.val_users_max:
        val_u = np.sort(
            np.random.default_rng(cfg.seed + 37).choice(val_u, cfg.val_users_max, replace=False)
        )
    # cells no validation user is long enough for (k=5 needs 6 events) are left out
    val_sets = {k: es for k, es in warm_sets(seqs, val_u, none).items() if es.histories}
    del seqs
    # quick (bootstrap) mode: shorter prefixes and fewer epochs keep it within ~3 min on 2 CPUs
    quick = {"max_prefix": 20, "extra_per_user": 3, "epochs": 12} if cfg.quick else {}
    tc = TrainConfig(**{"seed": cfg.seed, **quick, **cfg.train})
    sampled = tc.mode(n_items) == "sampled"
    scfg = StudentConfig(n_items=int(seen.sum()), text_dim=teacher.dim, **cfg.student)

    def validate(model) -> float:
        if sampled:  # users in chunks, top-K only: no [users x items] matrix
            from trainer.student.features import student_metrics
            from trainer.student.training import student_item_vectors

            table = student_item_vectors(model, item_vecs, id_index)
            return float(
                np.mean(
                    [
                        student_metrics(model, item_vecs, id_index, es, table=table)[
                            "ndcg@10"
                        ].mean()
                        for es in val_sets.values()
                    ]
                )
            )
        vals = [
            es.metrics(
                student_scores(
                    model, torch.as_tensor(item_vecs), torch.as_tensor(id_index), es.histories
                )
            )["ndcg@10"].mean()
            for es in val_sets.values()
        ]
        return float(np.mean(vals))

    positions = pipeline.prefixes(train_seqs, pipeline.PrefixSpec.of(tc, seed=cfg.seed))
    targets: pipeline.TeacherTargets | None = None
    kd: pipeline.Distillation | None = None  # quick: the training configuration as it is
    info: dict = {"quick": cfg.quick, "softmax": "sampled" if sampled else "full"}
    if not cfg.quick:
        tpos = subsample_positions(
            teacher_position_arrays(
                train_seqs,
                first=5,
                random_more=max(0, cfg.teacher_prefixes_per_user - 5),
                max_prefix=tc.max_prefix,
                seed=cfg.seed,
            ),
            cfg.teacher_prefixes_max,
            cfg.seed,
        )
        pairs = list(zip(tpos[0].tolist(), tpos[1].tolist(), strict=True))
        feats = teacher_features(
            teacher,
            item_vecs,
            items.texts,
            [train_seqs[u][0][:t] for u, t in pairs],
            progress=progress,
        )
        targets = [train_seqs[u][0][t : t + 10] for u, t in pairs]
        vfeats = {
            k: teacher_features(teacher, item_vecs, items.texts, [h[0] for h in es.histories])
            for k, es in val_sets.items()
        }
        lap("teacher_features")
        # the head's catalogue: every item (full path), a sample of them (sampled path)
        cat_rows = head_catalogue(targets, n_items, cfg.head_items, cfg.seed) if sampled else None
        head_vecs = item_vecs if cat_rows is None else item_vecs[cat_rows]
        head_sets, head_targets, head_seen = val_sets, targets, seen
        if cat_rows is not None:
            head_sets = {
                k: restrict_set(es, cat_rows, cfg.head_val_users) for k, es in val_sets.items()
            }
            head_targets = [remap_rows(t, cat_rows) for t in targets]
            head_seen = seen[cat_rows]

        def vhead(head) -> float:
            return float(
                np.mean(
                    [
                        es.metrics(head.score(vfeats[k][: len(es.gts)], head_vecs))[
                            "ndcg@10"
                        ].mean()
                        for k, es in head_sets.items()
                    ]
                )
            )

        head, _ = fit_head(
            feats,
            head_targets,
            head_vecs,
            head_seen,
            config=HeadConfig(
                seed=cfg.seed, **({} if cfg.head_epochs is None else {"epochs": cfg.head_epochs})
            ),
            validate=vhead,
        )
        vl, vt = [], []
        for k, es in head_sets.items():
            keep = [i for i, g in enumerate(es.gts) if len(g)]  # (all, on the full path)
            vl.append(head.score(vfeats[k][keep], head_vecs))
            vt.append([es.gts[i][0] for i in keep])
        tau = calibrate_temperature(np.concatenate(vl), np.concatenate(vt))
        lap("teacher_head")
        # sampled: the top-K of the whole catalogue, in blocks (never [prefixes x items])
        targets = pipeline.teacher_targets(
            pipeline.HeadScores(head, feats, item_vecs, tau),
            tpos,
            pipeline.TargetSpec.of(tc, n_items, cfg.temperature),
        )
        lap("teacher_targets")
        kd = pipeline.Distillation("model", cfg.alpha, cfg.temperature)
        info.update(
            {
                "teacher_head_val_ndcg10": vhead(head),
                "teacher_tau": tau,
                "alpha": cfg.alpha,
                "temperature": cfg.temperature,
                "teacher_prefixes": len(tpos[0]),
            }
        )
        if cat_rows is not None:
            info["teacher_head_items"] = len(cat_rows)
    data = pipeline.examples(
        train_seqs,
        positions,
        max_len=scfg.max_len,
        teacher_positions=None if targets is None else targets.positions,
    )
    trained = pipeline.train(
        data,
        pipeline.StudentInputs(item_vecs, id_index, seen, scfg),
        tc,
        kd=kd,
        targets=targets,
        validate=validate,
        progress=progress,
    )
    model, curve = trained.model, trained.curve
    lap("student")
    metrics = {
        "val_ndcg@10_mean_k135": trained.val,
        "epochs": trained.epochs,
        "epoch_train_seconds": [r["train_seconds"] for r in curve],
        "val_curve": [round(r["val"], 5) for r in curve],
        "stage_seconds": stages,
        "train_seconds": round(time.perf_counter() - t0, 1),
        "popular_items": popular_item_ids(train_seqs, items.ids),
        **info,
    }
    del data, targets, trained
    item_vecs = item_vecs[order]  # (rebinding frees the training copy at catalogue scale)
    return save_checkpoint(
        store_root,
        model=model,
        item_ids=[items.ids[i] for i in order],
        item_text_vecs=item_vecs,
        item_titles=[items.titles[i] for i in order],
        metrics=metrics,
        teacher=teacher.describe(),
        version=cfg.version,
    )
