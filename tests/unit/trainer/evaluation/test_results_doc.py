"""docs/results.md's cold-start section and the README's results sentence are generated from
the committed report (``coldstream evaluate --docs``): a stale page or README fails here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from trainer.evaluation.reports import (
    DOC_BEGIN,
    DOC_END,
    readme_results_sentence,
    results_doc_section,
    update_results_doc,
)

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[4]
REPORT = ROOT / "reports" / "coldstart-ml100k.json"


@pytest.fixture(scope="module")
def report() -> dict:
    return json.loads(REPORT.read_text(encoding="utf-8"))


def test_the_results_page_holds_the_section_generated_from_the_report(report):
    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    a, b = text.index(DOC_BEGIN), text.index(DOC_END) + len(DOC_END)
    assert text[a:b] == results_doc_section(report), (
        "docs/results.md is stale: run `coldstream evaluate --docs`"
    )


def test_the_readme_says_what_the_report_says(report):
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert " ".join(readme_results_sentence(report).split()) in readme


def test_the_report_covers_at_least_five_splits_with_every_row(report):
    assert len(report["splits"]) >= 5
    rows = set(report["results_ci"])
    for row in (
        "popularity",
        "itemknn",
        "ease",
        "sasrec",
        "text_kshot",
        "teacher_zero_shot",
        "teacher_adapted",
        "student_id_only",
        "student_ce",
        "student_uniform",
        "student_kd",
    ):
        assert row in rows, row
    assert {"ce_minus_id_only", "kd_minus_ce", "kd_minus_uniform", "floors"} <= set(report)


def test_regenerating_rewrites_only_the_section(tmp_path, report):
    doc = tmp_path / "results.md"
    shutil.copy(ROOT / "docs" / "results.md", doc)
    text = doc.read_text(encoding="utf-8")
    a, b = text.index(DOC_BEGIN), text.index(DOC_END) + len(DOC_END)
    doc.write_text(text[:a] + DOC_BEGIN + "\nold figures\n" + DOC_END + text[b:], encoding="utf-8")
    assert update_results_doc(report, doc) is True
    assert doc.read_text(encoding="utf-8") == text
    assert update_results_doc(report, doc) is False
    doc.write_text("# no section\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no generated cold-start section"):
        update_results_doc(report, doc)
