"""The cold-start evaluation protocol (``coldstream evaluate``): one split, every model.

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
* Models: popularity, ItemKNN, EASE (lambda chosen on validation), SASRec (full CE, early
  stopping on validation), text k-shot (:class:`~trainer.evaluation.baselines.TextKShot`: the
  mean of the revealed items' stock text vectors, cosine against every item's, no training:
  what text alone gives); for every teacher of ``cfg.teachers`` (MiniLM by default; mpnet
  when installed): zero-shot, frozen encoder + towers (:mod:`trainer.teacher.adapt`) and, with
  ``cfg.lora``, LoRA on the encoder + towers (:mod:`trainer.teacher.lora`); the best teacher variant
  on validation users is ``teacher_adapted`` and distils the students: CE only, the uniform
  control (label smoothing, the best of ``kd_grid``) and KD (the best of ``kd_variants`` x
  ``kd_grid``: the temperature KL, plus the DLLM2Rec ranking term and the student's item
  vectors initialised from the teacher's, :mod:`trainer.teacher.init`). Every choice is made
  on *validation* users; test users are only scored, once, at the end. The ablation
  ``student_id_only`` (:meth:`Evaluation.train_id_only`) is the CE student with its text
  inputs zeroed: what the item text adds to the student.
* Paired bootstrap 95% intervals (users resampled) of NDCG@10 for KD - CE and KD -
  uniform control, per cell. Several splits: :mod:`trainer.evaluation.multisplit`.

The run is an :class:`Evaluation`: one method per step (data and split, baselines, each
teacher, the choice of teacher, the students, the report), each filling what the next ones
read. :func:`trainer.evaluation.multisplit.run_splits` runs it on one split or many and writes ``<out>.json``,
``<out>.md`` and ``<out>.png`` (:mod:`trainer.evaluation.reports`).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coldstream.core.student import Student, StudentConfig
from trainer.data import Interactions, Items, load_movielens, tie_share
from trainer.evaluation.baselines import EASE, ItemKNN, Popularity, TextKShot
from trainer.evaluation.sasrec import SASRec, SASRecConfig
from trainer.ranking import paired_bootstrap, summarize
from trainer.student import pipeline
from trainer.student.features import (
    EvalSet,
    cold_sets,
    drop_items,
    pick_cold_items,
    split_users,
    teacher_positions,
    warm_sets,
)
from trainer.student.training import (
    Examples,
    Seq,
    TrainConfig,
    student_scores,
)
from trainer.teacher.adapt import (
    HeadConfig,
    TeacherHead,
    calibrate_temperature,
    fit_head,
    zero_shot_logits,
)
from trainer.teacher.encoder import HISTORY_ITEMS, teacher_features
from trainer.teacher.init import init_from_teacher
from trainer.teacher.vector_cache import CachedEncoder

BASELINES = ("popularity", "itemknn", "ease", "sasrec", "text_kshot")
STUDENTS = ("student_id_only", "student_ce", "student_uniform", "student_kd")
MODELS = (*BASELINES, "teacher_zero_shot", "teacher_adapted", *STUDENTS)
"""The fixed rows of every report; per-teacher rows (``teacher_<name>_<variant>``) and per-KD
variant rows (``student_kd_<variant>``) follow them (:meth:`Evaluation.model_names`)."""
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

KD_VARIANTS: list[dict[str, Any]] = [
    {"name": "kl"},
    {
        "name": "kl+rank+init",
        "rank_weight": 1.0,
        "rank_kind": "dllm2rec",
        "rank_k": 10,
        "init": True,
    },
]
"""The KD variants tried (each with every ``kd_grid`` pair): the temperature KL alone, and KL
+ the DLLM2Rec ranking term + the student's item vectors initialised from the teacher's."""


@dataclass
class EvalConfig:
    seed: int = 0
    cold_share: float = 0.1
    teacher_path: str | None = None
    """A local encoder folder; when given it replaces the first of :attr:`teachers`."""
    teachers: list[str] = field(default_factory=lambda: ["minilm"])
    """Teachers compared (``minilm``, ``mpnet`` once installed, or encoder folders)."""
    teacher_cache: str = "~/.cache/coldstream/teachers"
    """Where installed teachers live (``coldstream teacher install``)."""
    lora: bool = False
    """Also fine-tune each teacher's encoder with LoRA (:mod:`trainer.teacher.lora`)."""
    lora_config: dict[str, Any] = field(default_factory=dict)
    """Overrides of :class:`trainer.teacher.lora.LoraConfig`."""
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
    """(alpha, T) pairs tried for every KD variant and for the uniform control."""
    kd_variants: list[dict[str, Any]] = field(
        default_factory=lambda: [dict(v) for v in KD_VARIANTS]
    )
    ease_lambdas: list[float] = field(default_factory=lambda: [50.0, 150.0, 400.0, 1000.0])
    """EASE's L2 weight, chosen on validation users."""
    sasrec: dict[str, Any] = field(
        default_factory=lambda: {
            "epochs": 60,
            "patience": 5,
            "lr": 2e-3,
            "max_len": 30,
            "batch_size": 256,
            "max_events": 100,
        }
    )
    """Overrides of :class:`trainer.evaluation.sasrec.SASRecConfig`."""
    n_boot: int = 2000
    progress: bool = True
    cache_dir: str | None = None
    """Cache teacher encoder outputs here (keyed by teacher, adapter and text) between runs."""


ITEM_VECTORS = ("0.5", "1.0", "concat")
"""Item-side LoRA: the item vectors its towers read, chosen on validation users
(:func:`item_side_vectors`)."""


def item_side_vectors(stock: np.ndarray, adapted: np.ndarray, how: str) -> np.ndarray:
    """Unit item vectors from the stock and the adapted encoder's: ``"concat"`` puts both side
    by side (the towers weigh them); a number ``m`` interpolates, ``(1 - m) * stock + m *
    adapted``, in output space (as WiSE-FT interpolates weights, Wortsman et al., 2022): the
    stock vectors keep what the text says about items no interaction moved, the cold items
    above all."""
    if how == "concat":
        v = np.concatenate([adapted, stock], axis=1)
    else:
        m = float(how)
        v = (1.0 - m) * stock + m * adapted
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return v.astype(np.float32)


def _val_score(cells: dict[str, dict[str, np.ndarray]]) -> float:
    """Model selection criterion on validation users: mean NDCG@10 over k=1,3,5 and cold items."""
    return float(np.mean([cells[c]["ndcg@10"].mean() for c in VAL_CELLS]))


def teacher_label(value: str | None, path: Path | None = None) -> str:
    """A teacher's short name in row names: ``minilm``, ``mpnet`` or the folder's name."""
    if value in (None, "", "minilm"):
        return "minilm"
    if value == "mpnet":
        return "mpnet"
    return Path(str(path or value)).name.lower().replace("-", "_")


@dataclass
class TeacherVariant:
    """One adapted teacher: its head on its features (stock or LoRA encoder)."""

    head: TeacherHead
    feats: dict[str, dict[str, np.ndarray]]
    tfeats: np.ndarray
    val: float
    curve: list[dict]
    adapter: dict[str, Any] | None = None
    item_vecs: np.ndarray | None = None
    """The item vectors the head scores (``None``: the run's stock vectors; an item-side
    adapter's own)."""

    def vecs(self, run: TeacherRun) -> np.ndarray:
        return run.item_vecs if self.item_vecs is None else self.item_vecs


@dataclass
class TeacherRun:
    """One teacher on one split: stock item vectors and features, and its adapted variants."""

    name: str
    teacher: Any
    item_vecs: np.ndarray
    feats: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    tfeats: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    variants: dict[str, TeacherVariant] = field(default_factory=dict)
    ms_per_user: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)


def event_rule(dataset: str, inter: Interactions) -> str:
    """What the run's clicks and purchases are, written from the data it read."""
    purchases = int(np.count_nonzero(inter.event == 1))
    clicks = len(inter) - purchases
    source = (
        "MovieLens ratings: >= 4 is a purchase, else a click (trainer.data.movielens)"
        if dataset.startswith("MovieLens")
        else "the file's event_type column through the event map (trainer.data.files)"
    )
    return f"{clicks} clicks, {purchases} purchases; {source}"


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
    """One run of the protocol on one split. ``load()`` gives ``(interactions, items)``
    (default: MovieLens-100K); ``teachers`` maps teacher names to loaded encoders (default:
    each of ``cfg.teachers`` is built in :meth:`teacher_runs`; ``teacher`` is a shorthand for
    one). :meth:`run` runs the steps in order and returns the report; each step can also be
    called on its own, in that order."""

    def __init__(
        self,
        cfg: EvalConfig,
        *,
        load: Callable[[], tuple[Interactions, Items]] | None = None,
        teacher: Any = None,
        teachers: dict[str, Any] | None = None,
        dataset: str = MOVIELENS,
        data: tuple[Interactions, Items] | None = None,
    ) -> None:
        self.cfg = cfg
        self.load = load if data is None else (lambda: data)
        self.teachers: dict[str, Any] = dict(teachers or {})
        if teacher is not None:
            self.teachers.setdefault(
                teacher_label(cfg.teachers[0] if cfg.teachers else None), teacher
            )
        self.dataset = dataset
        self.tc = TrainConfig(**{"seed": cfg.seed, **cfg.train})
        """The students' training (KD fields set per student)."""
        self.t_start = time.perf_counter()
        self.stages: dict[str, float] = {}
        """Seconds per step, in order (the report's ``timing.stages_seconds``)."""
        self.results: dict[str, Results] = {}
        self.curves: dict[str, list] = {}
        self.data: EvalData
        self.runs: dict[str, TeacherRun] = {}
        self.baseline_choice: dict[str, Any] = {}
        self.tpos: list[tuple[int, int]] = []
        """The teacher's budget of training prefixes ``(user, t)``."""
        self.chosen: tuple[str, str] = ("", "")
        """(teacher, variant) chosen on validation users: the KD teacher."""
        self.item_vecs: np.ndarray
        """The students' text inputs: the chosen teacher's stock item vectors."""
        self.teacher_vecs: np.ndarray
        """The item vectors the chosen teacher's head scores (its adapter's, item-side)."""
        """The chosen teacher's stock item vectors: every student's text input."""
        self.feats: dict[str, dict[str, np.ndarray]]
        self.tfeats: np.ndarray
        self.head: TeacherHead
        self.tau = 1.0
        self.teacher_logits: torch.Tensor
        self.perplexity = 0.0
        self.teacher_ms = 0.0
        self.positions: list[tuple[int, int]]
        self.scfg: StudentConfig
        self.ex: Examples
        self.examples: pipeline.TrainingExamples
        self.selection: dict[str, Any] = {}
        self.models: dict[str, Student] = {}
        self.student_ms = 0.0

    # -- bookkeeping -------------------------------------------------------------------------
    def stamp(self, name: str, t: float) -> None:
        """Record the seconds since ``t`` as stage ``name``."""
        self.stages[name] = round(time.perf_counter() - t, 1)
        if self.cfg.progress:
            print(
                f"[evaluate seed {self.cfg.seed}] {name}: {self.stages[name]} s "
                f"(total {time.perf_counter() - self.t_start:.0f} s)",
                flush=True,
            )

    def evaluate_all(self, score_fn: ScoreFn) -> Results:
        """Per-user metrics of ``score_fn`` on every cell of both parts."""
        return {
            part: {c: es.metrics(score_fn(es, part, c)) for c, es in cells.items()}
            for part, cells in self.data.sets.items()
        }

    def val_of(self, name: str) -> float:
        return _val_score(self.results[name]["val"])

    def model_names(self) -> list[str]:
        """Every row of the report: :data:`MODELS`, then per-teacher and per-variant rows."""
        return list(MODELS) + [m for m in self.results if m not in MODELS]

    # -- the steps ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Every step in order; the report."""
        self.prepare_data()
        self.baselines()
        self.teacher_runs()
        self.choose_teacher()
        self.students()
        return self.report()

    def prepare_data(self) -> None:
        t = time.perf_counter()
        inter, items = (self.load or load_movielens)()
        self.data = EvalData.split(inter, items, seed=self.cfg.seed, cold_share=self.cfg.cold_share)
        self.stamp("data", t)

    def baselines(self) -> None:
        """Popularity, ItemKNN, EASE (lambda on validation) and SASRec (early stopping on
        validation), learnt on the training users' warm sequences."""
        t = time.perf_counter()
        d, cfg = self.data, self.cfg
        train = [s[0] for s in d.train_seqs]
        pop = Popularity(d.n_items, seed=cfg.seed).learn(train)
        knn = ItemKNN(d.n_items, seed=cfg.seed).learn(train)
        self.results["popularity"] = self.evaluate_all(
            lambda es, p, c: pop.score([h[0] for h in es.histories])
        )
        self.results["itemknn"] = self.evaluate_all(
            lambda es, p, c: knn.score([h[0] for h in es.histories])
        )
        tried = []
        for lam in cfg.ease_lambdas:
            ease = EASE(d.n_items, lam=lam, seed=cfg.seed).learn(train)
            res = self.evaluate_all(lambda es, p, c, m=ease: m.score([h[0] for h in es.histories]))
            tried.append((_val_score(res["val"]), lam, res))
            self.baseline_choice.setdefault("ease", []).append(
                {"lambda": lam, "val": round(tried[-1][0], 5)}
            )
        best = max(tried, key=lambda x: x[0])
        self.baseline_choice["ease_chosen"] = {"lambda": best[1]}
        self.results["ease"] = best[2]
        self.stamp("baselines", t)

        t = time.perf_counter()
        val = self.data.sets["val"]
        sas = SASRec(
            d.n_items, SASRecConfig(**{"seed": cfg.seed, **cfg.sasrec}), progress=cfg.progress
        )
        sas.learn(
            train,
            validate=lambda m: _val_score(
                {c: val[c].metrics(m.score([h[0] for h in val[c].histories])) for c in VAL_CELLS}
            ),
        )
        self.results["sasrec"] = self.evaluate_all(
            lambda es, p, c: sas.score([h[0] for h in es.histories])
        )
        self.curves["sasrec"] = sas.curve
        self.baseline_choice["sasrec"] = {"epochs": len(sas.curve), **asdict(sas.cfg)}
        self.stamp("sasrec", t)

    # -- teachers ----------------------------------------------------------------------------
    def build_teacher(self, value: str) -> Any:
        from trainer.teacher.encoder import Teacher
        from trainer.teacher.install import resolve_teacher

        return Teacher(resolve_teacher(value, Path(self.cfg.teacher_cache)), device=self.cfg.device)

    def encoder(self, teacher: Any) -> Any:
        """The teacher's encoder through the on-disk cache (when ``cache_dir`` is set)."""
        if not self.cfg.cache_dir:
            return teacher
        from trainer.teacher.lora import base_name

        key = base_name(teacher) + (f"-{teacher.adapter['id']}" if teacher.adapter else "")
        return CachedEncoder(teacher, self.cfg.cache_dir, f"enc-{key}")

    def cell_features(self, enc: Any, item_vecs: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """Teacher features of every val/test cell's revealed histories."""
        texts = self.data.items.texts
        out = {
            p: {
                c: teacher_features(enc, item_vecs, texts, [h[0] for h in es.histories])
                for c, es in cells.items()
                if c != "cold_items_mixed"
            }
            for p, cells in self.data.sets.items()
        }
        for p in out:
            out[p]["cold_items_mixed"] = out[p]["cold_items"]
        return out

    def prefix_features(self, enc: Any, item_vecs: np.ndarray) -> np.ndarray:
        d = self.data
        return teacher_features(
            enc,
            item_vecs,
            d.items.texts,
            [d.train_seqs[u][0][:t_] for u, t_ in self.tpos],
            progress=self.cfg.progress,
        )

    def teacher_runs(self) -> None:
        """Each teacher of ``cfg.teachers``: zero-shot, frozen + towers, LoRA + towers."""
        cfg, d = self.cfg, self.data
        self.tpos = teacher_positions(
            d.train_seqs,
            first=cfg.teacher_first,
            random_more=cfg.teacher_random_more,
            max_prefix=self.tc.max_prefix,
            seed=cfg.seed,
        )
        values = list(cfg.teachers) or ["minilm"]
        if cfg.teacher_path:
            values[0] = cfg.teacher_path
        for value in values:
            name = teacher_label(value)
            if name not in self.teachers:
                self.teachers[name] = self.build_teacher(value)
            self.teacher_run(name, self.teachers[name])

    def teacher_run(self, name: str, teacher: Any) -> TeacherRun:
        t = time.perf_counter()
        d = self.data
        enc = self.encoder(teacher)
        item_vecs = (
            enc.encode(d.items.texts, progress=self.cfg.progress)
            if enc is not teacher
            else teacher.encode_items(d.items.texts, progress=self.cfg.progress)
        )
        run = TeacherRun(name, teacher, item_vecs)
        run.feats = self.cell_features(enc, run.item_vecs)
        run.tfeats = self.prefix_features(enc, run.item_vecs)
        self.runs[name] = run
        self.results[f"teacher_{name}_zero_shot"] = self.evaluate_all(
            lambda es, p, c: zero_shot_logits(run.feats[p][c], run.item_vecs)
        )
        kshot = TextKShot(run.item_vecs)
        self.results[f"teacher_{name}_text_kshot"] = self.evaluate_all(
            lambda es, p, c: kshot.score([h[0] for h in es.histories])
        )
        # the teacher's cost per user: history text encode + scoring, uncached
        es5 = d.sets["test"]["k=5"]
        tt = time.perf_counter()
        f5 = teacher_features(teacher, run.item_vecs, d.items.texts, [h[0] for h in es5.histories])
        zero_shot_logits(f5, run.item_vecs)
        run.ms_per_user = 1000 * (time.perf_counter() - tt) / max(len(es5.histories), 1)
        self.stamp(f"teacher {name}: features of {len(self.tpos)} prefixes + cells", t)

        t = time.perf_counter()
        run.variants["frozen"] = self.fit_variant(run, run.feats, run.tfeats)
        self.results[f"teacher_{name}_frozen"] = self.variant_results(run, "frozen")
        self.curves[f"teacher_{name}_frozen"] = run.variants["frozen"].curve
        self.stamp(f"teacher {name}: frozen + towers", t)
        if self.cfg.lora:
            t = time.perf_counter()
            self.lora_variant(run)
            self.stamp(f"teacher {name}: LoRA + towers", t)
        return run

    def fit_variant(
        self,
        run: TeacherRun,
        feats: dict[str, dict[str, np.ndarray]],
        tfeats: np.ndarray,
        item_vecs: np.ndarray | None = None,
    ) -> TeacherVariant:
        """Towers on ``tfeats`` against ``item_vecs`` (default: the run's stock vectors; early
        stopping on validation users)."""
        d = self.data
        vecs = run.item_vecs if item_vecs is None else item_vecs
        targets = [d.train_seqs[u][0][t_ : t_ + 10] for u, t_ in self.tpos]
        val = self.data.sets["val"]

        def vscore(head: TeacherHead) -> float:
            return _val_score(
                {c: val[c].metrics(head.score(feats["val"][c], vecs)) for c in VAL_CELLS}
            )

        head, curve = fit_head(
            tfeats,
            targets,
            vecs,
            d.warm,
            config=HeadConfig(seed=self.cfg.seed),
            validate=vscore,
            progress=self.cfg.progress,
        )
        return TeacherVariant(head, feats, tfeats, vscore(head), curve, item_vecs=item_vecs)

    def variant_results(self, run: TeacherRun, variant: str) -> Results:
        v = run.variants[variant]
        vecs = v.vecs(run)
        return self.evaluate_all(lambda es, p, c: v.head.score(v.feats[p][c], vecs))

    def lora_variant(self, run: TeacherRun) -> None:
        """LoRA on the encoder (contrastive, hard negatives from the frozen teacher, early
        stopping on validation users), then towers on the adapted features. The adapter is
        kept in ``cache_dir`` (a re-run loads it instead of training)."""
        from trainer.teacher.lora import LoraConfig, detach_lora, fit_lora

        cfg, d, teacher = self.cfg, self.data, run.teacher
        lcfg = LoraConfig(**{"seed": cfg.seed, **cfg.lora_config})
        if lcfg.side == "items":
            self.lora_items_variant(run, lcfg)
            return
        texts = d.items.texts
        from trainer.teacher.encoder import history_text

        hist = [
            history_text([texts[i] for i in d.train_seqs[u][0][:t_]], max_items=HISTORY_ITEMS)
            for u, t_ in self.tpos
        ]
        targets = [d.train_seqs[u][0][t_ : t_ + 10] for u, t_ in self.tpos]
        val = d.sets["val"]

        def vscore(tch: Any) -> float:
            cells = {}
            for c in VAL_CELLS:
                f = teacher_features(tch, run.item_vecs, texts, [h[0] for h in val[c].histories])
                cells[c] = val[c].metrics(zero_shot_logits(f, run.item_vecs))
            return _val_score(cells)

        curve, key = self.adapter(
            run,
            lcfg,
            None,
            targets,
            lambda hard: fit_lora(
                teacher,
                hist,
                targets,
                run.item_vecs,
                hard,
                config=lcfg,
                validate=vscore,
                progress=cfg.progress,
            ),
        )
        import hashlib

        teacher.adapter["id"] = hashlib.sha1(key.encode()).hexdigest()[:12]
        enc = self.encoder(teacher)
        feats = self.cell_features(enc, run.item_vecs)
        tfeats = self.prefix_features(enc, run.item_vecs)
        detach_lora(teacher)
        v = self.fit_variant(run, feats, tfeats)
        v.adapter = {"kind": "lora", **asdict(lcfg), "curve": curve}
        run.variants["lora"] = v
        self.results[f"teacher_{run.name}_lora"] = self.variant_results(run, "lora")
        self.curves[f"teacher_{run.name}_lora_encoder"] = curve
        self.curves[f"teacher_{run.name}_lora"] = v.curve

    def adapter(
        self,
        run: TeacherRun,
        lcfg: Any,
        prefixes: list[np.ndarray] | None,
        targets: list[np.ndarray],
        fit: Callable[[np.ndarray | None], list[dict]],
    ) -> tuple[list[dict], str]:
        """A LoRA adapter on ``run.teacher``: loaded from ``cache_dir`` when one was trained
        with the same settings, else ``fit(hard)`` trains it (``hard``: per training prefix,
        the frozen teacher's top warm items that are neither its next items ``targets`` nor,
        with ``prefixes``, in its history) and it is kept there. Returns the curve and the
        adapter's key."""
        from trainer.teacher.lora import detach_lora, load_adapter, save_adapter

        cfg, d, teacher = self.cfg, self.data, run.teacher
        key = f"lora-{run.name}-seed{cfg.seed}-cold{cfg.cold_share}-n{len(self.tpos)}-" + "-".join(
            f"{k}{v}" for k, v in sorted(asdict(lcfg).items())
        )
        path = (
            Path(cfg.cache_dir).expanduser() / "adapters" / f"{key}.safetensors"
            if cfg.cache_dir
            else None
        )
        detach_lora(teacher)
        if path is not None and path.is_file():
            load_adapter(path, teacher)
            return [{"epoch": 0, "loss": None, "val": None, "note": f"loaded {path.name}"}], key
        hard = None
        if lcfg.hard > 0:
            frozen = run.variants["frozen"].head.score(run.tfeats, run.item_vecs)
            frozen[:, ~d.warm] = -np.inf
            for i, tg in enumerate(targets):
                frozen[i, tg] = -np.inf
                if prefixes is not None:
                    frozen[i, prefixes[i]] = -np.inf
            hard = np.argsort(-frozen, axis=1, kind="stable")[:, : lcfg.hard]
        curve = fit(hard)
        if path is not None:
            save_adapter(path, teacher)
        return curve, key

    def lora_items_variant(self, run: TeacherRun, lcfg: Any) -> None:
        """Item-side LoRA (:func:`trainer.teacher.lora.fit_lora_items`): the adapter encodes
        item texts; a user is a tower over her history's adapted item vectors
        (:func:`trainer.teacher.lora.item_side_features`), so neither training nor scoring
        encodes a history text. Early stopping on the validation users' untrained criterion
        (mean of the last items' adapted vectors, cosine); then towers on those features. The
        adapter is kept in ``cache_dir`` (a re-run loads it instead of training)."""
        from trainer.teacher.lora import (
            detach_lora,
            fit_lora_items,
            item_side_features,
            item_vectors,
        )

        cfg, d, teacher = self.cfg, self.data, run.teacher
        texts = d.items.texts
        prefixes = [d.train_seqs[u][0][:t_] for u, t_ in self.tpos]
        targets = [d.train_seqs[u][0][t_ : t_ + 10] for u, t_ in self.tpos]
        val = d.sets["val"]

        def vscore(tch: Any) -> float:
            vecs = item_vectors(tch, texts)
            cells = {}
            for c in VAL_CELLS:
                f = item_side_features(vecs, [h[0] for h in val[c].histories], HISTORY_ITEMS)
                cells[c] = val[c].metrics(zero_shot_logits(f, vecs))
            return _val_score(cells)

        curve, _ = self.adapter(
            run,
            lcfg,
            prefixes,
            targets,
            lambda hard: fit_lora_items(
                teacher,
                texts,
                prefixes,
                targets,
                hard,
                window=HISTORY_ITEMS,
                config=lcfg,
                validate=vscore,
                progress=cfg.progress,
            ),
        )
        adapted = item_vectors(teacher, texts, progress=cfg.progress)
        detach_lora(teacher)
        tried: list[tuple[float, str, TeacherVariant]] = []
        for how in ITEM_VECTORS:
            vecs = item_side_vectors(run.item_vecs, adapted, how)
            feats = {
                p: {
                    c: item_side_features(vecs, [h[0] for h in es.histories], HISTORY_ITEMS)
                    for c, es in cells.items()
                }
                for p, cells in d.sets.items()
            }
            tfeats = item_side_features(vecs, prefixes, HISTORY_ITEMS)
            cand = self.fit_variant(run, feats, tfeats, item_vecs=vecs)
            tried.append((cand.val, how, cand))
        _, how, v = max(tried, key=lambda x: x[0])
        v.adapter = {
            "kind": "lora",
            **asdict(lcfg),
            "curve": curve,
            "item_vectors": how,
            "item_vectors_tried": {h: round(val, 5) for val, h, _ in tried},
        }
        run.variants["lora"] = v
        self.results[f"teacher_{run.name}_lora"] = self.variant_results(run, "lora")
        self.curves[f"teacher_{run.name}_lora_encoder"] = curve
        self.curves[f"teacher_{run.name}_lora"] = v.curve

    def choose_teacher(self) -> None:
        """The teacher variant with the best validation criterion distils the students: its
        results (``teacher_adapted``, its zero-shot as ``teacher_zero_shot``), its temperature
        (next-item NLL on validation users) and its logits on the training prefixes."""
        t = time.perf_counter()
        best = max(
            ((r.variants[v].val, name, v) for name, r in self.runs.items() for v in r.variants),
            key=lambda x: x[0],
        )
        _, name, variant = best
        self.chosen = (name, variant)
        run = self.runs[name]
        v = run.variants[variant]
        self.teacher_vecs = v.vecs(run)
        self.item_vecs, self.feats, self.tfeats, self.head = (
            run.item_vecs,
            v.feats,
            v.tfeats,
            v.head,
        )
        self.teacher_ms = run.ms_per_user
        self.results["teacher_adapted"] = self.results[f"teacher_{name}_{variant}"]
        self.results["teacher_zero_shot"] = self.results[f"teacher_{name}_zero_shot"]
        self.results["text_kshot"] = self.results[f"teacher_{name}_text_kshot"]
        self.curves["teacher_adapted"] = v.curve
        self.tau = self.calibrate_tau()
        self.teacher_logits = torch.as_tensor(
            self.head.score(self.tfeats, self.teacher_vecs) / self.tau, dtype=torch.float32
        )
        with torch.no_grad():
            p = torch.softmax(self.teacher_logits, -1)
            self.perplexity = float(torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum(-1)).mean())
        self.stamp(f"teacher chosen: {name} {variant}", t)

    def calibrate_tau(self) -> float:
        """Temperature of the chosen teacher's logits on the validation users' warm cells
        (cold and revealed items excluded; target: the next item)."""
        vl, vt = [], []
        for c in ("k=1", "k=3", "k=5"):
            es = self.data.sets["val"][c]
            s = self.head.score(self.feats["val"][c], self.teacher_vecs)
            s[:, self.data.cold] = -np.inf
            for b, h in enumerate(es.histories):
                s[b, h[0]] = -np.inf
            vl.append(s)
            vt.append([g[0] for g in es.gts])
        return calibrate_temperature(np.concatenate(vl), np.concatenate(vt))

    # -- students ----------------------------------------------------------------------------
    def student_cells(self, model: Student, part: str, *, id_only: bool = False) -> Cells:
        """Per-user metrics of a student on every cell of ``part`` (``id_only``: the text
        inputs zeroed, and the cold items, which such a student cannot tell apart, ordered at
        random by a seeded jitter: chance level, not row order)."""
        text = np.zeros_like(self.item_vecs) if id_only else self.item_vecs
        text_t, ids_t = torch.as_tensor(text), torch.as_tensor(self.data.id_index)
        jitter = None
        if id_only:
            rng = np.random.default_rng(self.cfg.seed)
            jitter = np.where(self.data.cold, rng.random(self.data.n_items) * 1e-6, 0.0)
        out = {}
        for c, es in self.data.sets[part].items():
            scores = student_scores(model, text_t, ids_t, es.histories)
            if jitter is not None:
                scores = np.asarray(scores, dtype=np.float64) + jitter
            out[c] = es.metrics(scores)
        return out

    def student_val_score(self, model: Student) -> float:
        return _val_score(self.student_cells(model, "val"))

    def student_examples(self) -> None:
        """The students' training examples (with the teacher's rows) and their configuration."""
        d = self.data
        self.positions = pipeline.as_pairs(
            pipeline.prefixes(d.train_seqs, pipeline.PrefixSpec.of(self.tc, seed=self.cfg.seed))
        )
        self.scfg = StudentConfig(
            n_items=int(d.warm.sum()), text_dim=int(self.item_vecs.shape[1]), **self.cfg.student
        )
        self.examples = pipeline.examples(
            d.train_seqs, self.positions, max_len=self.scfg.max_len, teacher_positions=self.tpos
        )
        self.ex = self.examples.examples

    def init_student(self) -> Student:
        """A student whose item vectors start at the chosen teacher's item tower output."""
        with torch.no_grad():
            self.head.eval()
            tv = self.head.items(torch.as_tensor(self.teacher_vecs)).numpy()
        return init_from_teacher(self.scfg, self.item_vecs, tv, seed=self.cfg.seed)

    def train(
        self,
        teacher_kind: pipeline.KDKind,
        alpha: float,
        temp: float,
        name: str,
        variant: dict[str, Any] | None = None,
    ) -> tuple[Student, list, float]:
        """One student (``teacher_kind``: ``none``, ``model`` or ``uniform``; ``variant``: the
        ranking term and the initialisation, for ``model`` only, or ``id_only``: the text
        inputs zeroed); its curve and best validation score."""
        v = dict(variant or {})
        rank = {k: v[k] for k in ("rank_weight", "rank_kind", "rank_k") if k in v}
        kd = pipeline.Distillation(
            teacher_kind, alpha, temp, **(rank if teacher_kind == "model" else {})
        )
        id_only = bool(v.get("id_only"))
        # id-dropout trains the text path under the ids: with no text it only hurts
        base = replace(self.tc, id_dropout=0.0) if id_only else self.tc
        init = self.init_student() if teacher_kind == "model" and v.get("init") else None
        targets = (
            pipeline.TeacherTargets(self.tpos, self.teacher_logits)
            if teacher_kind == "model"
            else None
        )
        tt = time.perf_counter()
        trained = pipeline.train(
            self.examples,
            pipeline.StudentInputs(
                np.zeros_like(self.item_vecs) if id_only else self.item_vecs,
                self.data.id_index,
                self.data.warm,
                self.scfg,
            ),
            base,
            kd=kd,
            targets=targets,
            validate=(
                (lambda m: _val_score(self.student_cells(m, "val", id_only=True)))
                if id_only
                else self.student_val_score
            ),
            progress=self.cfg.progress,
            desc=name,
            init=init,
        )
        self.stamp(f"train {name}", tt)
        return trained.model, trained.curve, trained.val

    def students(self) -> None:
        """CE; the uniform control (the best of ``kd_grid``); KD: for each variant the best of
        ``kd_grid`` (rows ``student_kd_<variant>``), and the best variant (``student_kd``), all
        on validation; their results and the student's time per user."""
        self.student_examples()
        ce_model, self.curves["student_ce"], _ = self.train("none", 0.0, 1.0, "student_ce")
        self.models = {"student_ce": ce_model}
        id_model, self.curves["student_id_only"], _ = self.train_id_only()
        self.selection["student_kd"] = []
        best = None
        for variant in self.cfg.kd_variants:
            vname = f"student_kd_{variant['name']}"
            m, cv, val, a, t_ = self.select("model", vname, variant)
            self.models[vname], self.curves[vname] = m, cv
            self.selection["student_kd"] += [
                {"variant": variant["name"], **g} for g in self.selection.pop(vname)
            ]
            if best is None or val > best[2]:
                best = (m, cv, val, {"variant": variant["name"], "alpha": a, "T": t_})
        self.models["student_kd"], self.curves["student_kd"] = best[0], best[1]
        self.selection["student_kd_chosen"] = best[3]
        m, cv, _, a, t_ = self.select("uniform", "student_uniform")
        self.models["student_uniform"], self.curves["student_uniform"] = m, cv
        self.selection["student_uniform_chosen"] = {"alpha": a, "T": t_}
        for name, m in self.models.items():
            self.results[name] = {part: self.student_cells(m, part) for part in self.data.sets}
        self.results["student_id_only"] = {
            part: self.student_cells(id_model, part, id_only=True) for part in self.data.sets
        }
        es5 = self.data.sets["test"]["k=5"]
        text_t, ids_t = torch.as_tensor(self.item_vecs), torch.as_tensor(self.data.id_index)
        tt = time.perf_counter()
        for _ in range(3):
            student_scores(self.models["student_kd"], text_t, ids_t, es5.histories)
        self.student_ms = 1000 * (time.perf_counter() - tt) / 3 / max(len(es5.histories), 1)

    def train_id_only(self) -> tuple[Student, list, float]:
        """The ID-only ablation: the CE student (same examples, configuration and early
        stopping, no id-dropout: it would only blank ids) whose text inputs are all zero, so
        every warm item is placed by its id embedding alone (the text projection adds one
        shared bias) and cold items cannot be told apart. An evaluation-only option: the production ``TrainConfig`` has none."""
        return self.train("none", 0.0, 1.0, "student_id_only", {"id_only": True})

    def select(
        self, kind: pipeline.KDKind, name: str, variant: dict[str, Any] | None = None
    ) -> tuple[Student, list, float, float, float]:
        """Train ``name`` for every (alpha, T) of ``kd_grid``; keep the best on validation
        (the first of equals) and record the grid in :attr:`selection`."""
        best = None
        self.selection[name] = []
        for alpha, temp in self.cfg.kd_grid:
            m, cv, v = self.train(kind, alpha, temp, f"{name} a={alpha} T={temp}", variant)
            self.selection[name].append({"alpha": alpha, "T": temp, "val": round(v, 5)})
            if best is None or v > best[2]:
                best = (m, cv, v, alpha, temp)
        return best

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

    def teacher_table(self) -> dict[str, Any]:
        """Each teacher variant's validation criterion (the choice) and costs."""
        return {
            name: {
                "describe": {k: v for k, v in r.teacher.describe().items() if k != "adapter"},
                "ms_per_user": round(r.ms_per_user, 3),
                "val": {v: round(tv.val, 5) for v, tv in r.variants.items()},
                "lora": r.variants["lora"].adapter if "lora" in r.variants else None,
            }
            for name, r in self.runs.items()
        }

    def protocol(self) -> dict[str, Any]:
        """What was done, with every choice (the report's ``protocol``)."""
        from trainer.teacher.encoder import describe_item_text

        cfg, d, tc = self.cfg, self.data, self.tc
        chosen = self.runs[self.chosen[0]]
        return {
            "dataset": self.dataset,
            "interactions": len(d.inter),
            "users": len(d.seqs),
            "items": d.n_items,
            "order": "stable sort by (timestamp, file order); "
            f"{tie_share(d.inter):.0%} of interactions share a timestamp with another of the same user, "
            "so 'the next 10' is partly arbitrary within ties",
            "events": event_rule(self.dataset, d.inter),
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
            "selection": "early stopping, EASE lambda, teacher variant, teacher temperature, KD "
            "variant and alpha/T chosen on validation users only "
            "(mean NDCG@10 over k=1,3,5 and cold items)",
            "item_text": describe_item_text(d.items),
            "baselines": self.baseline_choice,
            "teacher": {
                **chosen.teacher.describe(),
                "chosen": {"teacher": self.chosen[0], "variant": self.chosen[1]},
                "compared": self.teacher_table(),
                "history_items": HISTORY_ITEMS,
                "adaptation": "frozen: encoder frozen + trained residual user/item towers + text "
                "prior, full-catalogue contrastive loss; lora: LoRA adapters on the encoder's "
                "attention, item side (item texts through the adapter; a user is the mean of "
                "her last items' adapted vectors; in-batch + hard negatives), then the same "
                "towers over item vectors only (stock and adapted item vectors mixed or side by "
                "side, chosen on validation); early stopping on validation",
                "tau": self.tau,
                "teacher_perplexity_train_prefixes": round(self.perplexity, 1),
                "teacher_prefixes": len(self.tpos),
                "teacher_prefix_rule": f"all prefixes of length 1..{cfg.teacher_first} + "
                f"{cfg.teacher_random_more} random longer (<= {tc.max_prefix}) "
                "per training user",
            },
            "student": self.scfg.to_dict(),
            "train": asdict(tc),
            "kd_variants": cfg.kd_variants,
            "kd_selection": self.selection,
            "student_examples": len(self.positions),
            "machine": f"{platform.machine()}, torch threads {torch.get_num_threads()}",
        }

    def report(self) -> dict[str, Any]:
        """The report (after every step): protocol, test and validation results, paired
        bootstrap of KD against CE and against the uniform control, of CE against the ID-only
        student (what the text adds), timing, curves."""
        names = self.model_names()
        return {
            "protocol": self.protocol(),
            "results": {name: self.cell_summary(name, "test") for name in names},
            "validation": {name: self.cell_summary(name, "val") for name in names},
            "kd_minus_ce": self.boot("student_kd", "student_ce"),
            "kd_minus_uniform": self.boot("student_kd", "student_uniform"),
            "ce_minus_id_only": self.boot("student_ce", "student_id_only"),
            "timing": {
                "teacher_ms_per_user": round(self.teacher_ms, 3),
                "student_ms_per_user": round(self.student_ms, 4),
                "stages_seconds": self.stages,
                "total_seconds": round(time.perf_counter() - self.t_start, 1),
            },
            "curves": self.curves,
        }
