"""``coldstream bench search``: the serving search with seen items excluded, old vs new, in
one run (no broker, no model). Prints a table and writes ``reports/bench-search.json``.

Per catalogue size (``--items``): random unit item vectors of the student's default
dimension, in topics (one per 1,000 items by default, as learned embeddings cluster;
``--clusters 0``: isotropic), and the index the worker would choose at that size
(``IndexConfig.resolve_kind``: IVF-PQ from 10,000 items, its ``nprobe`` tuned at build as
the worker does). Batches of ``--batch`` users whose histories mix lengths as a stream
does: most of 1-20 events, ``--long`` per batch of 200-500 (the "longest in the batch"
case); a user's events come from one to three topics and its vector is the normalised mean
of its last 50 events' vectors, weighted to the recent ones, plus noise (as the student
pools a history), so a user's own latest items rank high and fill its first results.

Compared on the same batches and the same index (built once per size):

* ``old``: :func:`stream_app.recommender.search_wide`, one search of ``k + max |seen|`` for
  every user of the batch;
* ``new``: :func:`stream_app.recommender.search_unseen` at each ``--margins`` value: one
  search of ``k + min(max |seen|, margin)``, the users left short searched again at their
  own width.

Columns: microseconds per user (this thread's CPU time, median over rounds; FAISS runs on
``--threads`` threads, 1 by default as one worker's share, so the CPU time is the cost;
wall-clock beside it), recall@10 against exact search with seen items excluded, the share
of users searched more than once, and the results asked of the index per user (summed over
its calls).

    coldstream bench search [--items 100000,1000000] [--batches 40,12] [--margins 16]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from coldstream.core.errors import ExitCode

__all__ = ["add_arguments", "run"]


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--items", default="100000,1000000", help="catalogue sizes, comma-separated")
    ap.add_argument(
        "--batches",
        default="40,12",
        help="batches per size, comma-separated, aligned with --items (the last one repeats)",
    )
    ap.add_argument("--batch", type=int, default=64, help="users per batch")
    ap.add_argument("--long", type=int, default=2, help="users of 200-500 events per batch")
    ap.add_argument("--k", type=int, default=10, help="results per user")
    ap.add_argument(
        "--margins", default="16", help="margins of the new search, comma-separated (a sweep)"
    )
    ap.add_argument(
        "--dim", type=int, default=0, help="vector size (0: the student's default dimension)"
    )
    ap.add_argument(
        "--clusters", type=int, default=-1, help="topics; -1: one per 1,000 items; 0: isotropic"
    )
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds over the batches")
    ap.add_argument("--threads", type=int, default=1, help="FAISS/torch threads (0: default)")
    ap.add_argument("--seed", type=int, default=23, help="random seed")
    ap.add_argument(
        "--out", type=Path, default=Path("reports/bench-search.json"), help="the JSON report"
    )


class _Counting:
    """An index that counts the queries and results asked of it (per call)."""

    def __init__(self, index: Any) -> None:
        self._index = index
        self.calls: list[tuple[int, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)

    def search(self, queries: np.ndarray, k: int, params: Any = None) -> Any:
        self.calls.append((int(queries.shape[0]), int(k)))
        return self._index.search(queries, k, params)


def _catalogue(n: int, dim: int, clusters: int, rng: np.random.Generator) -> tuple[Any, Any]:
    """Unit item vectors ``[n, dim]`` (in ``clusters`` topics) and each item's topic."""
    if clusters <= 0:
        vecs = rng.standard_normal((n, dim), dtype=np.float32)
        topic = np.zeros(n, np.int64)
    else:
        centres = rng.standard_normal((clusters, dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        topic = rng.integers(0, clusters, n)
        vecs = centres[topic] + rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return np.ascontiguousarray(vecs, np.float32), topic


def _histories(
    n_users: int, n_long: int, topic: np.ndarray, rng: np.random.Generator
) -> list[list[int]]:
    """Seen slots per user, oldest first: lengths mostly 1-20 (more short than long), ``n_long``
    of 200-500 at random places; items from one to three of the user's topics (with
    repeats, as events repeat items)."""
    order = np.argsort(topic, kind="stable")
    starts = np.searchsorted(topic[order], np.arange(topic.max() + 2))
    lens = np.minimum(20, 1 + rng.geometric(0.15, n_users))
    lens[rng.choice(n_users, min(n_long, n_users), replace=False)] = rng.integers(
        200, 501, min(n_long, n_users)
    )
    out = []
    for length in lens.tolist():
        tastes = rng.integers(0, topic.max() + 1, rng.integers(1, 4))
        rows = []
        for t in rng.choice(tastes, length).tolist():
            a, b = starts[t], starts[t + 1]
            rows.append(int(order[rng.integers(a, b)]) if b > a else int(rng.integers(len(topic))))
        if length > 3:  # a few repeated items
            rows[-1] = rows[int(rng.integers(0, length - 1))]
        out.append(rows)
    return out


def _users(vecs: np.ndarray, rows_l: Sequence[Sequence[int]], rng: np.random.Generator) -> Any:
    """The users' vectors: a mean of their last 50 events' vectors weighted to the recent
    ones (0.8 per event back, as a recurrent student leans on the latest events), normalised,
    plus noise: a user's latest items rank first among its results."""
    decay = 0.8 ** np.arange(50)[::-1]
    u = np.stack([decay[-len(r[-50:]) :] @ vecs[list(r[-50:])] for r in rows_l])
    u += 0.3 * rng.standard_normal(u.shape, dtype=np.float32) / np.sqrt(u.shape[1])
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return np.ascontiguousarray(u, np.float32)


def _truth(store: Any, users: np.ndarray, rows_l: Sequence[Sequence[int]], k: int) -> list[Any]:
    from stream_app.index import exact_topk

    width = k + max(len(set(r)) for r in rows_l)
    _, top = exact_topk(store, users, width)
    out = []
    for row, seen in zip(top.tolist(), rows_l, strict=True):
        s = set(seen)
        out.append([x for x in row if x >= 0 and x not in s][:k])
    return out


def _recall(found: np.ndarray, keep: np.ndarray, truth: list[list[int]]) -> float:
    hits = total = 0
    for f, kp, t in zip(found, keep, truth, strict=True):
        hits += len(set(f[kp].tolist()) & set(t))
        total += len(t)
    return hits / total if total else 1.0


def _variants(k: int, n: int, margins: list[int]) -> dict[str, Callable[..., Any]]:
    from stream_app.recommender import search_unseen, search_wide

    def old(index: Any, users: np.ndarray, rows_l: Any) -> tuple[np.ndarray, np.ndarray]:
        _, found, keep = search_wide(index, users, rows_l, k, n)
        return found, keep

    def new(margin: int) -> Callable[..., Any]:
        def f(index: Any, users: np.ndarray, rows_l: Any) -> tuple[np.ndarray, np.ndarray]:
            _, found = search_unseen(index, users, rows_l, k, n, margin=margin)
            return found, found >= 0

        return f

    out: dict[str, Callable[..., Any]] = {"old": old}
    for m in margins:
        out[f"new m={m}"] = new(m)
    return out


def _one_size(n: int, n_batches: int, args: argparse.Namespace, dim: int) -> list[dict[str, Any]]:
    from devtools.checkpoints import scale_clusters
    from stream_app.index import IndexConfig, VectorStore, make_index, omp_threads

    rng = np.random.default_rng(args.seed + n)
    clusters = scale_clusters(n) if args.clusters < 0 else args.clusters
    t0 = time.perf_counter()
    vecs, topic = _catalogue(n, dim, clusters, rng)
    cfg = IndexConfig(threads=args.threads)
    index = make_index(dim, n_items=n, config=cfg, store=VectorStore.adopt(vecs), prefer_gpu=False)
    sample = _users(vecs, _histories(cfg.recall_sample, 0, topic, rng), rng)
    with omp_threads(args.threads):
        rep = index.build(sample=sample)
    build_s = time.perf_counter() - t0
    print(
        f"{n:,} items: {rep.kind} nlist {rep.nlist} nprobe {rep.nprobe} codes {rep.codes}, "
        f"build recall@10 {rep.recall_at_10}, {build_s:.1f} s",
        flush=True,
    )
    batches = []
    for _ in range(n_batches):
        rows_l = _histories(args.batch, args.long, topic, rng)
        users = _users(vecs, rows_l, rng)
        batches.append((users, rows_l, _truth(index.store, users, rows_l, args.k)))
    variants = _variants(args.k, n, [int(x) for x in args.margins.split(",")])
    out = []
    stats: dict[str, dict[str, Any]] = {}
    with omp_threads(args.threads):
        for name, fn in variants.items():  # untimed: results, recall, calls
            counting = _Counting(index)
            hits = re = asked = 0.0
            for users, rows_l, truth in batches:
                counting.calls.clear()
                found, keep = fn(counting, users, rows_l)
                hits += _recall(found, keep, truth) * len(rows_l)
                re += sum(q for q, _ in counting.calls[1:])
                asked += sum(q * w for q, w in counting.calls)
            users_total = len(batches) * args.batch
            stats[name] = {
                "recall_at_10": round(hits / users_total, 4),
                "research_share": round(re / users_total, 4),
                "results_asked_per_user": round(asked / users_total, 1),
                "cpu": [],
                "wall": [],
            }
        for _ in range(args.rounds):  # timed: the variants alternate batch by batch
            sums = {name: [0.0, 0.0] for name in variants}
            for users, rows_l, _ in batches:
                for name, fn in variants.items():
                    c0, w0 = time.thread_time(), time.perf_counter()
                    fn(index, users, rows_l)
                    sums[name][0] += time.thread_time() - c0
                    sums[name][1] += time.perf_counter() - w0
            for name, (c, w) in sums.items():
                stats[name]["cpu"].append(c / (len(batches) * args.batch) * 1e6)
                stats[name]["wall"].append(w / (len(batches) * args.batch) * 1e6)
    lens = [len(r) for _, rows_l, _ in batches for r in rows_l]
    for name, s in stats.items():
        out.append(
            {
                "items": n,
                "index": rep.kind,
                "codes": rep.codes,
                "nlist": rep.nlist,
                "nprobe": rep.nprobe,
                "refine": rep.refine,
                "clusters": clusters,
                "build_s": round(build_s, 1),
                "batches": len(batches),
                "history_mean": round(float(np.mean(lens)), 1),
                "history_max": int(max(lens)),
                "variant": name,
                "us_per_user_cpu": round(statistics.median(s["cpu"]), 1),
                "us_per_user_wall": round(statistics.median(s["wall"]), 1),
                "recall_at_10": s["recall_at_10"],
                "research_share": s["research_share"],
                "results_asked_per_user": s["results_asked_per_user"],
            }
        )
        print(out[-1], flush=True)
    return out


def run(args: argparse.Namespace) -> int:
    import faiss
    import torch
    from rich.console import Console
    from rich.table import Table

    from coldstream.core.student import StudentConfig
    from stream_app.recommender import SEARCH_MARGIN

    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    dim = args.dim or StudentConfig(n_items=1).dim
    sizes = [int(x) for x in args.items.split(",")]
    nb = [int(x) for x in args.batches.split(",")]
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for i, n in enumerate(sizes):
        rows.extend(_one_size(n, nb[min(i, len(nb) - 1)], args, dim))
    t = Table(
        title=f"search with seen items excluded, CPU, dim {dim}, batches of {args.batch} "
        f"({args.long} of 200-500 events), k {args.k}, threads {args.threads or 'default'}"
    )
    for col in (
        "items",
        "index",
        "nprobe",
        "variant",
        "µs/user CPU",
        "µs/user wall",
        "recall@10",
        "searched again",
        "asked/user",
    ):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(
            f"{r['items']:,}",
            f"{r['index']}-{r['codes']}" if r["codes"] else r["index"],
            str(r["nprobe"] or "-"),
            r["variant"],
            f"{r['us_per_user_cpu']:.1f}",
            f"{r['us_per_user_wall']:.1f}",
            f"{r['recall_at_10']:.4f}",
            f"{r['research_share']:.1%}",
            f"{r['results_asked_per_user']:.0f}",
        )
    Console(width=140).print(t)
    report = {
        "rows": rows,
        "dim": dim,
        "k": args.k,
        "batch": args.batch,
        "long_per_batch": args.long,
        "rounds": args.rounds,
        "margins": [int(x) for x in args.margins.split(",")],
        "margin_default": SEARCH_MARGIN,
        "threads": args.threads,
        "cores": os.cpu_count(),
        "definitions": {
            "us_per_user_cpu": "median over rounds of this thread's CPU time per user",
            "recall_at_10": "served top-10 vs exact inner-product top-10, seen items excluded",
            "research_share": "queries of the second and later index calls per user",
            "results_asked_per_user": "sum over the index calls of queries x k, per user",
        },
        "command": f"coldstream bench search --items {args.items} --batches {args.batches} "
        f"--margins {args.margins} --long {args.long} --rounds {args.rounds}",
        "seconds": round(time.perf_counter() - t_start, 1),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_avg_start": [round(x, 2) for x in load_start],
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "machine": platform.platform(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return ExitCode.OK
