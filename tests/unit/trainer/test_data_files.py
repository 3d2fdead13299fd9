"""Your own events and catalogue from files: formats, the stream's rules, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trainer.data.files import DataFileError, load_catalogue, load_events, load_files
from trainer.teacher import catalog_text


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


CATALOGUE = (
    "item_id,title,category,description\ni1,Alien,Sci-Fi,A crew meets a creature\ni2,Heat,,\n"
)


def test_csv_catalogue_and_events_sorted_stably(tmp_path: Path) -> None:
    cat = _write(tmp_path, "cat.csv", CATALOGUE)
    ev = _write(
        tmp_path,
        "ev.csv",
        "user_id,item_id,ts,event_type\nu2,i2,20,purchase\nu1,i1,10,\nu1,i2,10,click\n",
    )
    inter, items = load_files(ev, cat)
    assert items.ids == ["i1", "i2"] and items.titles == ["Alien", "Heat"]
    assert items.texts == ["Alien - Sci-Fi. A crew meets a creature", "Heat"]
    assert items.texts[0] == catalog_text(
        {"title": "Alien", "category": "Sci-Fi", "description": "A crew meets a creature"}
    )  # what the trainer service reads on the items topic
    assert inter.user_ids == ["u2", "u1"]
    assert inter.ts.tolist() == [10.0, 10.0, 20.0]  # by ts, then file order
    assert inter.item.tolist() == [0, 1, 1] and inter.event.tolist() == [0, 0, 1]
    assert np.array_equal(inter.user, [1, 1, 0])


def test_json_lines_work_too(tmp_path: Path) -> None:
    cat = _write(tmp_path, "cat.jsonl", json.dumps({"item_id": 5, "title": "Five"}) + "\n")
    ev = _write(tmp_path, "ev.jsonl", json.dumps({"user_id": 1, "item_id": 5, "ts": 3}) + "\n\n")
    inter, items = load_files(ev, cat)
    assert items.ids == ["5"] and inter.user_ids == ["1"] and len(inter) == 1


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ("user_id,item_id,ts\nu1,i1,1700000000000\n", "row 1: ts_future: .*not milliseconds"),
        ("user_id,item_id,ts\nu1,nope,1\nu1,nada,2\n", "2 event\\(s\\) name items that are not in"),
        ("user_id,item_id\nu1,i1\n", "missing column\\(s\\) ts"),
        ("user_id,item_id,ts,colour\nu1,i1,1,red\n", "unknown column\\(s\\) colour"),
        ("user_id,item_id,ts,event_type\nu1,i1,1,view\n", "event_type 'view' is not one of"),
        ("user_id,item_id,ts\nu 1,i1,1\n", "row 1: bad_id"),
        ("user_id,item_id,ts\nu1,i1,soon\n", "ts 'soon' is not a number"),
    ],
)
def test_bad_events_are_refused_naming_file_and_row(tmp_path: Path, events, message) -> None:
    items = load_catalogue(_write(tmp_path, "cat.csv", CATALOGUE))
    with pytest.raises(DataFileError, match=message):
        load_events(_write(tmp_path, "ev.csv", events), items)


@pytest.mark.parametrize(
    ("catalogue", "message"),
    [
        ("item_id,title\ni1,A\ni1,B\n", "item_id 'i1' repeats row 1"),
        ("item_id,title\ni1,\n", "item 'i1' has no title"),
        ("item_id\ni1\n", "missing column\\(s\\) title"),
        ("", "is empty"),
    ],
)
def test_bad_catalogues_are_refused(tmp_path: Path, catalogue, message) -> None:
    with pytest.raises(DataFileError, match=message):
        load_catalogue(_write(tmp_path, "cat.csv", catalogue))


def test_missing_files_and_unknown_formats(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="not found"):
        load_catalogue(tmp_path / "nope.csv")
    with pytest.raises(DataFileError, match="unknown format '.xlsx'"):
        load_catalogue(_write(tmp_path, "cat.xlsx", "x"))


def test_parquet_is_read_with_pyarrow_or_refused_saying_so(tmp_path: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        p = _write(tmp_path, "cat.parquet", "not really parquet")
        with pytest.raises(DataFileError, match="reading Parquet needs pyarrow"):
            load_catalogue(p)
        return
    p = tmp_path / "cat.parquet"
    pq.write_table(pa.table({"item_id": ["a"], "title": ["A"]}), p)
    assert load_catalogue(p).ids == ["a"]
