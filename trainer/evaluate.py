"""The cold-start evaluation protocol (``coldstream evaluate``).

One run, one split, every model:

* Users are split 80/10/10 (train/validation/test) by a seed; 10% of the items (same
  seed) are **cold**: held out of training entirely (no interaction of theirs is used
  by any model; only their text is known, as for a brand-new item on the ``items``
  topic).
* **Warm protocol** (``k=1``, ``k=3``, ``k=5``): on each test user's warm sequence
  (stable time order), reveal the first k events; ground truth = the next 10; rank all
  warm items except the revealed ones.
* **Cold items** (``cold_items``): reveal each test user's first 5 events; ground truth
  = the cold items they interacted with later; rank the cold items (``cold_items_mixed``:
  rank all items).
* Metrics: NDCG, Recall, HR at 10 and 20 (:mod:`trainer.ranking`).
* Models: popularity, ItemKNN, the zero-shot teacher, the adapted teacher, the student
  with CE only, with KD from a uniform teacher (label smoothing: the control) and with
  KD from the adapted teacher. KD's alpha and T are chosen on the *validation* users
  (for the KD student and the control separately, from the same grid); test users are
  only scored, once, at the end.
* Paired bootstrap 95% intervals (users resampled) of NDCG@10 for KD - CE and KD -
  uniform control, per cell.

Writes ``<out>.json``, ``<out>.md`` and ``<out>.png`` (metric against k; training curves).
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coldstream.core.student import StudentConfig
from trainer.features import (
    HISTORY_ITEMS,
    attach_kd_rows,
    cold_sets,
    drop_items,
    pick_cold_items,
    split_users,
    teacher_features,
    teacher_positions,
    warm_sets,
)
from trainer.ranking import paired_bootstrap, summarize
from trainer.reports import write_coldstart_report
from trainer.training import (
    TrainConfig,
    build_examples,
    prefix_positions,
    set_threads,
    student_scores,
    train_student,
)

MODELS = ("popularity", "itemknn", "teacher_zero_shot", "teacher_adapted", "student_ce",
          "student_uniform", "student_kd")
CELLS = ("k=1", "k=3", "k=5", "cold_items", "cold_items_mixed")


@dataclass
class EvalConfig:
    seed: int = 0
    cold_share: float = 0.1
    teacher_path: str | None = None
    device: str = "cpu"
    threads: int = 2
    student: dict[str, Any] = field(default_factory=lambda: {"dim": 64, "max_len": 20, "dropout": 0.2})
    train: dict[str, Any] = field(default_factory=lambda: {"max_prefix": 20, "extra_per_user": 3})
    """Overrides of :class:`TrainConfig` (shorter prefixes than ``fit``'s: the 30-minute budget)."""
    teacher_first: int = 5
    """Teacher logits for every training prefix of length 1..teacher_first ..."""
    teacher_random_more: int = 3
    """... plus this many random longer prefixes per training user (the budget)."""
    kd_grid: list[tuple[float, float]] = field(default_factory=lambda: [(1.0, 1.0), (2.0, 2.0)])
    """(alpha, T) pairs tried for the KD student and for the uniform control."""
    n_boot: int = 2000
    progress: bool = True
    cache_dir: str | None = None
    """Cache teacher encoder outputs here (npz, keyed by seed and budget) between runs."""


def _val_score(cells: dict[str, dict[str, np.ndarray]]) -> float:
    """Model selection criterion on validation users: mean NDCG@10 over k=1,3,5 and cold items."""
    return float(np.mean([cells[c]["ndcg@10"].mean() for c in ("k=1", "k=3", "k=5", "cold_items")]))


def run(cfg: EvalConfig, out: Path | str) -> dict[str, Any]:
    from trainer.adapt import HeadConfig, calibrate_temperature, fit_head, zero_shot_logits
    from trainer.baselines import ItemKNN, Popularity
    from trainer.data import load_movielens, tie_share
    from trainer.teacher import Teacher

    set_threads(cfg.threads)
    t_start = time.perf_counter()
    log: dict[str, float] = {}

    def stamp(name: str, t: float) -> None:
        log[name] = round(time.perf_counter() - t, 1)
        if cfg.progress:
            print(f"[evaluate] {name}: {log[name]} s (total {time.perf_counter() - t_start:.0f} s)", flush=True)

    t = time.perf_counter()
    inter, items = load_movielens()
    smap = inter.sequences()
    seqs = [smap[u] for u in range(len(inter.user_ids))]
    n_items = len(items)
    train_u, val_u, test_u = split_users(len(seqs), cfg.seed)
    cold = pick_cold_items(n_items, cfg.cold_share, cfg.seed)
    warm = ~cold
    train_seqs = [drop_items(seqs[u], cold) for u in train_u]
    id_index = np.full(n_items, -1, dtype=np.int64)
    id_index[warm] = np.arange(int(warm.sum()))
    sets = {"val": {**warm_sets(seqs, val_u, cold), **cold_sets(seqs, val_u, cold)},
            "test": {**warm_sets(seqs, test_u, cold), **cold_sets(seqs, test_u, cold)}}
    stamp("data", t)

    def evaluate_all(score_fn) -> dict[str, dict[str, dict[str, np.ndarray]]]:
        return {part: {c: es.metrics(score_fn(es, part, c)) for c, es in cells.items()}
                for part, cells in sets.items()}

    results: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    curves: dict[str, list] = {}

    # -- baselines -----------------------------------------------------------------------
    t = time.perf_counter()
    pop = Popularity(n_items, seed=cfg.seed).learn([s[0] for s in train_seqs])
    knn = ItemKNN(n_items, seed=cfg.seed).learn([s[0] for s in train_seqs])
    results["popularity"] = evaluate_all(lambda es, p, c: pop.score([h[0] for h in es.histories]))
    results["itemknn"] = evaluate_all(lambda es, p, c: knn.score([h[0] for h in es.histories]))
    stamp("baselines", t)

    # -- teacher: zero-shot ----------------------------------------------------------------
    t = time.perf_counter()
    teacher = Teacher(cfg.teacher_path, device=cfg.device)
    tc = TrainConfig(**{"seed": cfg.seed, **cfg.train})
    tpos = teacher_positions(train_seqs, first=cfg.teacher_first, random_more=cfg.teacher_random_more,
                             max_prefix=tc.max_prefix, seed=cfg.seed)
    cache = None
    if cfg.cache_dir:
        key = f"seed{cfg.seed}-cold{cfg.cold_share}-f{cfg.teacher_first}-r{cfg.teacher_random_more}-" \
              f"p{tc.max_prefix}-{teacher.path.name}"
        cache = Path(cfg.cache_dir) / f"teacher-{key}.npz"
    cached = dict(np.load(cache)) if cache is not None and cache.is_file() else {}
    item_vecs = cached["items"] if "items" in cached else teacher.encode_items(items.texts, progress=cfg.progress)
    stamp("teacher item vectors", t)
    t = time.perf_counter()
    feats = {p: {c: cached[f"{p}/{c}"] if f"{p}/{c}" in cached else
                 teacher_features(teacher, item_vecs, items.texts, [h[0] for h in es.histories])
                 for c, es in cells.items() if c != "cold_items_mixed"} for p, cells in sets.items()}
    for p in feats:
        feats[p]["cold_items_mixed"] = feats[p]["cold_items"]
    results["teacher_zero_shot"] = evaluate_all(lambda es, p, c: zero_shot_logits(feats[p][c], item_vecs))
    # per-user timing of the teacher (history text encode + scoring against all items)
    es5 = sets["test"]["k=5"]
    tt = time.perf_counter()
    teacher_features(teacher, item_vecs, items.texts, [h[0] for h in es5.histories])
    zero_shot_logits(feats["test"]["k=5"], item_vecs)
    teacher_ms = 1000 * (time.perf_counter() - tt) / max(len(es5.histories), 1)
    stamp("teacher zero-shot", t)

    # -- teacher adaptation ----------------------------------------------------------------
    t = time.perf_counter()
    te0 = teacher.seconds
    tfeats = cached["prefixes"] if "prefixes" in cached else teacher_features(
        teacher, item_vecs, items.texts, [train_seqs[u][0][:t_] for u, t_ in tpos], progress=cfg.progress)
    teacher_prefix_seconds = teacher.seconds - te0
    if cache is not None and not cached:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, items=item_vecs, prefixes=tfeats,
                 **{f"{p}/{c}": v for p, d in feats.items() for c, v in d.items() if c != "cold_items_mixed"})
    stamp(f"teacher on {len(tpos)} training prefixes", t)
    t = time.perf_counter()
    targets = [train_seqs[u][0][t_:t_ + 10] for u, t_ in tpos]

    def vhead(head) -> float:
        return _val_score({c: sets["val"][c].metrics(head.score(feats["val"][c], item_vecs))
                           for c in ("k=1", "k=3", "k=5", "cold_items")})

    head, curves["teacher_adapted"] = fit_head(tfeats, targets, item_vecs, warm,
                                               config=HeadConfig(seed=cfg.seed), validate=vhead,
                                               progress=cfg.progress)
    results["teacher_adapted"] = evaluate_all(lambda es, p, c: head.score(feats[p][c], item_vecs))
    # temperature of the teacher's logits, calibrated on validation users (next-item NLL)
    vl, vt = [], []
    for c in ("k=1", "k=3", "k=5"):
        es = sets["val"][c]
        s = head.score(feats["val"][c], item_vecs)
        s[:, cold] = -np.inf
        for b, h in enumerate(es.histories):
            s[b, h[0]] = -np.inf
        vl.append(s)
        vt.append([g[0] for g in es.gts])
    tau = calibrate_temperature(np.concatenate(vl), np.concatenate(vt))
    teacher_logits = torch.as_tensor(head.score(tfeats, item_vecs) / tau, dtype=torch.float32)
    with torch.no_grad():
        p = torch.softmax(teacher_logits, -1)
        perplexity = float(torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum(-1)).mean())
    stamp("teacher adaptation", t)

    # -- students --------------------------------------------------------------------------
    positions = prefix_positions(train_seqs, max_prefix=tc.max_prefix, extra_per_user=tc.extra_per_user,
                                 seed=cfg.seed)
    scfg = StudentConfig(n_items=int(warm.sum()), text_dim=teacher.dim, **cfg.student)
    ex = build_examples(train_seqs, positions, scfg.max_len)
    attach_kd_rows(ex, positions, tpos)
    text_t, ids_t = torch.as_tensor(item_vecs), torch.as_tensor(id_index)

    def student_cells(model, part: str) -> dict[str, dict[str, np.ndarray]]:
        return {c: es.metrics(student_scores(model, text_t, ids_t, es.histories))
                for c, es in sets[part].items()}

    def validate(model) -> float:
        return _val_score(student_cells(model, "val"))

    def train(teacher_kind: str, alpha: float, temp: float, name: str):
        conf = TrainConfig(**{**asdict(tc), "teacher": teacher_kind, "alpha": alpha, "temperature": temp})
        tt = time.perf_counter()
        model, curve = train_student(ex, text_vecs=item_vecs, id_index=id_index, catalogue=warm,
                                     student_config=scfg, config=conf,
                                     teacher_logits=teacher_logits if teacher_kind == "model" else None,
                                     validate=validate, progress=cfg.progress, desc=name)
        stamp(f"train {name}", tt)
        return model, curve, max(r["val"] for r in curve)

    selection: dict[str, list] = {}
    ce_model, curves["student_ce"], _ = train("none", 0.0, 1.0, "student_ce")
    models = {"student_ce": ce_model}
    for kind, name in (("model", "student_kd"), ("uniform", "student_uniform")):
        best = None
        selection[name] = []
        for alpha, temp in cfg.kd_grid:
            m, cv, v = train(kind, alpha, temp, f"{name} a={alpha} T={temp}")
            selection[name].append({"alpha": alpha, "T": temp, "val": round(v, 5)})
            if best is None or v > best[2]:
                best = (m, cv, v, alpha, temp)
        models[name], curves[name] = best[0], best[1]
        selection[name + "_chosen"] = {"alpha": best[3], "T": best[4]}
    for name, m in models.items():
        results[name] = {part: student_cells(m, part) for part in sets}

    tt = time.perf_counter()
    for _ in range(3):
        student_scores(models["student_kd"], text_t, ids_t, es5.histories)
    student_ms = 1000 * (time.perf_counter() - tt) / 3 / max(len(es5.histories), 1)

    # -- report ----------------------------------------------------------------------------
    def cell_summary(name: str, part: str) -> dict[str, dict[str, float]]:
        return {c: summarize(results[name][part][c]) for c in CELLS}

    def boot(a: str, b: str) -> dict[str, Any]:
        return {c: paired_bootstrap(results[a]["test"][c]["ndcg@10"], results[b]["test"][c]["ndcg@10"],
                                    n_boot=cfg.n_boot, seed=cfg.seed) for c in CELLS}

    report = {
        "protocol": {
            "dataset": "MovieLens-100K (recbole package files)",
            "interactions": len(inter), "users": len(seqs), "items": n_items,
            "order": "stable sort by (timestamp, file order); "
                     f"{tie_share(inter):.0%} of interactions share a timestamp with another of the same user, "
                     "so 'the next 10' is partly arbitrary within ties",
            "events": "rating >= 4 purchase, else click",
            "split": {"seed": cfg.seed, "train_users": len(train_u), "val_users": len(val_u),
                      "test_users": len(test_u)},
            "cold_items": {"share": cfg.cold_share, "n": int(cold.sum()),
                           "rule": "held out of all training; test users' first 5 events revealed; truth = "
                                   "cold items they interacted with later; cold_items ranks among cold items, "
                                   "cold_items_mixed among all items"},
            "warm": "reveal first k warm events; truth = next 10 warm events; rank all warm items not revealed",
            "test_users_per_cell": {c: len(es.histories) for c, es in sets["test"].items()},
            "selection": "early stopping, teacher temperature, KD alpha/T chosen on validation users only "
                         "(mean NDCG@10 over k=1,3,5 and cold items)",
            "teacher": {**teacher.describe(), "history_items": HISTORY_ITEMS,
                        "adaptation": "frozen encoder + trained residual user/item heads + text prior, "
                                      "full-catalogue contrastive loss, early stopping on validation",
                        "tau": tau, "teacher_perplexity_train_prefixes": round(perplexity, 1),
                        "teacher_prefixes": len(tpos),
                        "teacher_prefix_rule": f"all prefixes of length 1..{cfg.teacher_first} + "
                                               f"{cfg.teacher_random_more} random longer (<= {tc.max_prefix}) "
                                               "per training user",
                        "teacher_prefix_seconds": round(teacher_prefix_seconds, 1)},
            "student": scfg.to_dict(), "train": asdict(tc), "kd_selection": selection,
            "student_examples": len(positions),
            "machine": f"{platform.machine()}, torch threads {torch.get_num_threads()}",
        },
        "results": {name: cell_summary(name, "test") for name in MODELS},
        "validation": {name: cell_summary(name, "val") for name in MODELS},
        "kd_minus_ce": boot("student_kd", "student_ce"),
        "kd_minus_uniform": boot("student_kd", "student_uniform"),
        "timing": {"teacher_ms_per_user": round(teacher_ms, 3), "student_ms_per_user": round(student_ms, 4),
                   "stages_seconds": log, "total_seconds": round(time.perf_counter() - t_start, 1)},
        "curves": curves,
    }
    write_coldstart_report(report, Path(out))
    return report
