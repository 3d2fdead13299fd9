"""The MovieLens-100K loader.

MovieLens-100K is read from the files that the PyPI package ``recbole`` ships under
``recbole/dataset_example/ml-100k/``. The package is located with
``importlib.util.find_spec`` and **never imported** (importing recbole pulls a large
dependency tree we do not install).

Ordering: interactions are sorted *stably* by ``(timestamp, original file order)``.
In MovieLens-100K 76% of interactions share a timestamp with another interaction of
the same user, so "the next event" is partly arbitrary within such a tie; we keep the
file order inside a tie and say so in every report.

Event types: rating >= 4 is a ``purchase`` (1), anything else a ``click`` (0).

"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from coldstream.core.events import EVENT_TYPES
from trainer.data.interactions import Interactions, Items

PURCHASE_MIN_RATING = 4.0


def recbole_ml100k_dir() -> Path:
    """The ``ml-100k`` folder shipped by the ``recbole`` package (not imported)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the PyPI package 'recbole' is not installed "
            "(pip install --no-deps recbole); it ships MovieLens-100K"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
    if not (path / "ml-100k.inter").is_file():
        raise FileNotFoundError(f"{path / 'ml-100k.inter'} not found in the recbole package")
    return path


def item_text(title: str, year: str, genres: str) -> str:
    """The teacher's text of an item: ``"Toy Story (1995) - Animation, Children's, Comedy"``."""
    title = title.strip()
    if title.lower() in ("unknown", "unkonwn", ""):
        title = "Unknown title"
    year = year.strip()
    head = f"{title} ({year})" if year.isdigit() else title
    g = [x for x in genres.split() if x.lower() != "unknown"]
    return f"{head} - {', '.join(g)}" if g else head


def load_movielens(path: Path | str | None = None) -> tuple[Interactions, Items]:
    """Load MovieLens-100K (``ml-100k.inter`` + ``ml-100k.item``) in recbole's atomic format.

    Ids stay the MovieLens decimal strings (``"1"``, ``"50"``). Interactions whose item is
    missing from the item file are dropped (there are none in the shipped files)."""
    d = Path(path) if path is not None else recbole_ml100k_dir()
    inter_f, item_f = d / "ml-100k.inter", d / "ml-100k.item"
    for f in (inter_f, item_f):
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found")

    ids, titles, texts = [], [], []
    with open(item_f, encoding="utf-8", errors="replace") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        col = {h.split(":")[0]: i for i, h in enumerate(header)}
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < len(header):
                parts += [""] * (len(header) - len(parts))
            iid = parts[col["item_id"]].strip()
            title = parts[col.get("movie_title", 1)]
            year = parts[col["release_year"]] if "release_year" in col else ""
            genres = parts[col["class"]] if "class" in col else ""
            ids.append(iid)
            titles.append(
                f"{title.strip()} ({year.strip()})" if year.strip().isdigit() else title.strip()
            )
            texts.append(item_text(title, year, genres))
    items = Items(ids=ids, titles=titles, texts=texts)
    row_of = {iid: i for i, iid in enumerate(ids)}

    raw = np.loadtxt(inter_f, dtype=str, delimiter="\t", skiprows=1, ndmin=2)
    users_raw, items_raw = raw[:, 0], raw[:, 1]
    rating = raw[:, 2].astype(np.float64)
    ts = raw[:, 3].astype(np.float64).astype(np.int64)
    keep = np.array([i in row_of for i in items_raw])
    users_raw, items_raw, rating, ts = users_raw[keep], items_raw[keep], rating[keep], ts[keep]
    user_ids = sorted(set(users_raw.tolist()), key=lambda s: (len(s), s))
    urow = {u: i for i, u in enumerate(user_ids)}
    user = np.array([urow[u] for u in users_raw], dtype=np.int64)
    item = np.array([row_of[i] for i in items_raw], dtype=np.int64)
    event = np.where(rating >= PURCHASE_MIN_RATING, EVENT_TYPES["purchase"], EVENT_TYPES["click"])
    # stable sort by (timestamp, original file order)
    order = np.lexsort((np.arange(len(ts)), ts))
    inter = Interactions(
        user=user[order],
        item=item[order],
        ts=ts[order],
        event=event[order].astype(np.int64),
        user_ids=user_ids,
    )
    return inter, items
