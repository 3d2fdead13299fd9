"""Bring your own data: events and a catalogue from files (``coldstream train --events FILE
--catalogue FILE``, and ``evaluate``).

* **Events** -- columns ``user_id, item_id, ts`` and optionally ``event_type`` (``click``,
  the default, or ``purchase``). ``ts`` is seconds since the epoch; every row passes the
  stream's own rules (:func:`coldstream.core.events.validate_event`: ids 1-128 characters
  without whitespace, a timestamp in seconds -- milliseconds are refused as ``ts_future``).
* **Catalogue** -- columns ``item_id, title`` and optionally ``description``, ``category``.
  The teacher reads ``"Title - Category. Description"`` (what the ``items`` topic gives it,
  :func:`trainer.teacher.catalog_text`).

Formats, by file name: ``.csv`` (a header row; ``.tsv``: tab-separated), ``.jsonl`` /
``.ndjson`` / ``.json`` (one JSON object per line), ``.parquet`` (needs ``pyarrow``).
A bad row is an error naming the file, the row and the rule (:class:`DataFileError`);
nothing is dropped silently. Events are sorted stably by ``(ts, file order)``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from coldstream.core.events import EVENT_TYPES, REASONS, Event, validate_event
from coldstream.core.records import event_payload
from trainer.data.interactions import Interactions, Items

__all__ = ["DataFileError", "catalogue_text", "load_catalogue", "load_events", "load_files"]

EVENT_COLUMNS = ("user_id", "item_id", "ts", "event_type")
CATALOGUE_COLUMNS = ("item_id", "title", "description", "category")
MAX_ERRORS_SHOWN = 3


class DataFileError(ValueError):
    """A data file is missing, unreadable or has a bad row (the message names which)."""


def catalogue_text(title: str, category: str | None = None, description: str | None = None) -> str:
    """The teacher's text of a catalogue row: ``"Title - Category. Description"``."""
    from trainer.teacher import catalog_text

    return catalog_text({"title": title, "category": category, "description": description})


def _rows(path: Path, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row number, row)`` of a CSV, TSV, JSON-lines or Parquet file (1 = first data row)."""
    if not path.is_file():
        raise DataFileError(f"{what} file {path} not found")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            if not reader.fieldnames:
                raise DataFileError(f"{what} file {path} is empty (it needs a header row)")
            for i, row in enumerate(reader, 1):
                yield i, {k.strip(): v for k, v in row.items() if k is not None}
    elif suffix in (".jsonl", ".ndjson", ".json"):
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    raise DataFileError(f"{path} line {i}: not JSON ({e})") from None
                if not isinstance(obj, dict):
                    raise DataFileError(f"{path} line {i}: expected a JSON object per line")
                yield i, obj
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataFileError(
                f"{path}: reading Parquet needs pyarrow (pip install pyarrow), or give CSV / "
                f"JSON lines"
            ) from None
        for i, row in enumerate(pq.read_table(path).to_pylist(), 1):
            yield i, row
    else:
        raise DataFileError(
            f"{what} file {path}: unknown format {suffix or '(no suffix)'!r}; use .csv, .tsv, "
            f".jsonl or .parquet"
        )


def _check_columns(path: Path, row: dict[str, Any], required: tuple[str, ...], known) -> None:
    missing = [c for c in required if c not in row]
    if missing:
        raise DataFileError(
            f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(row) or 'none'})"
        )
    unknown = [c for c in row if c not in known]
    if unknown:
        raise DataFileError(
            f"{path}: unknown column(s) {', '.join(unknown)}; allowed: {', '.join(known)}"
        )


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def load_catalogue(path: Path | str) -> Items:
    """The item table of a catalogue file (ids unique, titles non-empty)."""
    path = Path(path)
    ids: list[str] = []
    titles: list[str] = []
    texts: list[str] = []
    seen: dict[str, int] = {}
    for n, row in _rows(path, "catalogue"):
        if n == 1:
            _check_columns(path, row, ("item_id", "title"), CATALOGUE_COLUMNS)
        iid = "" if row.get("item_id") is None else str(row["item_id"]).strip()
        if not iid or any(c.isspace() for c in iid) or len(iid) > 128:
            raise DataFileError(
                f"{path} row {n}: item_id {iid!r} must be 1-128 characters without whitespace"
            )
        if iid in seen:
            raise DataFileError(f"{path} row {n}: item_id {iid!r} repeats row {seen[iid]}")
        title = row.get("title")
        if _blank(title):
            raise DataFileError(f"{path} row {n}: item {iid!r} has no title")
        seen[iid] = n
        category = None if _blank(row.get("category")) else str(row["category"]).strip()
        desc = None if _blank(row.get("description")) else str(row["description"]).strip()
        ids.append(iid)
        titles.append(str(title).strip())
        texts.append(catalogue_text(str(title).strip(), category, desc))
    if not ids:
        raise DataFileError(f"catalogue file {path} has no items")
    return Items(ids=ids, titles=titles, texts=texts)


def load_events(path: Path | str, items: Items) -> Interactions:
    """The interactions of an events file, against the catalogue ``items``: every row is
    checked with the stream's rules and must name a catalogue item."""
    path = Path(path)
    row_of = {iid: i for i, iid in enumerate(items.ids)}
    users: dict[str, int] = {}
    u_col: list[int] = []
    i_col: list[int] = []
    ts_col: list[float] = []
    ev_col: list[int] = []
    unknown: list[str] = []
    n_unknown = 0
    for n, row in _rows(path, "events"):
        if n == 1:
            _check_columns(path, row, ("user_id", "item_id", "ts"), EVENT_COLUMNS)
        etype = "click" if _blank(row.get("event_type")) else str(row["event_type"]).strip()
        if etype not in EVENT_TYPES:
            raise DataFileError(
                f"{path} row {n}: event_type {etype!r} is not one of {', '.join(EVENT_TYPES)}"
            )
        try:
            ts = float(row["ts"])
        except (TypeError, ValueError):
            raise DataFileError(f"{path} row {n}: ts {row['ts']!r} is not a number") from None
        user, item = row.get("user_id"), row.get("item_id")
        raw = event_payload(
            "" if user is None else str(user).strip(),
            "" if item is None else str(item).strip(),
            event_id=f"row-{n}",
            ts=ts,
        )
        ev = validate_event(raw, "purchases" if etype == "purchase" else "clicks")
        if not isinstance(ev, Event):
            hint = " (ts is seconds since the epoch, not milliseconds)" if ts > 1e11 else ""
            reason = getattr(ev, "reason", "invalid")
            detail = getattr(ev, "detail", REASONS.get(reason, ""))
            raise DataFileError(f"{path} row {n}: {reason}: {detail}{hint}")
        r = row_of.get(ev.item_id)
        if r is None:
            n_unknown += 1
            if len(unknown) < MAX_ERRORS_SHOWN:
                unknown.append(f"row {n} item {ev.item_id!r}")
            continue
        u_col.append(users.setdefault(ev.user_id, len(users)))
        i_col.append(r)
        ts_col.append(ev.ts)
        ev_col.append(EVENT_TYPES[etype])
    if n_unknown:
        raise DataFileError(
            f"{path}: {n_unknown} event(s) name items that are not in the catalogue "
            f"({'; '.join(unknown)}); add them to the catalogue"
        )
    if not u_col:
        raise DataFileError(f"events file {path} has no events")
    ts_arr = np.asarray(ts_col, dtype=np.float64)
    order = np.lexsort((np.arange(len(ts_arr)), ts_arr))  # stable: (ts, file order)
    return Interactions(
        user=np.asarray(u_col, dtype=np.int64)[order],
        item=np.asarray(i_col, dtype=np.int64)[order],
        ts=ts_arr[order],
        event=np.asarray(ev_col, dtype=np.int64)[order],
        user_ids=list(users),
    )


def load_files(events: Path | str, catalogue: Path | str) -> tuple[Interactions, Items]:
    """``(interactions, items)`` from an events file and a catalogue file."""
    items = load_catalogue(catalogue)
    return load_events(events, items), items
