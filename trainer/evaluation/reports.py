"""Report writers, in one place: every evaluation writes JSON, Markdown and a PNG.

* ``coldstream evaluate`` (:mod:`trainer.evaluation.evaluate`): :func:`write_coldstart_report`;
* ``coldstream evaluate --stream`` (:mod:`devtools.prequential`): :func:`write_prequential_report`.

Pure functions of the report dict (no training, no broker): the tests render them on
hand-made reports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from trainer.evaluation.prequential import KS


def markdown_table(report: dict[str, Any]) -> str:
    """The cold-start report's results and paired-bootstrap tables (Markdown)."""
    res = report["results"]
    MODELS, CELLS = list(res), list(report["kd_minus_ce"])
    lines = [
        "| model | NDCG@10 k=1 | k=3 | k=5 | cold items | cold (mixed) | Recall@20 k=1 | HR@10 k=1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in MODELS:
        r = res[m]
        lines.append(
            f"| {m} | {r['k=1']['ndcg@10']:.3f} | {r['k=3']['ndcg@10']:.3f} | {r['k=5']['ndcg@10']:.3f} "
            f"| {r['cold_items']['ndcg@10']:.3f} | {r['cold_items_mixed']['ndcg@10']:.3f} "
            f"| {r['k=1']['recall@20']:.3f} | {r['k=1']['hr@10']:.3f} |"
        )
    lines += [
        "",
        "Paired bootstrap (test users resampled, 95%) of NDCG@10 differences:",
        "",
        "| cell | KD - CE | 95% CI | KD - uniform | 95% CI |",
        "|---|---|---|---|---|",
    ]
    for c in CELLS:
        a, b = report["kd_minus_ce"][c], report["kd_minus_uniform"][c]
        lines.append(
            f"| {c} | {a['mean']:+.4f} | [{a['ci95'][0]:+.4f}, {a['ci95'][1]:+.4f}] "
            f"| {b['mean']:+.4f} | [{b['ci95'][0]:+.4f}, {b['ci95'][1]:+.4f}] |"
        )
    return "\n".join(lines)


def verdict(report: dict[str, Any]) -> list[str]:
    """Plain statements of which floors hold (never softened)."""
    r = report["results"]
    out = []
    smoke = report.get("protocol", {}).get("smoke")
    if smoke:
        out.append(f"- **{smoke}.** The statements below are what this smoke run gave.")
    kd, ce, un = r["student_kd"], r["student_ce"], r["student_uniform"]
    for c in ("k=1", "k=3", "k=5", "cold_items"):
        beats = kd[c]["ndcg@10"] > max(r["popularity"][c]["ndcg@10"], r["itemknn"][c]["ndcg@10"])
        out.append(
            f"- KD student {'beats' if beats else 'does NOT beat'} popularity and ItemKNN at {c}."
        )
    z, a = r["teacher_zero_shot"]["k=1"]["ndcg@10"], r["teacher_adapted"]["k=1"]["ndcg@10"]
    out.append(f"- Adapted teacher / zero-shot teacher at k=1: {a / max(z, 1e-9):.1f}x.")
    for c in ("k=1", "cold_items"):
        d1, d2 = report["kd_minus_ce"][c], report["kd_minus_uniform"][c]
        out.append(
            f"- {c}: KD - CE = {d1['mean']:+.4f} (CI {d1['ci95']}), KD - uniform control = "
            f"{d2['mean']:+.4f} (CI {d2['ci95']}); "
            + (
                "the teacher's knowledge helps here (interval above zero against the control)."
                if d2["ci95"][0] > 0
                else "no gain attributable to the teacher's knowledge "
                "(the interval against the uniform control includes or is below zero)."
            )
        )
    better = all(
        kd[c]["ndcg@10"] > max(ce[c]["ndcg@10"], un[c]["ndcg@10"]) for c in ("k=1", "cold_items")
    )
    out.append(
        f"- KD {'improves' if better else 'does NOT improve'} on both CE-only and the uniform control "
        "at k=1 and on cold items (point estimates)."
    )
    return out


def write_coldstart_report(report: dict[str, Any], out: Path) -> None:
    """``<out>.json``, ``<out>.md`` and ``<out>.png`` of ``coldstream evaluate``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = out.with_suffix("") if out.suffix in (".json", ".md", ".png") else out
    with open(stem.with_suffix(".json"), "w") as f:
        json.dump(report, f, indent=1, default=float)
    p = report["protocol"]
    smoke = "SMOKE run (pipeline check, not a result) -- " if p.get("smoke") else ""
    md = [
        f"# Cold-start evaluation: {smoke}{p['dataset']}",
        "",
        *([f"**{p['smoke']}.**", ""] if p.get("smoke") else []),
        *[f"- {line}" for line in (p.get("data") or {}).get("lines", [])],
        *([""] if p.get("data") else []),
        f"Events: {p['events']}." if p.get("events") else "",
        "",
        f"Split seed {p['split']['seed']}: {p['split']['train_users']}/{p['split']['val_users']}/"
        f"{p['split']['test_users']} users (train/val/test), {p['cold_items']['n']} cold items. "
        f"Test users per cell: {p['test_users_per_cell']}.",
        "",
        f"Order: {p['order']}.",
        "",
        markdown_table(report),
        "",
        "## Verdict",
        "",
        *verdict(report),
        "",
        f"Timing: teacher {report['timing']['teacher_ms_per_user']} ms/user, student "
        f"{report['timing']['student_ms_per_user']} ms/user (batch of test users, CPU); "
        f"whole run {report['timing']['total_seconds']} s.",
        "",
        f"KD selection on validation users: `{json.dumps(p['kd_selection'])}`.",
        "",
    ]
    if isinstance(p.get("item_text"), dict):  # what the teacher read of each item
        t = p["item_text"]
        md += [f"Item text the teacher read: {t.get('rule')}; e.g. `{t.get('example')}`.", ""]
    stem.with_suffix(".md").write_text("\n".join(md))
    plot_coldstart(report, stem.with_suffix(".png"))


def _interval(report: dict[str, Any], model: str, cell: str) -> tuple[float, float, float] | None:
    """``(mean, low, high)`` of a model's NDCG@10 in a cell from ``results_ci`` (95%
    bootstrap over test users), or ``None`` when the report has no intervals."""
    ci = (report.get("results_ci") or {}).get(model, {}).get(cell)
    if not ci:
        return None
    return float(ci["mean"]), float(ci["ci95"][0]), float(ci["ci95"][1])


def plot_coldstart(report: dict[str, Any], path: Path) -> None:
    """``coldstart_figure`` written to ``path``."""
    import matplotlib.pyplot as plt

    fig = coldstart_figure(report)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def coldstart_figure(report: dict[str, Any]) -> Any:
    """NDCG@10 against k (warm items) and on cold items, each point with its 95% interval
    (``results_ci``) and the number of test users n; the training curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ks = [1, 3, 5]
    MODELS = list(report["results"])
    n_users = report["protocol"].get("test_users_per_cell", {})
    with_ci = bool(report.get("results_ci"))
    for i, m in enumerate(MODELS):
        means = [report["results"][m][f"k={k}"]["ndcg@10"] for k in ks]
        xs = np.array(ks, dtype=float) + (i - len(MODELS) / 2) * 0.025  # bars apart
        ivs = [_interval(report, m, f"k={k}") for k in ks]
        if all(iv is not None for iv in ivs):
            err = np.array(
                [[mu - iv[1] for mu, iv in zip(means, ivs, strict=True)],
                 [iv[2] - mu for mu, iv in zip(means, ivs, strict=True)]]
            )  # fmt: skip
            axes[0].errorbar(xs, means, yerr=err, marker="o", ms=3, capsize=2, label=m)
        else:
            axes[0].plot(xs, means, marker="o", ms=3, label=m)
    ci_note = "mean, 95% CI" if with_ci else "mean; this report has no intervals"
    axes[0].set(
        xlabel="revealed events k",
        ylabel=f"NDCG@10 ({ci_note})",
        title="warm items",
        xticks=ks,
    )
    axes[0].set_xticklabels([f"k={k}\nn={n_users.get(f'k={k}', '?')}" for k in ks])
    axes[0].legend(fontsize=7, ncol=2)
    names = list(MODELS)
    cold = [report["results"][m]["cold_items"]["ndcg@10"] for m in names]
    ivs = [_interval(report, m, "cold_items") for m in names]
    yerr = None
    if all(iv is not None for iv in ivs):
        yerr = [
            [c - iv[1] for c, iv in zip(cold, ivs, strict=True)],
            [iv[2] - c for c, iv in zip(cold, ivs, strict=True)],
        ]
    axes[1].bar(range(len(names)), cold, yerr=yerr, capsize=2)
    axes[1].set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    axes[1].set(
        ylabel=f"NDCG@10 ({ci_note})",
        title=f"cold items (ranked among cold items; n={n_users.get('cold_items', '?')} users)",
    )
    for name, curve in report["curves"].items():
        xs = [r["epoch"] for r in curve]
        axes[2].plot(xs, [r["val"] for r in curve], marker=".", label=name)
    axes[2].set(
        xlabel="epoch", ylabel="validation criterion", title="training curves (validation users)"
    )
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return fig


def prequential_markdown(report: dict[str, Any]) -> str:
    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.4f}"

    ks = [f"after_{k}" for k in KS]
    lines = [
        "# Prequential cold-start quality through the running system (MovieLens-100K)",
        "",
        "NDCG@10 of the recommendation the worker published after a new user's k-th event, "
        "truth = their next 10 events. See `protocol` in the JSON for every choice.",
        "",
        "| | " + " | ".join(k.replace("_", " ") for k in ks) + " |",
        "|---|" + "---|" * len(ks),
        "| system (all versions) | " + " | ".join(f(report["ndcg@10"][k]) for k in ks) + " |",
        "| users | " + " | ".join(str(report["n_users"][k]) for k in ks) + " |",
        "| stream popularity (reference) | "
        + " | ".join(f(report["reference_popularity"]["ndcg@10"][k]) for k in ks)
        + " |",
        "",
        "## By model version",
        "",
        "| version | "
        + " | ".join(ks)
        + " | all | outputs | first position | gate (cand / curr) |",
        "|---|" + "---|" * (len(ks) + 4),
    ]
    for v, d in report["by_model_version"].items():
        g = d.get("gate")
        gate = (
            f"{g.get('candidate_ndcg@10')} / {g.get('current_ndcg@10')}"
            if isinstance(g, dict)
            else (g or "-")
        )
        lines.append(
            f"| {v} | "
            + " | ".join(f"{f(d['ndcg@10'][k])} (n={d['n'][k]})" for k in ks)
            + f" | {f(d['all'])} | {d.get('outputs', 0)} | {d.get('first_stream_position')} | {gate} |"
        )
    lines += [
        "",
        "## Over time (equal slices of the replayed stream)",
        "",
        "| slice | positions | n | NDCG@10 | versions serving scored events |",
        "|---|---|---|---|---|",
    ]
    for r in report["over_time"]:
        lines.append(
            f"| {r['bucket']} | {r['positions'][0]}-{r['positions'][1]} | {r['n']} | {f(r['ndcg@10'])} | "
            + ", ".join(f"v{v}: {c}" for v, c in r["versions"].items())
            + " |"
        )
    c, p = report["counts"], report["protocol"]
    lines += [
        "",
        f"Replayed {c['stream_events_replayed']} of {p['stream']['of']} stream events at "
        f"{p['stream']['rate_eps']:.0f} ev/s; {c['scored_users']} cold-start users; "
        f"{c['scored_recommendations']} scored recommendations; missing {c['missing']}, "
        f"excluded (possible leak) {c['excluded_possible_leak']}; {c['model_updates']} model updates; "
        f"broker {p['system']['broker']}; total {report['timings_s']['total_s']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


MIN_SLICE_USERS = 30
"""A point (a model version, a slice of the stream) resting on fewer scored recommendations
than this is drawn hollow and labelled ``few``: too few to read a trend from."""


def prequential_figure(report: dict[str, Any]) -> Any:
    """The prequential figure: (a) NDCG@10 after k events, the system against stream
    popularity on the same users, each model version as a point with its n (hollow when
    ``n < MIN_SLICE_USERS``); (b) over the stream, per slice, the system and the popularity
    reference of the same slice, n at every point, slices with too few users marked. A later
    version serves later users, so lines of different versions are never compared on one
    axis of "quality over swaps"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.6))
    ks = [f"after_{k}" for k in KS]
    x = np.arange(len(ks))
    sys_v = [report["ndcg@10"][k] or 0 for k in ks]
    pop_v = [report["reference_popularity"]["ndcg@10"][k] or 0 for k in ks]
    n_all = report.get("n_users", {})
    a.bar(x - 0.2, sys_v, 0.4, label="system, all versions (worker output)")
    a.bar(x + 0.2, pop_v, 0.4, label="stream popularity, same users (reference)")
    versions = list(report["by_model_version"].items())
    for j, (v, d) in enumerate(versions):
        off = -0.3 + 0.6 * (j + 0.5) / max(1, len(versions))
        for i, k in enumerate(ks):
            val, n = d["ndcg@10"][k], d["n"][k]
            if val is None:
                continue
            few = n < MIN_SLICE_USERS
            a.plot(
                x[i] + off,
                val,
                "o",
                ms=5,
                mfc="none" if few else f"C{j + 2}",
                mec=f"C{j + 2}",
                label=f"model v{v} (points: n users)" if i == 0 else None,
            )
            a.annotate(f"{n}{' few' if few else ''}", (x[i] + off, val), fontsize=6,
                       xytext=(2, 2), textcoords="offset points")  # fmt: skip
    a.set_xticks(x, [f"{k.replace('_', ' ')} ev\nn={n_all.get(k, '?')}" for k in ks])
    a.set_ylabel("NDCG@10 (next 10 events)")
    a.set_title("New users: quality after k events (versions serve different users)")
    a.legend(fontsize=6)
    ot = report["over_time"]
    mid = np.array([(r["positions"][0] + r["positions"][1]) / 2 for r in ot])
    val = np.array([r["ndcg@10"] if r["ndcg@10"] is not None else np.nan for r in ot])
    ref = np.array(
        [r["reference_popularity"] if r.get("reference_popularity") is not None else np.nan
         for r in ot]
    )  # fmt: skip
    n = np.array([r["n"] for r in ot])
    few = n < MIN_SLICE_USERS
    b.plot(mid, val, "-", color="C0", lw=1)
    b.plot(mid[~few], val[~few], "o", color="C0", label="system, this slice")
    b.plot(mid[few], val[few], "o", mfc="none", mec="C0", label=f"system, n < {MIN_SLICE_USERS}")
    if np.isfinite(ref).any():
        b.plot(mid, ref, "s--", color="C1", ms=4, label="stream popularity, same slice")
    else:
        b.text(0.5, 0.02, "no per-slice popularity in this report (older run)", fontsize=7,
               transform=b.transAxes, ha="center", color="C1")  # fmt: skip
    for xi, yi, ni in zip(mid, val, n, strict=True):
        if np.isfinite(yi):
            b.annotate(f"n={ni}", (xi, yi), fontsize=6, xytext=(2, 4), textcoords="offset points")
    for v, d in versions:
        if d.get("first_stream_position"):
            b.axvline(d["first_stream_position"], color="grey", ls=":", lw=1)
            b.text(d["first_stream_position"], 1.0, f" v{v}", fontsize=7, color="grey",
                   transform=b.get_xaxis_transform(), va="top")  # fmt: skip
    b.set_xlabel("stream position (replayed events)")
    b.set_ylabel("NDCG@10")
    b.set_title(
        "Over the stream: system vs popularity per slice (dotted: first output of a version)"
    )
    b.title.set_fontsize(9)
    b.legend(fontsize=6)
    fig.tight_layout()
    return fig


def plot_prequential(report: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = prequential_figure(report)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_prequential_report(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = out.with_suffix("")
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    stem.with_suffix(".md").write_text(prequential_markdown(report))
    plot_prequential(report, stem.with_suffix(".png"))


# -- several splits (trainer/evaluation/multisplit.py) -----------------------------------------------------


def multisplit_markdown(report: dict[str, Any]) -> str:
    """The multi-split sections of the cold-start report: pooled intervals with n, the
    differences KD - X over all test users of all splits, per-split figures, the teachers
    compared, what text the teacher read, and the floors (met or not, plainly)."""
    cells = list(report["kd_minus_ce"])
    p = report["protocol"]
    lines = [
        "## Over splits",
        "",
        f"{p.get('pooling', '')}.",
        "",
        "NDCG@10, mean over all test users of all splits [95% bootstrap interval] (n users):",
        "",
        "| model | " + " | ".join(cells) + " |",
        "|---|" + "---|" * len(cells),
    ]
    for m, row in report["results_ci"].items():
        lines.append(
            f"| {m} | "
            + " | ".join(
                f"{row[c]['mean']:.3f} [{row[c]['ci95'][0]:.3f}, {row[c]['ci95'][1]:.3f}] "
                f"(n={row[c]['n_users']})"
                for c in cells
            )
            + " |"
        )
    diffs = {
        "KD - CE": report["kd_minus_ce"],
        "KD - uniform": report["kd_minus_uniform"],
        **{f"KD - {b}": d for b, d in report["kd_minus_baselines"].items()},
        **{f"{v} - uniform": d for v, d in report["kd_variants_minus_uniform"].items()},
        # what the item text adds to the student (reports written before this row lack it)
        **({"CE - ID-only": report["ce_minus_id_only"]} if "ce_minus_id_only" in report else {}),
    }
    lines += [
        "",
        "Paired bootstrap of NDCG@10 differences over all test users of all splits "
        "(mean [95% CI]):",
        "",
        "| difference | " + " | ".join(cells) + " |",
        "|---|" + "---|" * len(cells),
    ]
    for name, d in diffs.items():
        lines.append(
            f"| {name} | "
            + " | ".join(
                f"{d[c]['mean']:+.4f} [{d[c]['ci95'][0]:+.4f}, {d[c]['ci95'][1]:+.4f}]"
                for c in cells
            )
            + " |"
        )
    best = report["kd_minus_best_baseline"]
    lines.append(
        "| KD - best baseline (on validation) | "
        + " | ".join(
            f"{best[c]['mean']:+.4f} [{best[c]['ci95'][0]:+.4f}, {best[c]['ci95'][1]:+.4f}] "
            f"({best[c]['baseline']})"
            for c in cells
        )
        + " |"
    )
    models = list(next(iter(report["per_split"].values()))["results"])
    lines += [
        "",
        "Per split (NDCG@10 at k=1 / k=3 / k=5 / cold items; teacher and KD chosen on validation):",
        "",
        "| seed | " + " | ".join(models) + " | teacher | KD |",
        "|---|" + "---|" * (len(models) + 2),
    ]
    for seed, s in report["per_split"].items():
        r = s["results"]
        kd = s["kd_selection"].get("student_kd_chosen", {})
        lines.append(
            f"| {seed} | "
            + " | ".join(
                " / ".join(f"{r[m][c]:.3f}" for c in ("k=1", "k=3", "k=5", "cold_items"))
                for m in models
            )
            + f" | {s['teacher_chosen']['teacher']} {s['teacher_chosen']['variant']} | "
            + f"{kd.get('variant')} a={kd.get('alpha')} T={kd.get('T')} |"
        )
    lines += teacher_comparison_lines(report)
    lines += ["", "## Floors", ""]
    for name, f in report["floors"].items():
        state = {True: "MET", False: "NOT MET", None: "NOT MEASURED"}[f["met"]]
        lines.append(f"- **{name}: {state}**. {f['detail']}.")
    lines.append("")
    return "\n".join(lines)


def plot_multisplit(report: dict[str, Any], path: Path) -> None:
    """Three panels, every point with its 95% interval and n: NDCG@10 against k per model;
    cold items per model; the KD differences (CE, uniform, baselines) per cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ci = report["results_ci"]
    models = list(ci)
    fig, axes = plt.subplots(1, 3, figsize=(20, 6))
    ks = [1, 3, 5]
    for i, m in enumerate(models):
        xs = np.array(ks) + (i - len(models) / 2) * 0.03
        mean = [ci[m][f"k={k}"]["mean"] for k in ks]
        err = np.array(
            [[ci[m][f"k={k}"]["mean"] - ci[m][f"k={k}"]["ci95"][0] for k in ks],
             [ci[m][f"k={k}"]["ci95"][1] - ci[m][f"k={k}"]["mean"] for k in ks]]
        )  # fmt: skip
        axes[0].errorbar(xs, mean, yerr=err, marker="o", ms=3, capsize=2, label=m)
    n = {k: ci[models[0]][f"k={k}"]["n_users"] for k in ks}
    axes[0].set(
        xlabel="revealed events k",
        ylabel="NDCG@10 (mean, 95% CI)",
        title=f"warm items, all test users of {len(report['splits'])} splits (n = "
        + ", ".join(f"{n[k]}" for k in ks)
        + ")",
        xticks=ks,
    )
    axes[0].legend(fontsize=6, ncol=2)
    cold = [ci[m]["cold_items"] for m in models]
    axes[1].bar(
        range(len(models)),
        [c["mean"] for c in cold],
        yerr=[[c["mean"] - c["ci95"][0] for c in cold], [c["ci95"][1] - c["mean"] for c in cold]],
        capsize=2,
    )
    axes[1].set_xticks(range(len(models)), models, rotation=60, ha="right", fontsize=6)
    axes[1].set(
        ylabel="NDCG@10 (mean, 95% CI)",
        title=f"cold items (ranked among cold items; n = {cold[0]['n_users']})",
    )
    diffs = {
        "KD - CE": report["kd_minus_ce"],
        "KD - uniform": report["kd_minus_uniform"],
        **{f"KD - {b}": d for b, d in report["kd_minus_baselines"].items()},
    }
    cells = ["k=1", "k=3", "k=5", "cold_items"]
    for i, (name, d) in enumerate(diffs.items()):
        xs = np.arange(len(cells)) + (i - len(diffs) / 2) * 0.1
        axes[2].errorbar(
            xs,
            [d[c]["mean"] for c in cells],
            yerr=[[d[c]["mean"] - d[c]["ci95"][0] for c in cells],
                  [d[c]["ci95"][1] - d[c]["mean"] for c in cells]],
            fmt="o", capsize=3, label=name,
        )  # fmt: skip
    axes[2].axhline(0, color="grey", lw=1)
    axes[2].set_xticks(
        range(len(cells)),
        [f"{c}\n(n={report['kd_minus_ce'][c]['n_users']})" for c in cells],
    )
    axes[2].set(ylabel="NDCG@10 difference (paired, 95% CI)", title="KD minus ...")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_multisplit_extras(report: dict[str, Any], out: Path) -> None:
    """After :func:`write_coldstart_report`: the multi-split sections appended to ``<out>.md``
    and ``<out>-splits.png`` (:func:`plot_multisplit`)."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix in (".json", ".md", ".png") else out
    md = stem.with_suffix(".md")
    md.write_text(md.read_text() + "\n" + multisplit_markdown(report))
    plot_multisplit(report, stem.parent / f"{stem.name}-splits.png")


def teacher_comparison_lines(report: dict[str, Any]) -> list[str]:
    """The adapted teachers compared on validation users (reports without it: nothing)."""
    comp = report.get("teacher_comparison")
    if not comp or not comp.get("validation"):
        return []
    chosen = (comp.get("chosen") or {}).get("row")
    lines = [
        "",
        f"Teachers compared on the validation users of split(s) {comp['seeds']} ({comp['criterion']}); "
        "the best teaches on every split:",
        "",
        "| adapted teacher | validation criterion | test NDCG@10 k=1 |",
        "|---|---|---|",
    ]
    for m, v in sorted(comp["validation"].items(), key=lambda kv: -kv[1]):
        t = comp.get("test_ndcg@10_k=1", {}).get(m)
        mark = " (chosen)" if m == chosen else ""
        lines.append(f"| {m}{mark} | {v:.4f} | {'' if t is None else f'{t:.3f}'} |")
    return lines


DOC_BEGIN = "<!-- coldstart: begin (generated from reports/coldstart-ml100k.json by `coldstream evaluate --docs`) -->"
DOC_END = "<!-- coldstart: end -->"
GAINS = (
    ("transfer: text inputs - ID-only (both CE)", "ce_minus_id_only"),
    ("distillation: KD - CE (same inputs)", "kd_minus_ce"),
    ("knowledge: KD - uniform-teacher control", "kd_minus_uniform"),
)
ROW_NAMES = {
    "popularity": "popularity",
    "itemknn": "ItemKNN",
    "ease": "EASE",
    "sasrec": "SASRec (full CE)",
    "text_kshot": "text k-shot (no training)",
    "teacher_zero_shot": "teacher, zero-shot",
    "teacher_adapted": "teacher, adapted (chosen)",
    "student_id_only": "student, ID-only (CE)",
    "student_ce": "student, text inputs (CE)",
    "student_uniform": "student, uniform-teacher control",
    "student_kd": "**student, KD (chosen on validation)**",
}


def _ci(d: dict[str, Any], fmt: str = "+.3f") -> str:
    return f"{d['mean']:{fmt}} [{d['ci95'][0]:{fmt}}, {d['ci95'][1]:{fmt}}]"


def results_doc_section(report: dict[str, Any]) -> str:
    """The cold-start section of ``docs/results.md``: a pure function of the pooled report."""
    p, t = report["protocol"], report["timing"]
    cells = ["k=1", "k=3", "k=5", "cold_items", "cold_items_mixed"]
    n = p["test_users_per_cell"]
    heads = ["k=1", "k=3", "k=5", "cold items", "cold (mixed)"]
    lines = [
        DOC_BEGIN,
        "",
        f"{p['dataset']}: {len(report['splits'])} user splits (seeds {report['splits']}), each "
        "80/10/10 train/validation/test users; every item ranked; the first k events of a test "
        "user revealed, the next 10 the truth. 10% of items are held out of all training "
        "(cold items: ranked among cold items, and among all items in *cold (mixed)*). "
        "Every choice (epochs, teacher, temperature, KD variant and its alpha/T, EASE's lambda) "
        "is made on validation users; test users are scored once. Figures: NDCG@10, mean over "
        f"all test users of all splits (n = {n['k=1']} per k, {n['cold_items']} for cold items) "
        "with a 95% bootstrap interval.",
        "",
        "| model | " + " | ".join(heads) + " |",
        "|---|" + "---|" * len(heads),
    ]
    ci = report["results_ci"]
    for m, label in ROW_NAMES.items():
        if m in ci:
            lines.append(
                f"| {label} | "
                + " | ".join(
                    f"{ci[m][c]['mean']:.3f} [{ci[m][c]['ci95'][0]:.3f}, {ci[m][c]['ci95'][1]:.3f}]"
                    for c in cells
                )
                + " |"
            )
    lines += [
        "",
        "What each part adds (paired bootstrap over the same users, 95%):",
        "",
        "| difference | " + " | ".join(heads) + " |",
        "|---|" + "---|" * len(heads),
    ]
    for label, key in GAINS:
        if key in report:
            lines.append(f"| {label} | " + " | ".join(_ci(report[key][c]) for c in cells) + " |")
    best = report["kd_minus_best_baseline"]
    lines.append(
        "| KD - best baseline (chosen per cell on validation) | "
        + " | ".join(f"{_ci(best[c])} ({best[c]['baseline']})" for c in cells)
        + " |"
    )
    lines += teacher_comparison_lines(report)
    lines += ["", "Floors set by the issue, as measured (never softened):", ""]
    for name, f in report["floors"].items():
        state = {True: "met", False: "**not met**", None: "not measured"}[f["met"]]
        lines.append(f"- `{name}`: {state}. {f['detail']}.")
    mach = t.get("machine") or {}
    split_s = t.get("split_seconds", {})
    lines += [
        "",
        "Cost: "
        + ", ".join(f"split {k} {v / 60:.0f} min" for k, v in split_s.items())
        + (
            f" on {mach.get('cpus')} CPUs ({mach.get('cpu')}, torch threads "
            f"{mach.get('torch_threads')}, load {mach.get('load_average_at_end')} at the end)"
            if mach
            else ""
        )
        + f"; teacher {t['teacher_ms_per_user']} ms per user, student "
        f"{t['student_ms_per_user']} ms per user. Per-split tables, every variant and the "
        "per-stage times: `reports/coldstart-ml100k.md`; plots "
        "`reports/coldstart-ml100k.png`, `reports/coldstart-ml100k-splits.png`.",
        "",
        DOC_END,
    ]
    return "\n".join(lines)


def readme_results_sentence(report: dict[str, Any]) -> str:
    """The README's one-sentence summary of the two gains, at k=1 and on cold items."""
    tr, kd = report["ce_minus_id_only"], report["kd_minus_ce"]
    return (
        f"Offline cold start over {len(report['splits'])} user splits of MovieLens-100K "
        f"({report['protocol']['test_users_per_cell']['k=1']} test users), NDCG@10 with 95% "
        "intervals: reading the item text (the transfer gain: "
        "the same student with and without text inputs) adds "
        f"{_ci(tr['k=1'])} after one event and {_ci(tr['cold_items'])} on cold items; "
        "distilling the teacher on top (KD minus cross-entropy only) adds "
        f"{_ci(kd['k=1'])} after one event and {_ci(kd['cold_items'])} on cold items."
    )


def update_results_doc(report: dict[str, Any], doc: Path) -> bool:
    """Replace the generated section of ``doc`` (between :data:`DOC_BEGIN` and
    :data:`DOC_END`); ``True`` when the file changed."""
    text = Path(doc).read_text(encoding="utf-8")
    a, b = text.find(DOC_BEGIN), text.find(DOC_END)
    if a < 0 or b < a:
        raise ValueError(f"{doc}: no generated cold-start section ({DOC_BEGIN!r} ... {DOC_END!r})")
    new = text[:a] + results_doc_section(report) + text[b + len(DOC_END) :]
    if new != text:
        Path(doc).write_text(new, encoding="utf-8")
    return new != text
