"""Your own events and catalogue from files: formats, the stream's rules, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trainer.data.files import (
    DataFileError,
    LoadNotes,
    input_options,
    load_catalogue,
    load_events,
    load_files,
    parse_ts,
)
from trainer.teacher.encoder import catalog_text


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
        ("user_id,item_id,ts\nu1,i1,4102444800000\n", "row 1: ts_future"),
        ("user_id,item_id,ts\nu1,nope,1\nu1,nada,2\n", "has no events on catalogue items"),
        ("user_id,item_id\nu1,i1\n", "missing column\\(s\\) ts .*--columns ts=YOURS"),
        (
            "user_id,item_id,ts,event_type\nu1,i1,1,like\n",
            "event_type 'like' is not one of.*--event-map like=click",
        ),
        ("user_id,item_id,ts\nu1,i1,2024-13-45\n", "is not a number or an ISO-8601 time"),
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


def test_a_real_export_loads_with_notes(tmp_path: Path) -> None:
    """A byte-order mark, extra columns, ISO-8601 and epoch-ms times, a `view` event and an
    item deleted from the catalogue: loaded, and every change said in a note."""
    cat = tmp_path / "cat.csv"
    cat.write_text("\ufeffsku,name,price\ni1,Alien,9.99\ni2,Heat,4.99\n", encoding="utf-8")
    ev = tmp_path / "ev.csv"
    ev.write_text(
        "\ufeffuser_id,sku,ts,event_type,session_id\n"
        "u1,i1,2024-05-01T12:00:00Z,view,s1\n"
        "u1,gone,2024-05-01T12:00:01Z,view,s1\n"
        "u2,i2,1714564800500,order,s2\n",
        encoding="utf-8",
    )
    notes = LoadNotes()
    opts = input_options("item_id=sku,title=name", "order=purchase")
    inter, items = load_files(ev, cat, opts, notes)
    assert items.ids == ["i1", "i2"] and items.titles == ["Alien", "Heat"]
    assert inter.ts.tolist() == [1714564800.0, 1714564800.5]
    assert inter.event.tolist() == [0, 1] and inter.user_ids == ["u1", "u2"]
    text = "\n".join(notes.lines)
    assert "cat.csv: ignored column(s) price" in text and "read sku as item_id" in text
    assert "ev.csv: ignored column(s) session_id" in text
    assert "event type 'view' read as click" in text and "'order' read as purchase" in text
    assert "ISO-8601" in text and "epoch milliseconds" in text
    assert "dropped 1 of 3 event(s) on items not in the catalogue (row 2 item 'gone')" in text
    assert notes.dropped_unknown == 1 and notes.rows == 3
    with pytest.raises(DataFileError, match="1 event\\(s\\) name items that are not in"):
        load_files(ev, cat, input_options("item_id=sku,title=name", unknown_items="fail"))


def test_the_bom_no_longer_hides_the_first_column(tmp_path: Path) -> None:
    cat = tmp_path / "cat.csv"
    cat.write_bytes("item_id,title\ni1,A\n".encode("utf-8-sig"))
    assert load_catalogue(cat).ids == ["i1"]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1_700_000_000, 1_700_000_000.0),
        ("1700000000", 1_700_000_000.0),
        (1_700_000_000_250, 1_700_000_000.25),
        ("2023-11-14T22:13:20Z", 1_700_000_000.0),
        ("2023-11-14 22:13:20", 1_700_000_000.0),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000.0),
    ],
)
def test_timestamps(value, seconds) -> None:
    assert parse_ts(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("columns", "event_map", "message"),
    [
        ("sku=item_id", None, "sku is not one of our columns"),
        ("item_id", None, "expected NAME=VALUE"),
        (None, "view=like", "map view to click or purchase"),
    ],
)
def test_bad_adapter_flags_are_one_line(columns, event_map, message) -> None:
    with pytest.raises(DataFileError, match=message):
        input_options(columns, event_map)
