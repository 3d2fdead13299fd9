"""The evaluation over several user splits (``coldstream evaluate --full``; one split by default).

Every model runs on the same splits (one :class:`~trainer.evaluation.evaluate.Evaluation` per seed, the
teachers loaded once and shared); every choice is made per split on its validation users. The
pooled report keeps the single-split keys (``results``, ``validation``, ``kd_minus_ce``,
``kd_minus_uniform``, ...: means over *all test users of all splits*) and adds ``splits`` (the
seeds), ``per_split`` (each split's figures and choices), ``results_ci`` (95% bootstrap
intervals of each model's NDCG@10 with the number of users), and paired bootstraps over all
test users of all splits (a user's two scores come from the same split) of KD minus CE, minus
the uniform control, minus each baseline (text k-shot included) and minus the best baseline
(chosen per cell on validation users), of CE minus the ID-only student (what the item text
adds), plus ``floors`` (which of the issue's floors hold, stated plainly).

Resumable per split: each finished split is written to ``splits_dir`` (``coldstream evaluate``:
``reports/coldstart/``) as one gzipped JSON file, ``split-seed<seed>-<digest>.json.gz``
(gzipped: five splits' per-user arrays stay small enough to travel with the tree), holding its report
and every per-user metric array; the digest covers every setting that changes the split's
results and the data itself. A rerun reads the finished splits instead of recomputing them, so
an interrupted run resumes where it stopped and gives the same pooled report: a fresh split
goes through the same JSON form as one read back before it is pooled. Files are written
atomically (a temporary file, then a rename): a run killed mid-write leaves no half split.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from trainer.evaluation.evaluate import (
    BASELINES,
    CELLS,
    MOVIELENS,
    VAL_CELLS,
    EvalConfig,
    Evaluation,
)
from trainer.ranking import METRIC_NAMES, paired_bootstrap

Arrays = dict[str, np.ndarray]
"""``{"<part>|<model>|<cell>|<metric>": per-user values}`` of one split."""


SPLIT_FORMAT = 1
"""Version of the per-split file; a file of another version is recomputed."""
ARRAY_DECIMALS = 7
"""Per-user metrics are kept to this many decimals (the report shows five)."""


def data_fingerprint(inter: Any, items: Any) -> str:
    """A short hash of the interactions and the item texts: a split of other data never
    matches."""
    h = hashlib.sha1()
    for a in (inter.user, inter.item, inter.ts, inter.event):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update("\n".join(items.texts).encode())
    return h.hexdigest()[:12]


def split_key(cfg: EvalConfig, seed: int, data_id: str = "") -> str:
    """The key of one split: every setting that changes its results, the data and the seed."""
    conf = {
        k: v for k, v in asdict(cfg).items() if k not in ("progress", "cache_dir", "seed", "n_boot")
    }
    conf["data"] = data_id
    conf["format"] = SPLIT_FORMAT
    if cfg.lora:
        # the LoRA settings in force, defaults included: a changed default is a new key, so an
        # adapter trained under the old one is never read back as the new one's
        from trainer.teacher.lora import LoraConfig

        conf["lora_config"] = asdict(LoraConfig(**cfg.lora_config))
    digest = hashlib.sha1(json.dumps(conf, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"seed{seed}-{digest}"


def split_path(splits_dir: Path, key: str) -> Path:
    return Path(splits_dir) / f"split-{key}.json.gz"


def read_split_text(path: Path) -> str | None:
    """The JSON text of a split file (``None``: not gzip, cut short or not UTF-8: recompute)."""
    try:
        return gzip.decompress(path.read_bytes()).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError):
        return None


def split_arrays(ev: Evaluation) -> Arrays:
    return {
        f"{part}|{model}|{cell}|{metric}": np.asarray(vals)
        for model, parts in ev.results.items()
        for part, cells in parts.items()
        for cell, metrics in cells.items()
        for metric, vals in metrics.items()
    }


def split_payload(key: str, seed: int, dataset: str, report: dict[str, Any], arrays: Arrays) -> str:
    """One finished split as JSON text: its report and its per-user arrays."""
    return json.dumps(
        {
            "format": SPLIT_FORMAT,
            "key": key,
            "seed": seed,
            "dataset": dataset,
            "report": report,
            "arrays": {
                k: np.round(np.asarray(v, dtype=np.float64), ARRAY_DECIMALS).tolist()
                for k, v in arrays.items()
            },
        },
        default=float,
    )


def parse_split(text: str, key: str) -> tuple[dict[str, Any], Arrays] | None:
    """``(report, arrays)`` of a split file's text, or ``None`` when it is not that split."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("format") != SPLIT_FORMAT or doc.get("key") != key:
        return None
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in doc["arrays"].items()}
    return doc["report"], arrays


def write_atomically(path: Path, text: str) -> None:
    """``text`` gzipped into ``path`` (no time stamp in the header: the same split, the same
    bytes), through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(gzip.compress(text.encode("utf-8"), mtime=0))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # a report file like the others (mkstemp makes it private)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_one(
    cfg: EvalConfig,
    seed: int,
    *,
    data: Any,
    teachers: dict[str, Any],
    dataset: str,
    splits_dir: Path | None = None,
    data_id: str = "",
) -> tuple[dict[str, Any], Arrays]:
    """One split's report and arrays: read from ``splits_dir`` when that split is finished,
    else run and (with ``splits_dir``) written there. Either way in the form read back."""
    key = split_key(cfg, seed, data_id)
    path = split_path(splits_dir, key) if splits_dir is not None else None
    text = read_split_text(path) if path is not None and path.is_file() else None
    if text is not None:
        done = parse_split(text, key)
        if done is not None:
            if cfg.progress:
                print(
                    f"[evaluate] split seed {seed}: finished before, read from {path}", flush=True
                )
            return done
    ev = Evaluation(replace(cfg, seed=seed), data=data, teachers=teachers, dataset=dataset)
    report = ev.run()
    teachers.update(ev.teachers)
    text = split_payload(key, seed, dataset, report, split_arrays(ev))
    if path is not None:
        write_atomically(path, text)
    parsed = parse_split(text, key)
    assert parsed is not None
    return parsed


def pooled(
    arrays: list[Arrays], part: str, model: str, cell: str, metric: str = "ndcg@10"
) -> np.ndarray:
    return np.concatenate([a[f"{part}|{model}|{cell}|{metric}"] for a in arrays])


def mean_ci(x: np.ndarray, *, n_boot: int, seed: int) -> dict[str, Any]:
    """Mean of ``x`` and its 95% percentile-bootstrap interval (users resampled), with n."""
    if not len(x):
        return {"mean": 0.0, "ci95": [0.0, 0.0], "n_users": 0}
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return {
        "mean": round(float(x.mean()), 5),
        "ci95": [round(float(lo), 5), round(float(hi), 5)],
        "n_users": int(len(x)),
    }


def combine(
    reports: list[dict[str, Any]],
    arrays: list[Arrays],
    seeds: list[int],
    cfg: EvalConfig,
    *,
    comparison: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The pooled report over splits (see the module doc)."""
    models = [m for m in reports[0]["results"] if all(m in r["results"] for r in reports)]
    nb, s0 = cfg.n_boot, cfg.seed

    def summary(part: str) -> dict[str, Any]:
        return {
            m: {
                c: {k: round(float(pooled(arrays, part, m, c, k).mean()), 5) for k in METRIC_NAMES}
                for c in CELLS
            }
            for m in models
        }

    def boot(a: str, b: str) -> dict[str, Any]:
        return {
            c: paired_bootstrap(
                pooled(arrays, "test", a, c), pooled(arrays, "test", b, c), n_boot=nb, seed=s0
            )
            for c in CELLS
        }

    val = summary("val")
    best_baseline = {
        c: max((b for b in BASELINES if b in models), key=lambda b: val[b][c]["ndcg@10"])
        for c in CELLS
    }
    kd_best = {}
    for c in CELLS:
        kd_best[c] = {
            "baseline": best_baseline[c],
            **paired_bootstrap(
                pooled(arrays, "test", "student_kd", c),
                pooled(arrays, "test", best_baseline[c], c),
                n_boot=nb,
                seed=s0,
            ),
        }
    variants = [m for m in models if m.startswith("student_kd_")]
    first = reports[0]
    protocol = dict(first["protocol"])
    protocol["splits"] = {
        str(seed): {
            "split": r["protocol"]["split"],
            "test_users_per_cell": r["protocol"]["test_users_per_cell"],
            "teacher_chosen": r["protocol"]["teacher"]["chosen"],
            "kd_chosen": r["protocol"]["kd_selection"].get("student_kd_chosen"),
        }
        for seed, r in zip(seeds, reports, strict=True)
    }
    protocol["pooling"] = (
        f"{len(seeds)} user splits (seeds {seeds}); figures are means over all test users of all "
        "splits; intervals: percentile bootstrap over those users (paired within a split)"
    )
    protocol["test_users_per_cell"] = {
        c: int(sum(r["protocol"]["test_users_per_cell"][c] for r in reports)) for c in CELLS
    }
    report = {
        "protocol": protocol,
        "results": summary("test"),
        "validation": val,
        "kd_minus_ce": boot("student_kd", "student_ce"),
        "kd_minus_uniform": boot("student_kd", "student_uniform"),
        "ce_minus_id_only": boot("student_ce", "student_id_only"),
        "timing": {
            "teacher_ms_per_user": round(
                float(np.mean([r["timing"]["teacher_ms_per_user"] for r in reports])), 3
            ),
            "student_ms_per_user": round(
                float(np.mean([r["timing"]["student_ms_per_user"] for r in reports])), 4
            ),
            "stages_seconds": first["timing"]["stages_seconds"],
            "split_seconds": {
                str(s): r["timing"]["total_seconds"] for s, r in zip(seeds, reports, strict=True)
            },
            "total_seconds": 0.0,
        },
        "curves": first["curves"],
        "splits": list(seeds),
        "per_split": {
            str(seed): {
                "results": {m: {c: r["results"][m][c]["ndcg@10"] for c in CELLS} for m in models},
                "validation_criterion": {
                    m: round(
                        float(np.mean([r["validation"][m][c]["ndcg@10"] for c in VAL_CELLS])), 5
                    )
                    for m in models
                },
                "kd_minus_ce": r["kd_minus_ce"],
                "kd_minus_uniform": r["kd_minus_uniform"],
                "ce_minus_id_only": r["ce_minus_id_only"],
                "teacher_chosen": r["protocol"]["teacher"]["chosen"],
                "teachers": r["protocol"]["teacher"]["compared"],
                "kd_selection": r["protocol"]["kd_selection"],
                "baselines": r["protocol"]["baselines"],
            }
            for seed, r in zip(seeds, reports, strict=True)
        },
        "results_ci": {
            m: {c: mean_ci(pooled(arrays, "test", m, c), n_boot=nb, seed=s0) for c in CELLS}
            for m in models
        },
        "kd_minus_baselines": {b: boot("student_kd", b) for b in BASELINES if b in models},
        "kd_minus_best_baseline": kd_best,
        "kd_variants_minus_uniform": {v: boot(v, "student_uniform") for v in variants},
    }
    report["teacher_comparison"] = comparison or teacher_comparison(reports, list(seeds))
    report["timing"]["stages_seconds_per_split"] = {
        str(s): r["timing"]["stages_seconds"] for s, r in zip(seeds, reports, strict=True)
    }
    report["floors"] = floors(report)
    return report


def teacher_val(report: dict[str, Any], teacher: str) -> dict[str, float]:
    """Pooled validation criterion of each adapted variant of ``teacher``."""
    out = {}
    for m, cells in report["validation"].items():
        pre = f"teacher_{teacher}_"
        if m.startswith(pre) and m != pre + "zero_shot":
            out[m[len(pre) :]] = round(float(np.mean([cells[c]["ndcg@10"] for c in VAL_CELLS])), 5)
    return out


def machine() -> dict[str, Any]:
    """Where this run's figures come from: CPU model and count, torch threads, load."""
    import platform

    import torch

    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def teacher_comparison(reports: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """The adapted teacher variants compared on the validation users of ``seeds``' splits:
    each variant's validation criterion (mean over those splits) and the chosen one (best)."""
    crit: dict[str, list[float]] = {}
    test: dict[str, list[float]] = {}
    for r in reports:
        for m, cells in r["validation"].items():
            if m.startswith("teacher_") and not m.endswith(("_zero_shot", "_text_kshot")):
                if m in ("teacher_adapted", "teacher_zero_shot"):
                    continue
                crit.setdefault(m, []).append(
                    float(np.mean([cells[c]["ndcg@10"] for c in VAL_CELLS]))
                )
                test.setdefault(m, []).append(r["results"][m]["k=1"]["ndcg@10"])
    mean = {m: round(float(np.mean(v)), 5) for m, v in crit.items() if len(v) == len(reports)}
    best = max(mean, key=lambda m: mean[m]) if mean else None
    chosen = None
    if best is not None:
        name, _, variant = best[len("teacher_") :].rpartition("_")
        chosen = {"teacher": name, "variant": variant, "row": best}
    return {
        "seeds": list(seeds),
        "criterion": "mean NDCG@10 over k=1,3,5 and cold items, validation users",
        "validation": mean,
        "test_ndcg@10_k=1": {m: round(float(np.mean(v)), 5) for m, v in test.items()},
        "chosen": chosen,
    }


def cfg_for_chosen(cfg: EvalConfig, chosen: dict[str, Any] | None) -> EvalConfig:
    """``cfg`` reduced to the chosen teacher variant (the splits outside ``teacher_seeds``)."""
    if chosen is None:
        return cfg
    from trainer.evaluation.evaluate import teacher_label

    name, lora = chosen["teacher"], chosen["variant"] == "lora"
    values = list(cfg.teachers) or ["minilm"]
    if cfg.teacher_path:
        values[0] = cfg.teacher_path
    value = next((v for v in values if teacher_label(v) == name), name)
    keep_path = bool(cfg.teacher_path) and value == cfg.teacher_path
    return replace(
        cfg, teachers=[name], teacher_path=cfg.teacher_path if keep_path else None, lora=lora
    )


def floors(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's floors, each ``{"met": bool, "detail": str}`` (never softened)."""
    r, out = report["results"], {}
    for b in ("itemknn", "ease", "sasrec", "text_kshot"):
        if b not in r:
            continue
        ks = [
            c for c in ("k=1", "k=3", "k=5") if r["student_kd"][c]["ndcg@10"] <= r[b][c]["ndcg@10"]
        ]
        ci = report["kd_minus_baselines"][b]["k=1"]["ci95"]
        out[f"kd_beats_{b}"] = {
            "met": not ks and ci[0] > 0,
            "detail": f"KD - {b}: "
            + ", ".join(
                f"{c} {report['kd_minus_baselines'][b][c]['mean']:+.4f} {report['kd_minus_baselines'][b][c]['ci95']}"
                for c in ("k=1", "k=3", "k=5")
            )
            + (f"; not above at {ks}" if ks else "")
            + ("" if ci[0] > 0 else "; the k=1 interval is not above zero"),
        }
    for c in ("k=1", "cold_items"):
        d = report["kd_minus_uniform"][c]
        out[f"kd_beats_uniform_{c}"] = {
            "met": d["ci95"][0] > 0,
            "detail": f"KD - uniform control at {c}: {d['mean']:+.4f} {d['ci95']} (n={d['n_users']})",
        }
    mp, ml = teacher_val(report, "mpnet"), teacher_val(report, "minilm")
    comp = report.get("teacher_comparison", {}).get("validation", {})
    if not (mp and ml) and comp:
        mp = {m[len("teacher_mpnet_") :]: v for m, v in comp.items() if "_mpnet_" in m}
        ml = {m[len("teacher_minilm_") :]: v for m, v in comp.items() if "_minilm_" in m}
    if mp and ml:
        seeds = report.get("teacher_comparison", {}).get("seeds", report.get("splits"))
        out["mpnet_at_least_minilm_on_validation"] = {
            "met": bool(max(mp.values()) >= max(ml.values())),
            "detail": f"validation criterion (splits {seeds}), adapted variants: mpnet {mp}, "
            f"MiniLM {ml}",
        }
    else:
        out["mpnet_at_least_minilm_on_validation"] = {
            "met": None,
            "detail": "not measured in this run (teachers: "
            + ", ".join(sorted(report["protocol"]["teacher"]["compared"]))
            + ")",
        }
    return out


def run_splits(
    cfg: EvalConfig,
    seeds: list[int],
    out: Path | None,
    *,
    load: Any = None,
    teachers: dict[str, Any] | None = None,
    dataset: str = MOVIELENS,
    splits_dir: Path | None = None,
    teacher_seeds: list[int] | None = None,
) -> dict[str, Any]:
    """Every split of ``seeds``, pooled; written to ``out`` (``.json``, ``.md``, ``.png`` and
    ``-splits.png``) unless ``out`` is ``None``. With ``splits_dir``, each finished split is
    kept there and a rerun reads it back (the module doc).

    ``teacher_seeds``: the splits on which the teachers of ``cfg`` (and LoRA, if on) are
    compared; the variant with the best validation criterion pooled over those splits is the
    only teacher run on the other splits (``None``: compared on every split)."""
    from trainer.data import load_movielens

    t0 = time.perf_counter()
    data = (load or load_movielens)()
    data_id = data_fingerprint(*data)
    shared = dict(teachers or {})
    compare = [s for s in seeds if teacher_seeds is None or s in teacher_seeds]
    rest = [s for s in seeds if s not in compare]
    if rest and not compare:
        raise ValueError(f"teacher_seeds {teacher_seeds} share no seed with {seeds}")
    by_seed: dict[int, tuple[dict[str, Any], Arrays]] = {}
    sdir = None if splits_dir is None else Path(splits_dir).expanduser()

    read_back: list[int] = []

    def one(c: EvalConfig, seed: int) -> None:
        if sdir is not None and split_path(sdir, split_key(c, seed, data_id)).is_file():
            read_back.append(seed)
        by_seed[seed] = run_one(
            c, seed, data=data, teachers=shared, dataset=dataset, splits_dir=sdir, data_id=data_id
        )

    for seed in compare:
        one(cfg, seed)
    comparison = teacher_comparison([by_seed[s][0] for s in compare], compare)
    rest_cfg = cfg_for_chosen(cfg, comparison["chosen"]) if rest else cfg
    for seed in rest:
        one(rest_cfg, seed)
    reports = [by_seed[s][0] for s in seeds]
    arrays = [by_seed[s][1] for s in seeds]
    report = combine(reports, arrays, list(seeds), cfg, comparison=comparison)
    # the work the report stands on: every split's own run time (a split read back from an
    # earlier run counts its recorded time) plus this run's pooling
    this_run = time.perf_counter() - t0
    timing = report["timing"]
    timing["this_run_seconds"] = round(this_run, 1)
    timing["splits_read_back"] = read_back
    timing["total_seconds"] = round(
        this_run + sum(float(timing["split_seconds"][str(s)]) for s in read_back), 1
    )
    timing["machine"] = machine()
    if out is not None:
        from trainer.evaluation.reports import write_coldstart_report, write_multisplit_extras

        write_coldstart_report(report, Path(out))
        write_multisplit_extras(report, Path(out))
    return report
