"""The in-memory interaction data types every loader returns: :class:`Items` (the catalogue)
and :class:`Interactions` (events as parallel arrays), plus :func:`tie_share`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Items:
    """The item table. Row ``i`` of every array is item ``ids[i]``."""

    ids: list[str]
    titles: list[str]
    texts: list[str]
    """What the teacher reads: ``"Title (year) - Genre, Genre"``."""

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Interactions:
    """Interactions as parallel arrays, sorted stably by (user order, time).

    ``user[i]`` / ``item[i]`` are row indices into ``user_ids`` / the item table;
    ``event`` is 0 (click) or 1 (purchase)."""

    user: np.ndarray
    item: np.ndarray
    ts: np.ndarray
    event: np.ndarray
    user_ids: list[str]

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def sequences(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per-user ``(items, events)`` in time order (stable), keyed by user row."""
        order = np.lexsort((np.arange(len(self)), self.ts, self.user))
        u, it, ev = self.user[order], self.item[order], self.event[order]
        bounds = np.flatnonzero(np.diff(u)) + 1
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for s, e in zip(np.r_[0, bounds], np.r_[bounds, len(u)], strict=True):
            if e > s:
                out[int(u[s])] = (it[s:e].copy(), ev[s:e].copy())
        return out


def tie_share(inter: Interactions) -> float:
    """Share of interactions that share a timestamp with another of the same user."""
    key = inter.user.astype(np.int64) * (1 << 32) + (inter.ts - inter.ts.min())
    _, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    return float((counts[inv] > 1).mean())
