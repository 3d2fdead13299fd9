"""The fault table of docs/reliability.md is generated from reports/faults.json (never
hand-edited: ``coldstream bench faults --docs`` regenerates it)."""

from __future__ import annotations

import json
from pathlib import Path

from devtools.faults.command import markdown

ROOT = Path(__file__).resolve().parents[3]


def test_the_reliability_table_is_the_report() -> None:
    rows = json.loads((ROOT / "reports" / "faults.json").read_text())
    assert markdown(rows) in (ROOT / "docs" / "reliability.md").read_text()


def test_the_table_has_one_line_per_row() -> None:
    row = {"scenario": "s", "events_in": 3, "outputs": 2, "dlq": 1, "lost": 0, "duplicated": 0}
    md = markdown([{**row, "recovery_seconds": None}, {**row, "recovery_seconds": 1.234}])
    assert md.splitlines()[2:] == [
        "| s | 3 | 2 | 1 | 0 | 0 | – |",
        "| s | 3 | 2 | 1 | 0 | 0 | 1.23 |",
    ]
