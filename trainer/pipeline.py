"""Shared steps of training and evaluation: splits, teacher features, adaptation, KD logits.

Kept in one place so that ``coldstream train`` (:func:`fit_and_save`) and
``coldstream evaluate`` (:mod:`trainer.evaluate`) prepare data identically.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainer.metrics import rank_metrics
from trainer.student import StudentConfig
from trainer.training import (
    Examples,
    FitConfig,
    Seq,
    TrainConfig,
    build_examples,
    prefix_positions,
    set_threads,
    student_scores,
    train_student,
)

HISTORY_ITEMS = 5
"""Most recent items in the teacher's history text (keeps encoder cost bounded)."""


def split_users(n_users: int, seed: int, shares: tuple[float, float, float] = (0.8, 0.1, 0.1)
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n_users)
    a = int(round(shares[0] * n_users))
    b = a + int(round(shares[1] * n_users))
    return np.sort(perm[:a]), np.sort(perm[a:b]), np.sort(perm[b:])


def pick_cold_items(n_items: int, share: float, seed: int) -> np.ndarray:
    """Bool ``[N]``: items held out of training entirely (their text stays known)."""
    rng = np.random.default_rng(seed + 7919)
    cold = np.zeros(n_items, dtype=bool)
    cold[rng.choice(n_items, size=int(round(share * n_items)), replace=False)] = True
    return cold


def drop_items(seq: Seq, drop: np.ndarray) -> Seq:
    keep = ~drop[seq[0]]
    return seq[0][keep], seq[1][keep]


@dataclass
class EvalSet:
    """Users of one protocol cell: revealed histories, ground truth, candidates."""

    name: str
    histories: list[Seq]
    gts: list[np.ndarray]
    candidates: np.ndarray | None  # bool [N] or None (all)
    users: np.ndarray

    def metrics(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        return rank_metrics(scores, self.gts, [h[0] for h in self.histories], self.candidates)


def warm_sets(seqs: Sequence[Seq], users: np.ndarray, cold: np.ndarray, ks=(1, 3, 5),
              n_next: int = 10) -> dict[str, EvalSet]:
    """k-protocol on the warm catalogue: reveal the first k warm events, truth = next 10."""
    out = {}
    for k in ks:
        hs, gts, us = [], [], []
        for u in users:
            s = drop_items(seqs[u], cold)
            if len(s[0]) >= k + 1:
                hs.append((s[0][:k], s[1][:k]))
                gts.append(s[0][k:k + n_next])
                us.append(u)
        out[f"k={k}"] = EvalSet(f"k={k}", hs, gts, ~cold, np.array(us))
    return out


def cold_sets(seqs: Sequence[Seq], users: np.ndarray, cold: np.ndarray, reveal: int = 5
              ) -> dict[str, EvalSet]:
    """Cold items: reveal the first ``reveal`` events (any items); truth = cold items the
    user interacted with later. ``cold_items`` ranks among cold items only (the "new
    arrivals" shelf), ``cold_items_mixed`` among all items."""
    hs, gts, us = [], [], []
    for u in users:
        items, ev = seqs[u]
        if len(items) <= reveal:
            continue
        later = items[reveal:]
        g = later[cold[later]]
        if len(g):
            hs.append((items[:reveal], ev[:reveal]))
            gts.append(g)
            us.append(u)
    us_a = np.array(us)
    return {"cold_items": EvalSet("cold_items", hs, gts, cold.copy(), us_a),
            "cold_items_mixed": EvalSet("cold_items_mixed", hs, gts, None, us_a)}


def teacher_features(teacher, item_vecs: np.ndarray, texts: Sequence[str],
                     histories: Sequence[np.ndarray], *, progress: bool = False) -> np.ndarray:
    """``[B, 2D]``: encoder vector of the history text and the mean item-text vector."""
    from trainer.teacher import history_text
    h_text = [history_text([texts[i] for i in h], max_items=HISTORY_ITEMS) for h in histories]
    enc = teacher.encode(h_text, progress=progress)
    mean = np.stack([item_vecs[np.asarray(h[-HISTORY_ITEMS:], dtype=np.int64)].mean(0) if len(h)
                     else np.zeros(item_vecs.shape[1], np.float32) for h in histories])
    return np.concatenate([enc, mean], axis=1).astype(np.float32)


def teacher_positions(seqs: Sequence[Seq], *, first: int, random_more: int, max_prefix: int,
                      seed: int) -> list[tuple[int, int]]:
    """The budgeted subsample of training prefixes the teacher is run on: every prefix of
    length ``1..first`` plus ``random_more`` random lengths in ``first+1..max_prefix``."""
    rng = np.random.default_rng(seed + 17)
    out = []
    for u, (items, _) in enumerate(seqs):
        n = len(items)
        out += [(u, t) for t in range(1, min(first, n - 1) + 1)]
        hi = min(max_prefix, n - 1)
        if hi > first and random_more > 0:
            more = rng.choice(np.arange(first + 1, hi + 1), size=min(random_more, hi - first), replace=False)
            out += [(u, int(t)) for t in sorted(more)]
    return out


def attach_kd_rows(ex: Examples, positions: Sequence[tuple[int, int]],
                   teacher_pos: Sequence[tuple[int, int]]) -> None:
    where = {p: i for i, p in enumerate(teacher_pos)}
    ex.kd_row = torch.as_tensor([where.get((int(u), int(t)), -1) for u, t in positions], dtype=torch.long)


def fit_and_save(inter, items, cfg: FitConfig, store_root: Path, *, progress: bool = True) -> Path:
    """Body of :func:`trainer.training.fit`."""
    from trainer.adapt import HeadConfig, calibrate_temperature, fit_head
    from trainer.device import resolve_device
    from trainer.store import save_checkpoint
    from trainer.teacher import Teacher

    set_threads(cfg.threads)
    t0 = time.perf_counter()
    seq_map = inter.sequences()
    seqs = [seq_map.get(u, (np.zeros(0, np.int64), np.zeros(0, np.int64))) for u in range(len(inter.user_ids))]
    n_items = len(items)
    train_u, val_u, _ = split_users(len(seqs), cfg.seed, (1 - cfg.val_share, cfg.val_share, 0.0))
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
    val_sets = warm_sets(seqs, val_u, none)
    # quick (bootstrap) mode: shorter prefixes and fewer epochs keep it within ~3 min on 2 CPUs
    quick = {"max_prefix": 20, "extra_per_user": 3, "epochs": 12} if cfg.quick else {}
    tc = TrainConfig(**{"seed": cfg.seed, **quick, **cfg.train})
    scfg = StudentConfig(n_items=int(seen.sum()), text_dim=teacher.dim, **cfg.student)

    def validate(model) -> float:
        vals = [es.metrics(student_scores(model, torch.as_tensor(item_vecs), torch.as_tensor(id_index),
                                          es.histories))["ndcg@10"].mean() for es in val_sets.values()]
        return float(np.mean(vals))

    positions = prefix_positions(train_seqs, max_prefix=tc.max_prefix, extra_per_user=tc.extra_per_user,
                                 seed=cfg.seed)
    ex = build_examples(train_seqs, positions, scfg.max_len)
    teacher_logits = None
    info: dict = {"quick": cfg.quick}
    if not cfg.quick:
        tpos = teacher_positions(train_seqs, first=5, random_more=max(0, cfg.teacher_prefixes_per_user - 5),
                                 max_prefix=tc.max_prefix, seed=cfg.seed)
        feats = teacher_features(teacher, item_vecs, items.texts, [train_seqs[u][0][:t] for u, t in tpos],
                                 progress=progress)
        targets = [train_seqs[u][0][t:t + 10] for u, t in tpos]
        vfeats = {k: teacher_features(teacher, item_vecs, items.texts, [h[0] for h in es.histories])
                  for k, es in val_sets.items()}

        def vhead(head) -> float:
            return float(np.mean([es.metrics(head.score(vfeats[k], item_vecs))["ndcg@10"].mean()
                                  for k, es in val_sets.items()]))

        head, _ = fit_head(feats, targets, item_vecs, seen, config=HeadConfig(seed=cfg.seed), validate=vhead)
        vl = np.concatenate([head.score(vfeats[k], item_vecs) for k in val_sets])
        vt = np.concatenate([[g[0] for g in es.gts] for es in val_sets.values()])
        tau = calibrate_temperature(vl, vt)
        teacher_logits = torch.as_tensor(head.score(feats, item_vecs) / tau, dtype=torch.float32)
        attach_kd_rows(ex, positions, tpos)
        tc.teacher, tc.alpha, tc.temperature = "model", cfg.alpha, cfg.temperature
        info.update({"teacher_head_val_ndcg10": vhead(head), "teacher_tau": tau, "alpha": cfg.alpha,
                     "temperature": cfg.temperature, "teacher_prefixes": len(tpos)})
    model, curve = train_student(ex, text_vecs=item_vecs, id_index=id_index, catalogue=seen,
                                 student_config=scfg, config=tc, teacher_logits=teacher_logits,
                                 validate=validate, progress=progress)
    metrics = {"val_ndcg@10_mean_k135": max(r["val"] for r in curve), "epochs": len(curve),
               "train_seconds": round(time.perf_counter() - t0, 1), **info}
    return save_checkpoint(store_root, model=model, item_ids=[items.ids[i] for i in order],
                           item_text_vecs=item_vecs[order], item_titles=[items.titles[i] for i in order],
                           metrics=metrics, teacher=teacher.describe(), version=cfg.version)
