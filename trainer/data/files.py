"""Bring your own data: events and a catalogue from files (``coldstream train --events FILE
--catalogue FILE``, ``evaluate``, ``quickstart`` and ``send --file``).

* **Events** -- columns ``user_id, item_id, ts`` and optionally ``event_type``. ``ts`` is
  epoch seconds, epoch milliseconds (told apart by size: above 1e11 is milliseconds), or an
  ISO-8601 time (``2024-05-01T12:00:00Z``; without a zone: UTC). ``event_type`` goes through
  the event map (:data:`DEFAULT_EVENT_MAP`: ``click``, ``view`` -> click; ``purchase``,
  ``order``, ``buy`` -> purchase; ``--event-map view=click,cart=click`` adds or overrides).
  Every row passes the stream's own rules (:func:`coldstream.core.events.validate_event`:
  ids 1-128 characters without whitespace, a timestamp not in the future).
* **Catalogue** -- columns ``item_id, title`` and optionally ``description``, ``category``.
  The teacher reads ``"Title - Category. Description"`` (what the ``items`` topic gives it,
  :func:`trainer.teacher.encoder.catalog_text`).
* **Real exports** (:class:`InputOptions`): a UTF-8 byte-order mark is stripped; columns are
  renamed by a column map (``--columns item_id=sku,title=name``: our name = the file's);
  other columns are ignored, with a note; events on items missing from the catalogue are
  dropped and counted (``--unknown-items drop``, the default) or refused (``fail``).

Formats, by file name: ``.csv`` (a header row; ``.tsv``: tab-separated), ``.jsonl`` /
``.ndjson`` / ``.json`` (one JSON object per line), ``.parquet`` (needs ``pyarrow``).
A bad row is an error naming the file, the row and the rule (:class:`DataFileError`); what
is ignored or dropped is said in the notes (:attr:`LoadNotes.lines`), never silently.
Events are sorted stably by ``(ts, file order)``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from coldstream.core.errors import DataFileError
from coldstream.core.events import EVENT_TYPES, REASONS, Event, validate_event
from coldstream.core.records import event_payload
from trainer.data.interactions import Interactions, Items

__all__ = [
    "DEFAULT_EVENT_MAP",
    "DataFileError",
    "InputOptions",
    "LoadNotes",
    "catalogue_text",
    "load_catalogue",
    "load_events",
    "load_files",
    "input_options",
    "parse_map",
    "read_event_rows",
    "parse_ts",
]

EVENT_COLUMNS = ("user_id", "item_id", "ts", "event_type")
CATALOGUE_COLUMNS = ("item_id", "title", "description", "category")
MAX_ERRORS_SHOWN = 3
DEFAULT_EVENT_MAP: Mapping[str, str] = {
    "click": "click",
    "view": "click",
    "purchase": "purchase",
    "order": "purchase",
    "buy": "purchase",
}
"""Event types understood without ``--event-map`` (case-insensitive)."""
MS_ABOVE = 1e11
"""Epoch numbers above this are milliseconds (1e11 s is the year 5138; 1e11 ms is 1973)."""


@dataclass(frozen=True)
class InputOptions:
    """How to read a real export (module docstring); the defaults read our own format."""

    columns: Mapping[str, str] = field(default_factory=dict)
    """Our column name -> the file's (``{"item_id": "sku", "title": "name"}``)."""
    event_map: Mapping[str, str] = field(default_factory=dict)
    """The file's event type -> ``click`` or ``purchase``, on top of :data:`DEFAULT_EVENT_MAP`."""
    unknown_items: Literal["drop", "fail"] = "drop"
    """Events on items missing from the catalogue: dropped and counted, or an error."""

    def event_type(self, value: str) -> str | None:
        """``click``/``purchase`` of a file's event type, or ``None`` when unmapped."""
        v = value.strip().lower()
        return {**DEFAULT_EVENT_MAP, **{k.lower(): t for k, t in self.event_map.items()}}.get(v)


@dataclass
class LoadNotes:
    """What a load ignored, converted or dropped (printed by the commands)."""

    lines: list[str] = field(default_factory=list)
    dropped_unknown: int = 0
    rows: int = 0

    def add(self, line: str) -> None:
        if line not in self.lines:
            self.lines.append(line)


def parse_map(text: str | None, *, what: str) -> dict[str, str]:
    """``"a=b,c=d"`` -> ``{"a": "b", "c": "d"}`` (``what``: the flag, for the error)."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise DataFileError(f"{what} {text!r}: expected NAME=VALUE[,NAME=VALUE...]")
        out[key] = value
    return out


def input_options(
    columns: str | None = None, event_map: str | None = None, unknown_items: str = "drop"
) -> InputOptions:
    """:class:`InputOptions` from the flags ``--columns``, ``--event-map`` and
    ``--unknown-items``, checked (a :class:`DataFileError` names the flag)."""
    cols = parse_map(columns, what="--columns")
    known = set(EVENT_COLUMNS) | set(CATALOGUE_COLUMNS)
    bad = sorted(set(cols) - known)
    if bad:
        raise DataFileError(
            f"--columns {columns!r}: {', '.join(bad)} is not one of our columns "
            f"({', '.join(sorted(known))}); write OURS=YOURS, e.g. item_id=sku"
        )
    emap = parse_map(event_map, what="--event-map")
    wrong = sorted(k for k, v in emap.items() if v not in EVENT_TYPES)
    if wrong:
        raise DataFileError(
            f"--event-map {event_map!r}: map {', '.join(wrong)} to click or purchase"
        )
    if unknown_items not in ("drop", "fail"):
        raise DataFileError(f"--unknown-items {unknown_items!r}: drop or fail")
    return InputOptions(columns=cols, event_map=emap, unknown_items=unknown_items)  # type: ignore[arg-type]


def parse_ts(value: Any) -> float:
    """Seconds since the epoch of an epoch number (seconds, or milliseconds above
    :data:`MS_ABOVE`) or an ISO-8601 string (no zone: UTC). ``ValueError`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            x = float(value)
        except (TypeError, ValueError):
            text = str(value).strip()
            if not text or not (text[:4].isdigit() and text[4:5] == "-"):
                raise ValueError(value) from None
            dt = datetime.fromisoformat(text.replace(" ", "T", 1))
        else:
            if x != x or x in (float("inf"), float("-inf")):
                raise ValueError(value)
            return x / 1000.0 if abs(x) > MS_ABOVE else x
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def catalogue_text(title: str, category: str | None = None, description: str | None = None) -> str:
    """The teacher's text of a catalogue row: ``"Title - Category. Description"``."""
    from trainer.teacher.encoder import catalog_text

    return catalog_text({"title": title, "category": category, "description": description})


def _rows(path: Path, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row number, row)`` of a CSV, TSV, JSON-lines or Parquet file (1 = first data row)."""
    if not path.is_file():
        raise DataFileError(f"{what} file {path} not found")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a BOM is dropped
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            if not reader.fieldnames:
                raise DataFileError(f"{what} file {path} is empty (it needs a header row)")
            for i, row in enumerate(reader, 1):
                yield i, {k.strip(): v for k, v in row.items() if k is not None}
    elif suffix in (".jsonl", ".ndjson", ".json"):
        with open(path, encoding="utf-8-sig") as f:
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


def _mapped_rows(
    path: Path,
    what: str,
    required: tuple[str, ...],
    known: tuple[str, ...],
    options: InputOptions,
    notes: LoadNotes,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows with our column names: the column map applied, unknown columns left out (with a
    note), the required ones checked on the first row."""
    source = {ours: theirs for ours, theirs in options.columns.items() if ours in known}
    for n, row in _rows(path, what):
        if n == 1:
            present = set(row)
            have = {c: source.get(c, c) for c in known if source.get(c, c) in present}
            missing = [c for c in required if c not in have]
            if missing:
                hint = "; map yours with --columns " + ",".join(f"{c}=YOURS" for c in missing)
                raise DataFileError(
                    f"{path}: missing column(s) {', '.join(missing)} "
                    f"(found: {', '.join(row) or 'none'}){hint}"
                )
            used = set(have.values())
            ignored = [c for c in row if c not in used]
            if ignored:
                notes.add(f"{path.name}: ignored column(s) {', '.join(ignored)}")
            renamed = [f"{theirs} as {ours}" for ours, theirs in have.items() if ours != theirs]
            if renamed:
                notes.add(f"{path.name}: read {', '.join(renamed)}")
        yield n, {c: row[src] for c, src in have.items()}


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def load_catalogue(
    path: Path | str, options: InputOptions | None = None, notes: LoadNotes | None = None
) -> Items:
    """The item table of a catalogue file (ids unique, titles non-empty)."""
    path = Path(path)
    options = options or InputOptions()
    notes = notes if notes is not None else LoadNotes()
    ids: list[str] = []
    titles: list[str] = []
    texts: list[str] = []
    seen: dict[str, int] = {}
    rows = _mapped_rows(path, "catalogue", ("item_id", "title"), CATALOGUE_COLUMNS, options, notes)
    for n, row in rows:
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


def read_event_rows(
    path: Path | str, options: InputOptions | None = None, notes: LoadNotes | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row, event object)`` of an events file through the adapters: our column names,
    ``ts`` in epoch seconds, ``event_type`` ``click`` or ``purchase`` (``coldstream send
    --file`` sends these; :func:`load_events` trains on them)."""
    path = Path(path)
    options = options or InputOptions()
    notes = notes if notes is not None else LoadNotes()
    converted: set[str] = set()
    for n, row in _mapped_rows(
        path, "events", ("user_id", "item_id", "ts"), EVENT_COLUMNS, options, notes
    ):
        raw_type = "click" if _blank(row.get("event_type")) else str(row["event_type"]).strip()
        etype = options.event_type(raw_type)
        if etype is None or etype not in EVENT_TYPES:
            raise DataFileError(
                f"{path} row {n}: event_type {raw_type!r} is not one of "
                f"{', '.join(sorted(DEFAULT_EVENT_MAP))}; map it with --event-map "
                f"{raw_type}=click (or =purchase)"
            )
        if raw_type != etype and raw_type not in converted:
            converted.add(raw_type)
            notes.add(f"{path.name}: event type {raw_type!r} read as {etype}")
        try:
            ts = parse_ts(row["ts"])
        except (TypeError, ValueError, OverflowError):
            raise DataFileError(
                f"{path} row {n}: ts {row['ts']!r} is not a number or an ISO-8601 time"
            ) from None
        kind = "iso" if isinstance(row["ts"], str) and "-" in row["ts"][1:] else None
        if kind is None:
            try:
                kind = "ms" if abs(float(row["ts"])) > MS_ABOVE else None
            except (TypeError, ValueError):
                kind = None
        if kind and kind not in converted:
            converted.add(kind)
            notes.add(
                f"{path.name}: ts read as "
                + ("ISO-8601 (no zone: UTC)" if kind == "iso" else "epoch milliseconds")
            )
        user, item = row.get("user_id"), row.get("item_id")
        yield (
            n,
            {
                "user_id": "" if user is None else str(user).strip(),
                "item_id": "" if item is None else str(item).strip(),
                "ts": ts,
                "event_type": etype,
            },
        )


def load_events(
    path: Path | str,
    items: Items,
    options: InputOptions | None = None,
    notes: LoadNotes | None = None,
) -> Interactions:
    """The interactions of an events file, against the catalogue ``items``: every row is
    checked with the stream's rules; rows on unknown items are dropped and counted (or
    refused: ``options.unknown_items``)."""
    path = Path(path)
    options = options or InputOptions()
    notes = notes if notes is not None else LoadNotes()
    row_of = {iid: i for i, iid in enumerate(items.ids)}
    users: dict[str, int] = {}
    u_col: list[int] = []
    i_col: list[int] = []
    ts_col: list[float] = []
    ev_col: list[int] = []
    unknown: list[str] = []
    n_unknown = 0
    n_rows = 0
    for n, obj in read_event_rows(path, options, notes):
        n_rows += 1
        etype, ts = obj["event_type"], obj["ts"]
        raw = event_payload(obj["user_id"], obj["item_id"], event_id=f"row-{n}", ts=ts)
        ev = validate_event(raw, "purchases" if etype == "purchase" else "clicks")
        if not isinstance(ev, Event):
            reason = getattr(ev, "reason", "invalid")
            detail = getattr(ev, "detail", REASONS.get(reason, ""))
            raise DataFileError(f"{path} row {n}: {reason}: {detail}")
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
    notes.rows = n_rows
    if n_unknown:
        if options.unknown_items == "fail":
            raise DataFileError(
                f"{path}: {n_unknown} event(s) name items that are not in the catalogue "
                f"({'; '.join(unknown)}); add them to the catalogue, or drop such events "
                f"with --unknown-items drop"
            )
        notes.dropped_unknown = n_unknown
        notes.add(
            f"{path.name}: dropped {n_unknown} of {n_rows} event(s) on items not in the catalogue "
            f"({'; '.join(unknown)}{'; ...' if n_unknown > len(unknown) else ''})"
        )
    if not u_col:
        raise DataFileError(f"events file {path} has no events on catalogue items")
    ts_arr = np.asarray(ts_col, dtype=np.float64)
    order = np.lexsort((np.arange(len(ts_arr)), ts_arr))  # stable: (ts, file order)
    return Interactions(
        user=np.asarray(u_col, dtype=np.int64)[order],
        item=np.asarray(i_col, dtype=np.int64)[order],
        ts=ts_arr[order],
        event=np.asarray(ev_col, dtype=np.int64)[order],
        user_ids=list(users),
    )


def load_files(
    events: Path | str,
    catalogue: Path | str,
    options: InputOptions | None = None,
    notes: LoadNotes | None = None,
) -> tuple[Interactions, Items]:
    """``(interactions, items)`` from an events file and a catalogue file."""
    items = load_catalogue(catalogue, options, notes)
    return load_events(events, items, options, notes), items
