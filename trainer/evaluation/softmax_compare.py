"""The catalogue-scale losses against the exact ones, on MovieLens-100K: is the sampled /
top-K path within noise of the full-softmax path?

One split, made exactly as ``coldstream evaluate`` makes it (:func:`split`: users 80/10/10
and 10% cold items by the same seed), one adapted teacher (frozen MiniLM + the trained head
of :mod:`trainer.teacher.adapt`, temperature calibrated on validation users), and four students
trained on the same examples with the same seeds:

* ``ce_full`` / ``ce_sampled``: cross-entropy by the full softmax / by sampled softmax with
  logQ correction over ``negatives`` uniform items plus the batch's targets;
* ``kd_full`` / ``kd_sampled``: plus ``alpha * T^2 * KL`` to the teacher: over the whole
  catalogue from dense teacher logits / over the teacher's top-``teacher_topk`` (found in
  blocks, :func:`trainer.teacher.topk.head_topk`) plus the same sampled negatives, which the
  teacher head scores too. ``alpha, T`` are chosen on validation users from ``kd_grid``, for
  each path separately;
* ``kd_sampled_tail`` / ``kd_sampled_renorm`` (``ablations``): the teacher's mass outside
  its top-K as one bucket / the teacher renormalised over its top-K, chosen the same way.

The defaults are deliberately small against MovieLens' 1,682 items (64 uniform negatives,
the teacher's top 20): the approximation is stressed, not flattered. Test users are scored
once: NDCG@10 per cell (k = 1, 3, 5 and the cold items) and the paired bootstrap of
sampled - full per cell. Used by ``coldstream bench train-scale --part compare``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from coldstream.core.student import Student, StudentConfig
from trainer.ranking import paired_bootstrap, summarize
from trainer.student.features import (
    EvalSet,
    attach_kd_rows,
    cold_sets,
    drop_items,
    pick_cold_items,
    split_users,
    teacher_positions,
    warm_sets,
)
from trainer.student.training import (
    TrainConfig,
    build_examples,
    prefix_positions,
    set_threads,
    student_scores,
    train_student,
)
from trainer.teacher.encoder import teacher_features
from trainer.teacher.topk import head_topk

CELLS = ("k=1", "k=3", "k=5", "cold_items")
"""The reported cells (``cold_items``: the held-out items ranked among themselves)."""
STUDENTS = ("ce_full", "ce_sampled", "kd_full", "kd_sampled")


@dataclass
class CompareConfig:
    seed: int = 0
    cold_share: float = 0.1
    teacher_path: str | None = None
    item_cache: str | None = None
    """On-disk cache of the teacher's item vectors (and, beside them, of history texts)."""
    threads: int = 2
    student: dict[str, Any] = field(
        default_factory=lambda: {"dim": 64, "max_len": 20, "dropout": 0.2}
    )
    train: dict[str, Any] = field(default_factory=lambda: {"max_prefix": 20, "extra_per_user": 3})
    """Overrides of :class:`TrainConfig` (``coldstream evaluate``'s)."""
    teacher_first: int = 5
    teacher_random_more: int = 3
    kd_grid: list[tuple[float, float]] = field(default_factory=lambda: [(1.0, 1.0), (2.0, 2.0)])
    negatives: int = 64
    teacher_topk: int = 20
    ablations: tuple[str, ...] = ("tail", "renorm")
    """Also train ``kd_sampled_<a>`` for each: the sampled KD student with
    ``TrainConfig.kd_outside=a`` (``kd_sampled`` itself scores the negatives with the teacher
    head), alpha and T chosen the same way."""
    n_boot: int = 2000
    progress: bool = True


@dataclass
class Split:
    """The data of :func:`split`."""

    items: Any
    seqs: list
    train_seqs: list
    cold: np.ndarray
    id_index: np.ndarray
    sets: dict[str, dict[str, EvalSet]]


def split(inter, items, *, seed: int, cold_share: float) -> Split:
    """Users 80/10/10 and cold items by ``seed``: the split of ``coldstream evaluate``."""
    smap = inter.sequences()
    seqs = [smap[u] for u in range(len(inter.user_ids))]
    train_u, val_u, test_u = split_users(len(seqs), seed)
    cold = pick_cold_items(len(items), cold_share, seed)
    train_seqs = [drop_items(seqs[u], cold) for u in train_u]
    id_index = np.full(len(items), -1, dtype=np.int64)
    id_index[~cold] = np.arange(int((~cold).sum()))
    sets = {
        part: {**warm_sets(seqs, users, cold), **cold_sets(seqs, users, cold)}
        for part, users in (("val", val_u), ("test", test_u))
    }
    return Split(items, seqs, train_seqs, cold, id_index, sets)


class CachedHistories:
    """``encode(texts)`` of a teacher through an on-disk text cache (history texts repeat
    across runs); everything else is the teacher's."""

    def __init__(self, teacher: Any, folder: str | None) -> None:
        self.teacher = teacher
        self.dim = teacher.dim
        self.cache = None
        if folder is not None:
            from trainer.teacher.vector_cache import ItemVectorCache, folder_fingerprint

            key = f"histories-{teacher.path.name}-{folder_fingerprint(teacher.path, teacher.max_tokens)}"
            self.cache = ItemVectorCache(folder, key, teacher.dim)

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        if self.cache is None:
            return self.teacher.encode(texts, progress=progress)
        return self.cache.encode(texts, lambda m: self.teacher.encode(m, progress=progress))


def _val_score(cells: dict[str, dict[str, np.ndarray]]) -> float:
    return float(np.mean([cells[c]["ndcg@10"].mean() for c in CELLS]))


def compare(
    cfg: CompareConfig,
    *,
    data: tuple[Any, Any] | None = None,
    teacher: Any = None,
    keep: dict[str, dict[str, np.ndarray]] | None = None,
) -> dict:
    """Run the comparison on the split of ``cfg.seed`` (module doc); returns the report
    (``keep``: filled with each student's per-user test NDCG@10 per cell)."""
    from trainer.data import load_movielens
    from trainer.teacher.adapt import HeadConfig, calibrate_temperature, fit_head

    set_threads(cfg.threads)
    t_start = time.perf_counter()
    stages: dict[str, float] = {}

    def stamp(name: str, t: float) -> None:
        stages[name] = round(time.perf_counter() - t, 1)
        if cfg.progress:
            print(f"[compare] {name}: {stages[name]} s", flush=True)

    t = time.perf_counter()
    inter, items = data if data is not None else load_movielens()
    d = split(inter, items, seed=cfg.seed, cold_share=cfg.cold_share)
    warm = ~d.cold
    if teacher is None:
        from trainer.teacher.encoder import Teacher

        teacher = Teacher(cfg.teacher_path, device="cpu", item_cache=cfg.item_cache)
    item_vecs = teacher.encode_items(items.texts, progress=cfg.progress)
    hist = CachedHistories(teacher, cfg.item_cache)
    stamp("data and item vectors", t)

    t = time.perf_counter()
    tc = TrainConfig(**{"seed": cfg.seed, **cfg.train})
    tpos = teacher_positions(
        d.train_seqs,
        first=cfg.teacher_first,
        random_more=cfg.teacher_random_more,
        max_prefix=tc.max_prefix,
        seed=cfg.seed,
    )
    tfeats = teacher_features(
        hist,
        item_vecs,
        items.texts,
        [d.train_seqs[u][0][:t_] for u, t_ in tpos],
        progress=cfg.progress,
    )
    vfeats = {
        c: teacher_features(hist, item_vecs, items.texts, [h[0] for h in es.histories])
        for c, es in d.sets["val"].items()
        if c in CELLS
    }
    stamp(f"teacher features ({len(tpos)} prefixes)", t)

    t = time.perf_counter()
    val = d.sets["val"]
    head, _ = fit_head(
        tfeats,
        [d.train_seqs[u][0][t_ : t_ + 10] for u, t_ in tpos],
        item_vecs,
        warm,
        config=HeadConfig(seed=cfg.seed),
        validate=lambda h: _val_score(
            {c: val[c].metrics(h.score(vfeats[c], item_vecs)) for c in CELLS}
        ),
    )
    vl, vt = [], []
    for c in ("k=1", "k=3", "k=5"):
        s = head.score(vfeats[c], item_vecs)
        s[:, d.cold] = -np.inf
        for b, h in enumerate(val[c].histories):
            s[b, h[0]] = -np.inf
        vl.append(s)
        vt.append([g[0] for g in val[c].gts])
    tau = calibrate_temperature(np.concatenate(vl), np.concatenate(vt))
    dense = torch.as_tensor(head.score(tfeats, item_vecs) / tau, dtype=torch.float32)
    top = head_topk(
        head, tfeats, item_vecs, cfg.teacher_topk, tau=tau, temperatures=[t for _, t in cfg.kd_grid]
    )
    mass = float(torch.softmax(dense, 1).gather(1, top.ids).sum(1).mean())
    stamp("teacher head, temperature, top-K", t)

    positions = prefix_positions(
        d.train_seqs, max_prefix=tc.max_prefix, extra_per_user=tc.extra_per_user, seed=cfg.seed
    )
    scfg = StudentConfig(n_items=int(warm.sum()), text_dim=teacher.dim, **cfg.student)
    ex = build_examples(d.train_seqs, positions, scfg.max_len)
    attach_kd_rows(ex, positions, tpos)
    text_t, ids_t = torch.as_tensor(item_vecs), torch.as_tensor(d.id_index)

    def cells(model: Student, part: str) -> dict[str, dict[str, np.ndarray]]:
        return {
            c: es.metrics(student_scores(model, text_t, ids_t, es.histories))
            for c, es in d.sets[part].items()
            if c in CELLS
        }

    def train(name: str, **over: Any) -> tuple[Student, list[dict], float]:
        conf = TrainConfig(**{**asdict(tc), **over})
        tt = time.perf_counter()
        model, curve = train_student(
            ex,
            text_vecs=item_vecs,
            id_index=d.id_index,
            catalogue=warm,
            student_config=scfg,
            config=conf,
            teacher_logits=(top if conf.softmax == "sampled" else dense)
            if conf.teacher == "model"
            else None,
            validate=lambda m: _val_score(cells(m, "val")),
            progress=cfg.progress,
            desc=name,
        )
        stamp(f"train {name}", tt)
        return model, curve, max(r["val"] for r in curve)

    sampled = {"softmax": "sampled", "negatives": cfg.negatives, "teacher_topk": cfg.teacher_topk}
    paths: dict[str, dict[str, Any]] = {"full": {"softmax": "full"}, "sampled": sampled}
    for a in cfg.ablations:
        paths[f"sampled_{a}"] = {**sampled, "kd_outside": a}
    models: dict[str, Student] = {}
    curves: dict[str, list] = {}
    chosen: dict[str, dict[str, float]] = {}
    for path, over in paths.items():
        if path in ("full", "sampled"):  # kd_outside is KD only: the others share ce_sampled
            models[f"ce_{path}"], curves[f"ce_{path}"], _ = train(f"ce_{path}", **over)
        best = None
        for alpha, temp in cfg.kd_grid:
            m, cv, v = train(
                f"kd_{path} a={alpha} T={temp}",
                teacher="model",
                alpha=alpha,
                temperature=temp,
                **over,
            )
            if best is None or v > best[2]:
                best = (m, cv, v, alpha, temp)
        models[f"kd_{path}"], curves[f"kd_{path}"] = best[0], best[1]
        chosen[f"kd_{path}"] = {"alpha": best[3], "T": best[4], "val": round(best[2], 5)}
    students = [*STUDENTS, *(f"kd_sampled_{a}" for a in cfg.ablations)]

    test = {name: cells(m, "test") for name, m in models.items()}
    ndcg = {name: {c: test[name][c]["ndcg@10"] for c in CELLS} for name in students}
    if keep is not None:
        keep.update(ndcg)

    def epoch_seconds(curve: list[dict]) -> float:
        return round(float(np.mean([r["train_seconds"] for r in curve])), 2)

    return {
        "protocol": {
            "dataset": "MovieLens-100K (recbole package files)",
            "split": "coldstream evaluate's: users 80/10/10 and 10% cold items by seed "
            f"{cfg.seed} ({sum(len(es.gts) for es in d.sets['test'].values())} test "
            "user-cells)",
            "test_users_per_cell": {c: len(d.sets["test"][c].gts) for c in CELLS},
            "teacher": {
                **teacher.describe(),
                "adaptation": "frozen encoder + trained head (trainer.teacher.adapt), tau on validation",
                "tau": tau,
                "prefixes": len(tpos),
                "topk": cfg.teacher_topk,
                "topk_teacher_mass": round(mass, 4),
            },
            "items": len(items),
            "warm_items": int(warm.sum()),
            "sampled": {
                "negatives": f"{cfg.negatives} uniform per batch + the batch's {tc.batch_size} "
                "targets (mixed), logQ-corrected",
                "kd": f"KL over the teacher's top-{cfg.teacher_topk} plus the same negatives, "
                "which the teacher head scores too (kd_outside=scored)",
                "kd_tail": "kd_sampled_tail: the teacher's mass outside its top-K as one "
                "bucket, the student's side estimated from the negatives",
                "kd_renorm": f"kd_sampled_renorm: KL to the teacher renormalised over its "
                f"top-{cfg.teacher_topk}",
            },
            "selection": "alpha, T of each KD student chosen on validation users from "
            f"{cfg.kd_grid} (mean NDCG@10 over {', '.join(CELLS)}); test users scored once",
            "train": asdict(tc),
            "student": scfg.to_dict(),
        },
        **_summary(ndcg, cfg),
        "kd_chosen": chosen,
        "epochs": {name: len(curves[name]) for name in students},
        "seconds_per_epoch": {name: epoch_seconds(curves[name]) for name in students},
        "stages_seconds": stages,
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }


def _summary(ndcg: dict[str, dict[str, np.ndarray]], cfg: CompareConfig) -> dict[str, Any]:
    """Mean NDCG@10 per student and cell, and the paired bootstraps (sampled - full, KD -
    CE) of per-user NDCG@10 ``ndcg[student][cell]`` (one split's users or several pooled)."""

    def boot(a: str, b: str) -> dict[str, Any]:
        return {
            c: paired_bootstrap(ndcg[a][c], ndcg[b][c], n_boot=cfg.n_boot, seed=cfg.seed)
            for c in CELLS
        }

    return {
        "ndcg@10": {n: summarize({c: ndcg[n][c] for c in CELLS}) for n in ndcg},
        "sampled_minus_full": {
            "ce": boot("ce_sampled", "ce_full"),
            "kd": boot("kd_sampled", "kd_full"),
            **{f"kd_{a}": boot(f"kd_sampled_{a}", "kd_full") for a in cfg.ablations},
        },
        "kd_minus_ce": {
            "full": boot("kd_full", "ce_full"),
            "sampled": boot("kd_sampled", "ce_sampled"),
        },
    }


def compare_splits(
    cfg: CompareConfig,
    seeds: Sequence[int],
    *,
    data: tuple[Any, Any] | None = None,
    teacher: Any = None,
) -> dict:
    """:func:`compare` on the split of every seed (data and teacher loaded once), pooled:
    NDCG@10 over all test users of all splits and the paired bootstrap of sampled - full
    over them (a user in the test set of two splits counts twice, as in ``coldstream
    evaluate --full``). One split's interval holds the test users' noise only; the splits
    add the split's and the training's (every student is retrained per split)."""
    from dataclasses import replace

    from trainer.data import load_movielens

    t0 = time.perf_counter()
    data = data if data is not None else load_movielens()
    if teacher is None:
        from trainer.teacher.encoder import Teacher

        teacher = Teacher(cfg.teacher_path, device="cpu", item_cache=cfg.item_cache)
    per_split, arrays = [], []
    first: dict[str, Any] = {}
    for i, seed in enumerate(seeds):
        if cfg.progress:
            print(f"[compare] split {i + 1}/{len(seeds)} (seed {seed})", flush=True)
        kept: dict[str, dict[str, np.ndarray]] = {}
        r = compare(replace(cfg, seed=int(seed)), data=data, teacher=teacher, keep=kept)
        per_split.append(
            {
                "seed": int(seed),
                "ndcg@10": r["ndcg@10"],
                "sampled_minus_full": r["sampled_minus_full"],
                "kd_chosen": r["kd_chosen"],
                "epochs": r["epochs"],
                "topk_teacher_mass": r["protocol"]["teacher"]["topk_teacher_mass"],
                "total_seconds": r["total_seconds"],
            }
        )
        arrays.append(kept)
        first = first or r
    names = list(arrays[0])
    pooled = {n: {c: np.concatenate([a[n][c] for a in arrays]) for c in CELLS} for n in names}
    protocol = dict(first["protocol"])
    protocol["split"] = (
        f"coldstream evaluate's, one per seed {list(map(int, seeds))}: users 80/10/10 and 10% "
        f"cold items by the seed; every student retrained per split; pooled over "
        f"{sum(len(pooled['ce_full'][c]) for c in CELLS)} test user-cells"
    )
    protocol["test_users_per_cell"] = {c: len(pooled["ce_full"][c]) for c in CELLS}
    return {
        "protocol": protocol,
        "splits": [int(x) for x in seeds],
        **_summary(pooled, cfg),
        "per_split": per_split,
        "total_seconds": round(time.perf_counter() - t0, 1),
    }


def _interval(r: dict) -> str:
    return f"{r['mean']:+.3f} [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]"


def markdown(report: dict) -> str:
    """The comparison as a Markdown table (NDCG@10 and sampled - full, 95% intervals)."""
    lines = ["| NDCG@10 | " + " | ".join(CELLS) + " |", "|---" * (len(CELLS) + 1) + "|"]
    for name, row_vals in report["ndcg@10"].items():
        vals = " | ".join(f"{row_vals[c]:.3f}" for c in CELLS)
        lines.append(f"| {name} | {vals} |")
    for kind, row in report["sampled_minus_full"].items():
        lines.append(
            f"| {kind}: sampled - full | " + " | ".join(_interval(row[c]) for c in CELLS) + " |"
        )
    return "\n".join(lines)
