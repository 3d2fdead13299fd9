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

The run is an :class:`Evaluation`: one method per step (data and split, baselines, the
teacher's item vectors, the zero-shot teacher, the teacher on the training prefixes, its
adaptation, the three students, the report), each filling what the next ones read.
:func:`run` runs them all on MovieLens-100K and writes ``<out>.json``, ``<out>.md`` and
``<out>.png`` (metric against k; training curves; :mod:`trainer.reports`).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coldstream.core.student import Student, StudentConfig
from trainer.adapt import HeadConfig, TeacherHead, calibrate_temperature, fit_head, zero_shot_logits
from trainer.baselines import ItemKNN, Popularity
from trainer.data import Interactions, Items, load_movielens, tie_share
from trainer.features import (
    HISTORY_ITEMS,
    EvalSet,
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
    Examples,
    Seq,
    TrainConfig,
    build_examples,
    prefix_positions,
    set_threads,
    student_scores,
    train_student,
)

MODELS = (
    "popularity",
    "itemknn",
    "teacher_zero_shot",
    "teacher_adapted",
    "student_ce",
    "student_uniform",
    "student_kd",
)
CELLS = ("k=1", "k=3", "k=5", "cold_items", "cold_items_mixed")
VAL_CELLS = ("k=1", "k=3", "k=5", "cold_items")
"""The cells of the model-selection criterion (:func:`_val_score`)."""
MOVIELENS = "MovieLens-100K (recbole package files)"

Cells = dict[str, dict[str, np.ndarray]]
"""Per-user metric arrays of one model on one part: ``{cell: {metric: [users]}}``."""
Results = dict[str, Cells]
"""``{part: cells}`` for the parts ``val`` and ``test``."""
ScoreFn = Callable[[EvalSet, str, str], np.ndarray]
"""Scores ``[B, N]`` of a cell's users: ``score(eval_set, part, cell)``."""


@dataclass
class EvalConfig:
    seed: int = 0
    cold_share: float = 0.1
    teacher_path: str | None = None
    device: str = "cpu"
    threads: int = 2
    student: dict[str, Any] = field(
        default_factory=lambda: {"dim": 64, "max_len": 20, "dropout": 0.2}
    )
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
    return float(np.mean([cells[c]["ndcg@10"].mean() for c in VAL_CELLS]))


@dataclass
class EvalData:
    """The data of one run and its split: users 80/10/10, cold items, the evaluation cells."""

    inter: Interactions
    items: Items
    seqs: list[Seq]
    train_u: np.ndarray
    val_u: np.ndarray
    test_u: np.ndarray
    cold: np.ndarray
    """Bool ``[N]``: items held out of all training."""
    train_seqs: list[Seq]
    """Training users' sequences without the cold items."""
    id_index: np.ndarray
    """Id-embedding row of each warm item, -1 for cold ones."""
    sets: dict[str, dict[str, EvalSet]]
    """``{"val" | "test": {cell: EvalSet}}``."""

    @property
    def warm(self) -> np.ndarray:
        return ~self.cold

    @property
    def n_items(self) -> int:
        return len(self.items)

    @classmethod
    def split(cls, inter: Interactions, items: Items, *, seed: int, cold_share: float) -> EvalData:
        smap = inter.sequences()
        seqs = [smap[u] for u in range(len(inter.user_ids))]
        n_items = len(items)
        train_u, val_u, test_u = split_users(len(seqs), seed)
        cold = pick_cold_items(n_items, cold_share, seed)
        warm = ~cold
        train_seqs = [drop_items(seqs[u], cold) for u in train_u]
        id_index = np.full(n_items, -1, dtype=np.int64)
        id_index[warm] = np.arange(int(warm.sum()))
        sets = {
            "val": {**warm_sets(seqs, val_u, cold), **cold_sets(seqs, val_u, cold)},
            "test": {**warm_sets(seqs, test_u, cold), **cold_sets(seqs, test_u, cold)},
        }
        return cls(inter, items, seqs, train_u, val_u, test_u, cold, train_seqs, id_index, sets)


class Evaluation:
    """One run of the protocol. ``load()`` gives ``(interactions, items)`` (default:
    MovieLens-100K); ``teacher`` (default: :class:`trainer.teacher.Teacher` from
    ``cfg.teacher_path``) is built in :meth:`teacher_item_vectors`. :meth:`run` runs the steps
    in order and returns the report; each step can also be called on its own, in that order."""

    def __init__(
        self,
        cfg: EvalConfig,
        *,
        load: Callable[[], tuple[Interactions, Items]] | None = None,
        teacher: Any = None,
        dataset: str = MOVIELENS,
    ) -> None:
        self.cfg = cfg
        self.load = load
        self.teacher = teacher
        self.dataset = dataset
        self.tc = TrainConfig(**{"seed": cfg.seed, **cfg.train})
        """The students' training (KD fields set per student)."""
        self.t_start = time.perf_counter()
        self.stages: dict[str, float] = {}
        """Seconds per step, in order (the report's ``timing.stages_seconds``)."""
        self.results: dict[str, Results] = {}
        self.curves: dict[str, list] = {}
        self.data: EvalData
        self.item_vecs: np.ndarray
        self.feats: dict[str, dict[str, np.ndarray]]
        """Teacher features of the val/test cells' revealed histories."""
        self.cache: Path | None = None
        self.cached: dict[str, np.ndarray] = {}
        self.teacher_ms = 0.0
        self.tpos: list[tuple[int, int]]
        """The teacher's budget of training prefixes ``(user, t)``."""
        self.tfeats: np.ndarray
        self.teacher_prefix_seconds = 0.0
        self.head: TeacherHead
        self.tau = 1.0
        self.teacher_logits: torch.Tensor
        self.perplexity = 0.0
        self.positions: list[tuple[int, int]]
        self.scfg: StudentConfig
        self.ex: Examples
        self.selection: dict[str, Any] = {}
        self.models: dict[str, Student] = {}
        self.student_ms = 0.0

    # -- bookkeeping -------------------------------------------------------------------------
    def stamp(self, name: str, t: float) -> None:
        """Record the seconds since ``t`` as stage ``name``."""
        self.stages[name] = round(time.perf_counter() - t, 1)
        if self.cfg.progress:
            print(
                f"[evaluate] {name}: {self.stages[name]} s (total {time.perf_counter() - self.t_start:.0f} s)",
                flush=True,
            )

    def evaluate_all(self, score_fn: ScoreFn) -> Results:
        """Per-user metrics of ``score_fn`` on every cell of both parts."""
        return {
            part: {c: es.metrics(score_fn(es, part, c)) for c, es in cells.items()}
            for part, cells in self.data.sets.items()
        }

    # -- the steps ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Every step in order; the report."""
        self.prepare_data()
        self.baselines()
        self.teacher_item_vectors()
        self.teacher_zero_shot()
        self.teacher_on_prefixes()
        self.adapt_teacher()
        self.students()
        return self.report()

    def prepare_data(self) -> None:
        t = time.perf_counter()
        inter, items = (self.load or load_movielens)()
        self.data = EvalData.split(inter, items, seed=self.cfg.seed, cold_share=self.cfg.cold_share)
        self.stamp("data", t)

    def baselines(self) -> None:
        """Popularity and ItemKNN, learnt on the training users' warm sequences."""
        t = time.perf_counter()
        d, seed = self.data, self.cfg.seed
        pop = Popularity(d.n_items, seed=seed).learn([s[0] for s in d.train_seqs])
        knn = ItemKNN(d.n_items, seed=seed).learn([s[0] for s in d.train_seqs])
        self.results["popularity"] = self.evaluate_all(
            lambda es, p, c: pop.score([h[0] for h in es.histories])
        )
        self.results["itemknn"] = self.evaluate_all(
            lambda es, p, c: knn.score([h[0] for h in es.histories])
        )
        self.stamp("baselines", t)

    def teacher_item_vectors(self) -> None:
        """The teacher (built here unless given), its cache file and every item's text vector."""
        t = time.perf_counter()
        cfg = self.cfg
        if self.teacher is None:
            from trainer.teacher import Teacher

            self.teacher = Teacher(cfg.teacher_path, device=cfg.device)
        if cfg.cache_dir:
            key = (
                f"seed{cfg.seed}-cold{cfg.cold_share}-f{cfg.teacher_first}-r{cfg.teacher_random_more}-"
                f"p{self.tc.max_prefix}-{self.teacher.path.name}"
            )
            self.cache = Path(cfg.cache_dir) / f"teacher-{key}.npz"
        self.cached = (
            dict(np.load(self.cache)) if self.cache is not None and self.cache.is_file() else {}
        )
        self.item_vecs = (
            self.cached["items"]
            if "items" in self.cached
            else self.teacher.encode_items(self.data.items.texts, progress=cfg.progress)
        )
        self.stamp("teacher item vectors", t)

    def teacher_zero_shot(self) -> None:
        """Teacher features of every cell's histories; the zero-shot teacher's results; the
        teacher's time per user (history text encode + scoring against all items)."""
        t = time.perf_counter()
        teacher, texts, vecs, cached = (
            self.teacher,
            self.data.items.texts,
            self.item_vecs,
            self.cached,
        )
        self.feats = {
            p: {
                c: cached[f"{p}/{c}"]
                if f"{p}/{c}" in cached
                else teacher_features(teacher, vecs, texts, [h[0] for h in es.histories])
                for c, es in cells.items()
                if c != "cold_items_mixed"
            }
            for p, cells in self.data.sets.items()
        }
        for p in self.feats:
            self.feats[p]["cold_items_mixed"] = self.feats[p]["cold_items"]
        self.results["teacher_zero_shot"] = self.evaluate_all(
            lambda es, p, c: zero_shot_logits(self.feats[p][c], vecs)
        )
        es5 = self.data.sets["test"]["k=5"]
        tt = time.perf_counter()
        teacher_features(teacher, vecs, texts, [h[0] for h in es5.histories])
        zero_shot_logits(self.feats["test"]["k=5"], vecs)
        self.teacher_ms = 1000 * (time.perf_counter() - tt) / max(len(es5.histories), 1)
        self.stamp("teacher zero-shot", t)

    def teacher_on_prefixes(self) -> None:
        """Teacher features of the budgeted training prefixes (then the cache is written)."""
        t = time.perf_counter()
        cfg, d = self.cfg, self.data
        self.tpos = teacher_positions(
            d.train_seqs,
            first=cfg.teacher_first,
            random_more=cfg.teacher_random_more,
            max_prefix=self.tc.max_prefix,
            seed=cfg.seed,
        )
        te0 = self.teacher.seconds
        self.tfeats = (
            self.cached["prefixes"]
            if "prefixes" in self.cached
            else teacher_features(
                self.teacher,
                self.item_vecs,
                d.items.texts,
                [d.train_seqs[u][0][:t_] for u, t_ in self.tpos],
                progress=cfg.progress,
            )
        )
        self.teacher_prefix_seconds = self.teacher.seconds - te0
        if self.cache is not None and not self.cached:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(
                self.cache,
                items=self.item_vecs,
                prefixes=self.tfeats,
                **{
                    f"{p}/{c}": v
                    for p, cells in self.feats.items()
                    for c, v in cells.items()
                    if c != "cold_items_mixed"
                },
            )
        self.stamp(f"teacher on {len(self.tpos)} training prefixes", t)

    def head_val_score(self, head: TeacherHead) -> float:
        """The selection criterion of an adapted teacher head on the validation users."""
        val = self.data.sets["val"]
        return _val_score(
            {c: val[c].metrics(head.score(self.feats["val"][c], self.item_vecs)) for c in VAL_CELLS}
        )

    def adapt_teacher(self) -> None:
        """Fit the teacher head (early stopping on validation), its results, its temperature
        (next-item NLL on validation users) and its logits on the training prefixes."""
        t = time.perf_counter()
        d, vecs = self.data, self.item_vecs
        targets = [d.train_seqs[u][0][t_ : t_ + 10] for u, t_ in self.tpos]
        self.head, self.curves["teacher_adapted"] = fit_head(
            self.tfeats,
            targets,
            vecs,
            d.warm,
            config=HeadConfig(seed=self.cfg.seed),
            validate=self.head_val_score,
            progress=self.cfg.progress,
        )
        self.results["teacher_adapted"] = self.evaluate_all(
            lambda es, p, c: self.head.score(self.feats[p][c], vecs)
        )
        self.tau = self.calibrate_tau()
        self.teacher_logits = torch.as_tensor(
            self.head.score(self.tfeats, vecs) / self.tau, dtype=torch.float32
        )
        with torch.no_grad():
            p = torch.softmax(self.teacher_logits, -1)
            self.perplexity = float(torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum(-1)).mean())
        self.stamp("teacher adaptation", t)

    def calibrate_tau(self) -> float:
        """Temperature of the adapted teacher's logits on the validation users' warm cells
        (cold and revealed items excluded; target: the next item)."""
        vl, vt = [], []
        for c in ("k=1", "k=3", "k=5"):
            es = self.data.sets["val"][c]
            s = self.head.score(self.feats["val"][c], self.item_vecs)
            s[:, self.data.cold] = -np.inf
            for b, h in enumerate(es.histories):
                s[b, h[0]] = -np.inf
            vl.append(s)
            vt.append([g[0] for g in es.gts])
        return calibrate_temperature(np.concatenate(vl), np.concatenate(vt))

    def student_cells(self, model: Student, part: str) -> Cells:
        text_t, ids_t = torch.as_tensor(self.item_vecs), torch.as_tensor(self.data.id_index)
        return {
            c: es.metrics(student_scores(model, text_t, ids_t, es.histories))
            for c, es in self.data.sets[part].items()
        }

    def student_val_score(self, model: Student) -> float:
        return _val_score(self.student_cells(model, "val"))

    def student_examples(self) -> None:
        """The students' training examples (with the teacher's rows) and their configuration."""
        d = self.data
        self.positions = prefix_positions(
            d.train_seqs,
            max_prefix=self.tc.max_prefix,
            extra_per_user=self.tc.extra_per_user,
            seed=self.cfg.seed,
        )
        self.scfg = StudentConfig(
            n_items=int(d.warm.sum()), text_dim=self.teacher.dim, **self.cfg.student
        )
        self.ex = build_examples(d.train_seqs, self.positions, self.scfg.max_len)
        attach_kd_rows(self.ex, self.positions, self.tpos)

    def train(
        self, teacher_kind: str, alpha: float, temp: float, name: str
    ) -> tuple[Student, list, float]:
        """One student (``teacher_kind``: ``none``, ``model`` or ``uniform``); its curve and best
        validation score."""
        conf = TrainConfig(
            **{**asdict(self.tc), "teacher": teacher_kind, "alpha": alpha, "temperature": temp}
        )
        tt = time.perf_counter()
        model, curve = train_student(
            self.ex,
            text_vecs=self.item_vecs,
            id_index=self.data.id_index,
            catalogue=self.data.warm,
            student_config=self.scfg,
            config=conf,
            teacher_logits=self.teacher_logits if teacher_kind == "model" else None,
            validate=self.student_val_score,
            progress=self.cfg.progress,
            desc=name,
        )
        self.stamp(f"train {name}", tt)
        return model, curve, max(r["val"] for r in curve)

    def students(self) -> None:
        """CE; KD and the uniform control, each the best of ``kd_grid`` on validation; their
        results and the student's time per user."""
        self.student_examples()
        ce_model, self.curves["student_ce"], _ = self.train("none", 0.0, 1.0, "student_ce")
        self.models = {"student_ce": ce_model}
        for kind, name in (("model", "student_kd"), ("uniform", "student_uniform")):
            self.models[name], self.curves[name] = self.select(kind, name)
        for name, m in self.models.items():
            self.results[name] = {part: self.student_cells(m, part) for part in self.data.sets}
        es5 = self.data.sets["test"]["k=5"]
        text_t, ids_t = torch.as_tensor(self.item_vecs), torch.as_tensor(self.data.id_index)
        tt = time.perf_counter()
        for _ in range(3):
            student_scores(self.models["student_kd"], text_t, ids_t, es5.histories)
        self.student_ms = 1000 * (time.perf_counter() - tt) / 3 / max(len(es5.histories), 1)

    def select(self, kind: str, name: str) -> tuple[Student, list]:
        """Train ``name`` for every (alpha, T) of ``kd_grid``; keep the best on validation
        (the first of equals) and record the grid in :attr:`selection`."""
        best = None
        self.selection[name] = []
        for alpha, temp in self.cfg.kd_grid:
            m, cv, v = self.train(kind, alpha, temp, f"{name} a={alpha} T={temp}")
            self.selection[name].append({"alpha": alpha, "T": temp, "val": round(v, 5)})
            if best is None or v > best[2]:
                best = (m, cv, v, alpha, temp)
        self.selection[name + "_chosen"] = {"alpha": best[3], "T": best[4]}
        return best[0], best[1]

    # -- the report --------------------------------------------------------------------------
    def cell_summary(self, name: str, part: str) -> dict[str, dict[str, float]]:
        return {c: summarize(self.results[name][part][c]) for c in CELLS}

    def boot(self, a: str, b: str) -> dict[str, Any]:
        """Paired bootstrap of test NDCG@10, model ``a`` minus model ``b``, per cell."""
        res = self.results
        return {
            c: paired_bootstrap(
                res[a]["test"][c]["ndcg@10"],
                res[b]["test"][c]["ndcg@10"],
                n_boot=self.cfg.n_boot,
                seed=self.cfg.seed,
            )
            for c in CELLS
        }

    def protocol(self) -> dict[str, Any]:
        """What was done, with every choice (the report's ``protocol``)."""
        cfg, d, tc = self.cfg, self.data, self.tc
        return {
            "dataset": self.dataset,
            "interactions": len(d.inter),
            "users": len(d.seqs),
            "items": d.n_items,
            "order": "stable sort by (timestamp, file order); "
            f"{tie_share(d.inter):.0%} of interactions share a timestamp with another of the same user, "
            "so 'the next 10' is partly arbitrary within ties",
            "events": "rating >= 4 purchase, else click",
            "split": {
                "seed": cfg.seed,
                "train_users": len(d.train_u),
                "val_users": len(d.val_u),
                "test_users": len(d.test_u),
            },
            "cold_items": {
                "share": cfg.cold_share,
                "n": int(d.cold.sum()),
                "rule": "held out of all training; test users' first 5 events revealed; truth = "
                "cold items they interacted with later; cold_items ranks among cold items, "
                "cold_items_mixed among all items",
            },
            "warm": "reveal first k warm events; truth = next 10 warm events; rank all warm items not revealed",
            "test_users_per_cell": {c: len(es.histories) for c, es in d.sets["test"].items()},
            "selection": "early stopping, teacher temperature, KD alpha/T chosen on validation users only "
            "(mean NDCG@10 over k=1,3,5 and cold items)",
            "teacher": {
                **self.teacher.describe(),
                "history_items": HISTORY_ITEMS,
                "adaptation": "frozen encoder + trained residual user/item heads + text prior, "
                "full-catalogue contrastive loss, early stopping on validation",
                "tau": self.tau,
                "teacher_perplexity_train_prefixes": round(self.perplexity, 1),
                "teacher_prefixes": len(self.tpos),
                "teacher_prefix_rule": f"all prefixes of length 1..{cfg.teacher_first} + "
                f"{cfg.teacher_random_more} random longer (<= {tc.max_prefix}) "
                "per training user",
                "teacher_prefix_seconds": round(self.teacher_prefix_seconds, 1),
            },
            "student": self.scfg.to_dict(),
            "train": asdict(tc),
            "kd_selection": self.selection,
            "student_examples": len(self.positions),
            "machine": f"{platform.machine()}, torch threads {torch.get_num_threads()}",
        }

    def report(self) -> dict[str, Any]:
        """The report (after every step): protocol, test and validation results, paired
        bootstrap of KD against CE and against the uniform control, timing, curves."""
        return {
            "protocol": self.protocol(),
            "results": {name: self.cell_summary(name, "test") for name in MODELS},
            "validation": {name: self.cell_summary(name, "val") for name in MODELS},
            "kd_minus_ce": self.boot("student_kd", "student_ce"),
            "kd_minus_uniform": self.boot("student_kd", "student_uniform"),
            "timing": {
                "teacher_ms_per_user": round(self.teacher_ms, 3),
                "student_ms_per_user": round(self.student_ms, 4),
                "stages_seconds": self.stages,
                "total_seconds": round(time.perf_counter() - self.t_start, 1),
            },
            "curves": self.curves,
        }


def run(cfg: EvalConfig, out: Path | str) -> dict[str, Any]:
    """The protocol on MovieLens-100K; writes the report (``<out>.json``, ``.md``, ``.png``)."""
    set_threads(cfg.threads)
    report = Evaluation(cfg).run()
    write_coldstart_report(report, Path(out))
    return report
