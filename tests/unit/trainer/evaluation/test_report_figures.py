"""The pictures say how sure they are: the cold-start figure has a 95% interval on every point
and the number of test users; the prequential figure compares each slice with popularity on
the same slice, writes n at every point and marks the points resting on too few users."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from matplotlib.container import ErrorbarContainer

from trainer.evaluation.reports import MIN_SLICE_USERS, coldstart_figure, prequential_figure

CELLS = ("k=1", "k=3", "k=5", "cold_items", "cold_items_mixed")


def _coldstart(models=("popularity", "student_kd"), with_ci=True) -> dict:
    res = {m: {c: {"ndcg@10": 0.2 + 0.1 * i} for c in CELLS} for i, m in enumerate(models)}
    report = {
        "protocol": {"test_users_per_cell": {"k=1": 95, "k=3": 94, "k=5": 90, "cold_items": 61}},
        "results": res,
        "curves": {"student_kd": [{"epoch": 1, "val": 0.1}, {"epoch": 2, "val": 0.2}]},
    }
    if with_ci:
        report["results_ci"] = {
            m: {c: {"mean": v["ndcg@10"], "ci95": [v["ndcg@10"] - 0.05, v["ndcg@10"] + 0.04],
                    "n_users": 95} for c, v in cells.items()}
            for m, cells in res.items()
        }  # fmt: skip
    return report


def _labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels()]


def test_coldstart_points_have_intervals_and_n() -> None:
    fig = coldstart_figure(_coldstart())
    warm, cold, _ = fig.axes
    bars = [c for c in warm.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2  # one interval series per model
    low = bars[1].lines[2][0].get_segments()[0][:, 1]  # the k=1 bar of student_kd
    assert low.tolist() == pytest.approx([0.25, 0.34])
    assert _labels(warm) == ["k=1\nn=95", "k=3\nn=94", "k=5\nn=90"]
    assert "n=61" in cold.get_title() and "95% CI" in cold.get_ylabel()
    bar_container = next(c for c in cold.containers if hasattr(c, "errorbar"))
    assert bar_container.errorbar is not None  # an interval on every cold-item bar
    assert len(bar_container.errorbar.lines[2][0].get_segments()) == 2
    plt.close(fig)


def test_coldstart_without_intervals_says_so() -> None:
    fig = coldstart_figure(_coldstart(with_ci=False))
    warm = fig.axes[0]
    assert not [c for c in warm.containers if isinstance(c, ErrorbarContainer)]
    assert "no intervals" in warm.get_ylabel()
    plt.close(fig)


def _prequential(slice_n=(80, 12, 60), with_reference=True) -> dict:
    ks = ("after_1", "after_2", "after_3", "after_5")
    over = []
    for b, n in enumerate(slice_n):
        row = {"bucket": b, "positions": [b * 100, b * 100 + 99], "n": n, "ndcg@10": 0.2 + b / 10,
               "versions": {"1": n}}  # fmt: skip
        if with_reference:
            row["reference_popularity"] = 0.1 + b / 100
        over.append(row)
    return {
        "ndcg@10": dict.fromkeys(ks, 0.25),
        "n_users": dict.fromkeys(ks, 118),
        "reference_popularity": {"ndcg@10": dict.fromkeys(ks, 0.15)},
        "by_model_version": {
            "1": {"ndcg@10": dict.fromkeys(ks, 0.27), "n": dict.fromkeys(ks, 90)},
            "5": {
                "ndcg@10": dict.fromkeys(ks, 0.40),
                "n": dict.fromkeys(ks, 11),
                "first_stream_position": 150,
            },
        },  # fmt: skip
        "over_time": over,
    }


def test_prequential_marks_small_slices_and_draws_the_slice_reference() -> None:
    fig = prequential_figure(_prequential())
    by_k, over = fig.axes
    lines = {ln.get_label(): ln for ln in over.get_lines()}
    ref = lines["stream popularity, same slice"]
    assert ref.get_ydata().tolist() == pytest.approx([0.10, 0.11, 0.12])
    few = lines[f"system, n < {MIN_SLICE_USERS}"]
    assert few.get_xdata().tolist() == [149.5] and few.get_markerfacecolor() == "none"
    notes = [t.get_text() for t in over.texts]
    assert {"n=80", "n=12", "n=60"} <= set(notes)
    # the late version with 11 users is hollow and says "few"; the other version is filled
    version_notes = [t.get_text() for t in by_k.texts]
    assert "11 few" in version_notes and "90" in version_notes
    assert _labels(by_k)[0] == "after 1 ev\nn=118"
    plt.close(fig)


def test_prequential_without_slice_reference_says_so() -> None:
    fig = prequential_figure(_prequential(with_reference=False))
    over = fig.axes[1]
    assert "stream popularity, same slice" not in [ln.get_label() for ln in over.get_lines()]
    assert any("no per-slice popularity" in t.get_text() for t in over.texts)
    plt.close(fig)
