"""Report writers, in one place: every evaluation writes JSON, Markdown and a PNG.

* ``coldstream evaluate`` (:mod:`trainer.evaluate`): :func:`write_coldstart_report`;
* ``coldstream evaluate --stream`` (:mod:`devtools.prequential`): :func:`write_prequential_report`.

Pure functions of the report dict (no training, no broker): the tests render them on
hand-made reports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from trainer.prequential import KS


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
    md = [
        f"# Cold-start evaluation: {p['dataset']}",
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
    stem.with_suffix(".md").write_text("\n".join(md))
    plot_coldstart(report, stem.with_suffix(".png"))


def plot_coldstart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ks = [1, 3, 5]
    MODELS = list(report["results"])
    for m in MODELS:
        axes[0].plot(
            ks, [report["results"][m][f"k={k}"]["ndcg@10"] for k in ks], marker="o", label=m
        )
    axes[0].set(
        xlabel="revealed events k", ylabel="NDCG@10 (test users)", title="warm items", xticks=ks
    )
    axes[0].legend(fontsize=8)
    names = list(MODELS)
    axes[1].bar(range(len(names)), [report["results"][m]["cold_items"]["ndcg@10"] for m in names])
    axes[1].set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    axes[1].set(ylabel="NDCG@10", title="cold items (ranked among cold items)")
    for name, curve in report["curves"].items():
        xs = [r["epoch"] for r in curve]
        axes[2].plot(xs, [r["val"] for r in curve], marker=".", label=name)
    axes[2].set(
        xlabel="epoch", ylabel="validation criterion", title="training curves (validation users)"
    )
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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


def plot_prequential(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
    ks = [f"after_{k}" for k in KS]
    x = np.arange(len(ks))
    sys_v = [report["ndcg@10"][k] or 0 for k in ks]
    pop_v = [report["reference_popularity"]["ndcg@10"][k] or 0 for k in ks]
    a.bar(x - 0.2, sys_v, 0.4, label="system (worker output)")
    a.bar(x + 0.2, pop_v, 0.4, label="stream popularity (reference)")
    for v, d in report["by_model_version"].items():
        a.plot(
            x,
            [d["ndcg@10"][k] if d["ndcg@10"][k] is not None else np.nan for k in ks],
            "o--",
            ms=4,
            label=f"model v{v}",
        )
    a.set_xticks(x, [k.replace("_", " ") + " ev" for k in ks])
    a.set_ylabel("NDCG@10 (next 10 events)")
    a.set_title("New users: quality after k events")
    a.legend(fontsize=7)
    ot = report["over_time"]
    mid = [(r["positions"][0] + r["positions"][1]) / 2 for r in ot]
    b.plot(
        mid,
        [r["ndcg@10"] if r["ndcg@10"] is not None else np.nan for r in ot],
        "o-",
        label="NDCG@10 (k=1,2,3,5)",
    )
    for v, d in report["by_model_version"].items():
        if d.get("first_stream_position"):
            b.axvline(d["first_stream_position"], color="grey", ls=":", lw=1)
            b.text(
                d["first_stream_position"],
                b.get_ylim()[1] * 0.95 if b.get_ylim()[1] else 0.1,
                f" v{v}",
                fontsize=8,
                color="grey",
            )
    b.set_xlabel("stream position (replayed events)")
    b.set_ylabel("NDCG@10")
    b.set_title("Over time (dotted: first output of each version)")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_prequential_report(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = out.with_suffix("")
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    stem.with_suffix(".md").write_text(prequential_markdown(report))
    plot_prequential(report, stem.with_suffix(".png"))
