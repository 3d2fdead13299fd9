"""Bring your own data through the real CLI: a small CSV dataset made here trains a checkpoint
(``coldstream train --events --catalogue``) whose fallback is the training data's popular
items, and runs the evaluation protocol (``coldstream evaluate --smoke``) on it, whose report
says what text the teacher read. The real MiniLM teacher, no mocks."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.cli_errors import run_cli
from trainer.data.synthetic import SyntheticConfig, synthetic_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("byo")
    inter, items = synthetic_dataset(
        SyntheticConfig(n_users=240, n_items=120, n_events=4800, n_topics=8, seed=2)
    )
    with open(d / "events.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "ts", "event_type"])
        for u, i, t, e in zip(inter.user, inter.item, inter.ts, inter.event, strict=True):
            w.writerow([inter.user_ids[u], items.ids[i], int(t), "purchase" if e else "click"])
    with open(d / "catalogue.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "title", "category", "description"])
        for iid, title, text in zip(items.ids, items.titles, items.texts, strict=True):
            w.writerow([iid, title, text.split(" - ")[-1], f"a thing called {title}"])
    return d


@pytest.mark.slow
def test_a_csv_dataset_trains_through_the_cli(dataset: Path) -> None:
    res = run_cli(
        [
            "train",
            "--events",
            "events.csv",
            "--catalogue",
            "catalogue.csv",
            "--quick",
            "--epochs",
            "2",
            "--model-store",
            "store",
        ],
        {},
        cwd=dataset,
        timeout_s=600,
    )
    assert res.code == 0, res.stderr[-3000:]
    assert "checkpoint store/v000001" in res.stdout
    ck = dataset / "store" / "v000001"
    ids = json.loads((ck / "items.json").read_text())["ids"]
    assert len(ids) == 120
    # the fallback before any traffic: the training users' most frequent items, not catalogue order
    from trainer.data.files import load_files
    from trainer.student.fitting import fit_users

    inter, items = load_files(dataset / "events.csv", dataset / "catalogue.csv")
    seq_map = inter.sequences()
    seqs = [seq_map[u] for u in range(len(inter.user_ids))]
    train_u, _ = fit_users(seqs, seed=0, val_share=0.1)
    counts = Counter(items.ids[i] for u in train_u for i in seqs[u][0])
    popular = json.loads((ck / "metrics.json").read_text())["popular_items"]
    assert (
        popular[:20]
        == [i for i, _ in sorted(counts.items(), key=lambda kv: (-kv[1], items.ids.index(kv[0])))][
            :20
        ]
    )
    assert popular[:20] != ids[:20]


@pytest.mark.slow
def test_a_csv_dataset_evaluates_through_the_cli(dataset: Path) -> None:
    res = run_cli(
        [
            "evaluate",
            "--events",
            "events.csv",
            "--catalogue",
            "catalogue.csv",
            "--smoke",
            "--out",
            "rep/byo.json",
        ],
        {},
        cwd=dataset,
        timeout_s=600,
    )
    assert res.code == 0, res.stderr[-3000:]
    report = json.loads((dataset / "rep" / "byo.json").read_text())
    assert report["protocol"]["dataset"].startswith("events.csv + catalogue.csv")
    text = report["protocol"]["item_text"]
    assert text["rule"].startswith("title - category. description")
    assert " - " in text["example"] and ". a thing called " in text["example"]
    assert np.isfinite(report["results"]["student_kd"]["k=1"]["ndcg@10"])
    assert (dataset / "rep" / "byo.png").stat().st_size > 0
