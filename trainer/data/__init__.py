"""Interaction data: the types (:mod:`.interactions`), the MovieLens-100K loader
(:mod:`.movielens`), your own events and catalogue from CSV / JSON lines / Parquet files
(:mod:`.files`) and the synthetic generator (:mod:`.synthetic`)."""

from __future__ import annotations

from trainer.data.files import DataFileError, load_catalogue, load_events, load_files
from trainer.data.interactions import Interactions, Items, tie_share
from trainer.data.movielens import item_text, load_movielens, recbole_ml100k_dir
from trainer.data.synthetic import (
    SyntheticConfig,
    synthetic_dataset,
    synthetic_events,
    synthetic_items,
)

__all__ = [
    "DataFileError",
    "Interactions",
    "Items",
    "SyntheticConfig",
    "item_text",
    "load_catalogue",
    "load_events",
    "load_files",
    "load_movielens",
    "recbole_ml100k_dir",
    "synthetic_dataset",
    "synthetic_events",
    "synthetic_items",
    "tie_share",
]
