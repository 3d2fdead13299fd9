"""Pure scoring of the prequential cold-start evaluation (``coldstream evaluate --stream``).

The run itself -- broker, worker, trainer service, replay -- is development tooling
(:mod:`devtools.prequential`); this module holds the functions that turn what the run
collected into figures, with no broker, process or file: :func:`stream_positions`,
:func:`truth_after`, :func:`score_recommendations`, :func:`aggregate`,
:func:`popularity_reference` (unit-tested on hand-made data).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer.ranking import ndcg_at_k

log = logging.getLogger(__name__)

KS = (1, 2, 3, 5)
N_NEXT = 10


# -------------------------------------------------------------------------------------
# pure scoring
# -------------------------------------------------------------------------------------


def stream_positions(users: Sequence[str]) -> list[int]:
    """For each stream event, the 1-based count of its user's events so far (``k``)."""
    seen: Counter[str] = Counter()
    out = []
    for u in users:
        seen[u] += 1
        out.append(seen[u])
    return out


def truth_after(user_items: Sequence[str], k: int, n_next: int = N_NEXT) -> list[str]:
    """The items of the user's events ``k+1 .. k+n_next`` (``user_items`` in time order)."""
    return list(user_items[k : k + n_next])


@dataclass(frozen=True)
class Scored:
    """One scored recommendation."""

    user: str
    k: int
    position: int
    """Stream position (0-based) of the user's k-th event, the trigger."""
    version: str
    ndcg: float
    fallback: str | None = None


def score_recommendations(
    *,
    users: Sequence[str],
    event_ids: Sequence[str],
    future: dict[str, Sequence[str]],
    recs: dict[str, dict[str, Any]],
    scored_users: set[str],
    sent_at: Sequence[float] | None = None,
    snapshot_at: dict[str, float] | None = None,
    ks: Sequence[int] = KS,
    n_next: int = N_NEXT,
    k_rec: int = 10,
) -> tuple[list[Scored], dict[str, int]]:
    """Join recommendations to the truth.

    ``users[p]`` / ``event_ids[p]``: the replayed stream, position ``p``. ``future[u]``: the
    items of all of ``u``'s stream events in time order (the dataset's, replayed or not).
    ``recs[event_id]``: the published record (``items``, ``model_version``, ``fallback``).
    ``sent_at[p]``: wall time event ``p`` was sent; ``snapshot_at[version]``: wall time the
    trainer copied its buffer for that version (absent: never trained on the stream).
    Returns the scored rows and counts (``missing`` recommendation, ``no_truth``,
    ``excluded_possible_leak``)."""
    snapshot_at = snapshot_at or {}
    want = set(ks)
    pos_of: dict[tuple[str, int], int] = {}
    for p, (u, k) in enumerate(zip(users, stream_positions(users), strict=True)):
        if u in scored_users and k in want:
            pos_of[(u, k)] = p
    # where (stream position) each user's j-th event was sent, for the leak guard
    first_pos: dict[str, list[int]] = defaultdict(list)
    for p, u in enumerate(users):
        if u in scored_users:
            first_pos[u].append(p)
    counts = Counter({"missing": 0, "no_truth": 0, "excluded_possible_leak": 0})
    rows: list[Scored] = []
    for (u, k), p in sorted(pos_of.items(), key=lambda x: x[1]):
        truth = truth_after(future.get(u, ()), k, n_next)
        if not truth:
            counts["no_truth"] += 1
            continue
        rec = recs.get(event_ids[p])
        if rec is None:
            counts["missing"] += 1
            continue
        version = str(rec.get("model_version"))
        snap = snapshot_at.get(version)
        if snap is not None:
            # the user's first truth event, if it was replayed at all (never replayed: never
            # trained on); sent before the version's buffer snapshot: it may be in its training data
            nxt = first_pos[u][k] if len(first_pos[u]) > k else None
            if nxt is not None and (sent_at is None or sent_at[nxt] <= snap):
                counts["excluded_possible_leak"] += 1
                continue
        ranked = [str(i["item_id"]) for i in rec.get("items", [])][:k_rec]
        rows.append(Scored(u, k, p, version, ndcg_at_k(ranked, truth, k_rec), rec.get("fallback")))
    return rows, dict(counts)


def _mean(xs: Sequence[float]) -> float | None:
    return round(float(np.mean(xs)), 5) if len(xs) else None


def aggregate(
    rows: Sequence[Scored],
    *,
    n_stream: int,
    ks: Sequence[int] = KS,
    buckets: int = 8,
    key_of: dict[int, float] | None = None,
) -> dict[str, Any]:
    """``ndcg@10`` per ``after_k``, ``by_model_version`` and ``over_time`` (``buckets`` equal
    slices of the replayed stream by position; ``key_of[position]`` adds the dataset time)."""
    by_k: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        by_k[r.k].append(r.ndcg)
    out: dict[str, Any] = {
        "ndcg@10": {f"after_{k}": _mean(by_k[k]) for k in ks},
        "n_users": {f"after_{k}": len(by_k[k]) for k in ks},
    }
    versions: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        versions[r.version][r.k].append(r.ndcg)
    out["by_model_version"] = {
        v: {
            "ndcg@10": {f"after_{k}": _mean(d[k]) for k in ks},
            "n": {f"after_{k}": len(d[k]) for k in ks},
            "all": _mean([x for k in ks for x in d[k]]),
        }
        for v, d in sorted(versions.items(), key=lambda kv: version_key(kv[0]))
    }
    size = max(1, -(-n_stream // buckets))
    over = []
    for b in range(buckets):
        lo, hi = b * size, min(n_stream, (b + 1) * size)
        if lo >= hi:
            break
        sel = [r for r in rows if lo <= r.position < hi]
        vs = Counter(r.version for r in sel)
        row = {
            "bucket": b,
            "positions": [lo, hi - 1],
            "n": len(sel),
            "ndcg@10": _mean([r.ndcg for r in sel]),
            "ndcg@10_by_k": {f"after_{k}": _mean([r.ndcg for r in sel if r.k == k]) for k in ks},
            "versions": dict(sorted(vs.items(), key=lambda kv: version_key(kv[0]))),
        }
        if key_of is not None:
            row["dataset_time"] = [key_of.get(lo), key_of.get(hi - 1)]
        over.append(row)
    out["over_time"] = over
    return out


def popularity_reference(
    *,
    past_items: Sequence[str],
    stream_items: Sequence[str],
    users: Sequence[str],
    rows: Sequence[Scored],
    future: dict[str, Sequence[str]],
    k_rec: int = 10,
    n_next: int = N_NEXT,
    per_position: dict[int, float] | None = None,
) -> dict[int, list[float]]:
    """NDCG@10 of "the most frequent items before this event" for each scored row (same
    users, same truth): counts over the past and the stream up to and including the
    trigger; the user's stream items so far excluded; ties broken by first appearance.
    ``per_position`` (when given) receives each row's value by its stream position (for the
    per-slice reference, :func:`slice_reference`)."""
    counts: Counter[str] = Counter(past_items)
    want = defaultdict(list)
    for r in rows:
        want[r.position].append(r)
    seen: dict[str, list[str]] = defaultdict(list)
    out: dict[int, list[float]] = defaultdict(list)
    for p, (u, it) in enumerate(zip(users, stream_items, strict=True)):
        counts[it] += 1
        seen[u].append(it)
        for r in want.get(p, ()):
            excl = set(seen[u])
            top = [i for i, _ in counts.most_common(k_rec + len(excl)) if i not in excl][:k_rec]
            v = ndcg_at_k(top, truth_after(future[u], r.k, n_next), k_rec)
            out[r.k].append(v)
            if per_position is not None:
                per_position[r.position] = v
    return out


def slice_reference(over_time: list[dict[str, Any]], per_position: dict[int, float]) -> None:
    """Add ``reference_popularity`` (mean NDCG@10 of the popularity reference on the same
    scored rows) to each ``over_time`` slice of :func:`aggregate`: a slice is compared with
    popularity on the same users at the same time, not with the whole run's figure."""
    for row in over_time:
        lo, hi = row["positions"]
        row["reference_popularity"] = _mean([v for p, v in per_position.items() if lo <= p <= hi])


def version_key(v: str) -> tuple[int, str]:
    try:
        return int(v), v
    except ValueError:
        return 1 << 30, v
