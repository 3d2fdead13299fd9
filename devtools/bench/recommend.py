"""``coldstream bench recommend``: a micro-benchmark of ``Recommender.rank_batch`` (users/s)
on large random catalogues, no broker. Prints a table and writes
``reports/bench-recommend.json``.

Per catalogue size (``--items``) and index (``--index``: ``flat``, ``ivf``, ``auto``): users/s
per batch size, the encode and search time per batch, and the **recall@10** of what was
served against exact search on the same users (seen items excluded both ways). With
``--churn N``: N upserts of existing items (batches of ``--churn-batch``), then the index
size (entries held vs items) and the batch latency and recall again, beside the figures
before the churn.

What the costs grow with: encoding with users x history length; exact search with users x
items; IVF search with users x ``nprobe`` x items / ``nlist`` (plus ``refine`` x k exact
re-scores per user); an upsert with the batch upserted (a rebuild, in the background, once
per ``MAX_DEAD_SHARE`` x items changes).

The catalogues are :func:`devtools.checkpoints.random_serving_model` models: item vectors
are a random student's projection of clustered text vectors (``--clusters``; one topic per
1,000 items by default, as learned embeddings cluster), so recall here reflects an index on
structured vectors; ``--clusters 0`` gives isotropic vectors, where no approximate index
does well.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from coldstream.core.errors import ExitCode

__all__ = ["add_arguments", "exact_recall", "run"]


def add_arguments(r: argparse.ArgumentParser) -> None:
    r.add_argument("--items", default="100000,1000000", help="catalogue sizes, comma-separated")
    r.add_argument("--index", default="flat,ivf", help="indexes, comma-separated: flat, ivf, auto")
    r.add_argument("--codes", default="pq", choices=["pq", "flat"], help="IVF list codes")
    r.add_argument("--nprobe", type=int, default=0, help="IVF nprobe (0: tuned at build time)")
    r.add_argument(
        "--target-recall", type=float, default=0.97, help="recall@10 the tuned nprobe reaches"
    )
    r.add_argument("--batch-sizes", default="1,64,512", help="users per batch, comma-separated")
    r.add_argument("--dim", type=int, default=64, help="item vector size")
    r.add_argument("--history", type=int, default=20, help="events per user history")
    r.add_argument(
        "--clusters",
        type=int,
        default=-1,
        help="topics of the random catalogue; -1: one per 1,000 items (at least 16); "
        "0: isotropic Gaussian item vectors",
    )
    r.add_argument("--threads", type=int, default=1, help="torch/FAISS threads (0: the default)")
    r.add_argument("--seconds", type=float, default=3.0, help="time per configuration")
    r.add_argument(
        "--churn", type=int, default=0, help="upserts of existing items after the rows (0: none)"
    )
    r.add_argument("--churn-batch", type=int, default=1000, help="items per churn upsert")
    r.add_argument("--out", default="reports/bench-recommend.json", help="the JSON report")


def exact_recall(rec: Any, histories: list[list[str]], served: list[list[str]], k: int) -> float:
    """Recall@``k`` of ``served`` against exact inner-product search over the served
    bundle's live items, seen items excluded (the users encoded by the bundle's model)."""
    import torch

    from coldstream.core.student import pack_histories
    from stream_app.index import exact_topk

    m = rec.model
    slots = [[m.index_of[i] for i in h if i in m.index_of] for h in histories]
    idx, typ, mask = pack_histories(
        slots, [[0] * len(s) for s in slots], m.checkpoint.config.max_len, m.device
    )
    with torch.inference_mode():
        users = m.checkpoint.model.encode_indexed(m.table, idx, typ, mask).float().cpu().numpy()
    width = k + max(len(set(s)) for s in slots)
    _, top = exact_topk(m.index.store, users, width)
    hits = total = 0
    for row, seen, got in zip(top, slots, served, strict=True):
        truth = [m.item_ids[s] for s in row.tolist() if s >= 0 and s not in set(seen)][:k]
        hits += len(set(truth) & set(got))
        total += len(truth)
    return hits / total if total else 1.0


def _time_batches(rec: Any, histories: list[list[str]], seconds: float) -> dict[str, float]:
    rec.rank_batch(histories, 10)  # warm up
    n = 0
    inf = srch = 0.0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds or n == 0:
        r = rec.rank_batch(histories, 10)
        inf += r.inference_s
        srch += r.search_s
        n += 1
    el = time.perf_counter() - t0
    return {
        "users_per_s": round(n * len(histories) / el, 1),
        "ms_per_batch": round(el / n * 1000, 3),
        "encode_ms": round(inf / n * 1000, 3),
        "search_ms": round(srch / n * 1000, 3),
    }


def _churn(rec: Any, args: argparse.Namespace, rng: np.random.Generator) -> dict[str, Any]:
    """``args.churn`` upserts of existing ids (vectors of other items, perturbed: the same
    distribution); the index's entries are sampled after every batch."""
    m = rec.model
    n = m.n_items
    ids = [i for i in m.item_ids if i is not None]
    vecs = m.index.store.array
    held_max = m.index.rows_held
    t0 = time.perf_counter()
    done = 0
    while done < args.churn:
        b = min(args.churn_batch, args.churn - done)
        which = rng.choice(n, b, replace=False)
        donors = rng.choice(n, b, replace=False)
        new = vecs[[m.index_of[ids[d]] for d in donors]] + 0.01 * rng.standard_normal(
            (b, vecs.shape[1])
        ).astype(np.float32)
        rec.upsert_items([ids[w] for w in which], new)
        held_max = max(held_max, m.index.rows_held)
        done += b
    upsert_s = time.perf_counter() - t0
    return {
        "upserts": done,
        "upsert_us_per_item": round(upsert_s / max(1, done) * 1e6, 2),
        "rows_held_max": int(held_max),
        "rows_held_after": int(m.index.rows_held),
        "ntotal_after": int(m.index.ntotal),
        "items": int(m.n_items),
        "rebuilds": int(getattr(m.index, "rebuilds", 0)),
    }


def run(args: argparse.Namespace) -> int:
    import faiss
    import torch
    from rich.console import Console
    from rich.table import Table

    from devtools.checkpoints import random_serving_model, scale_clusters
    from stream_app.index import IndexConfig, omp_threads
    from stream_app.recommender import Recommender

    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    load_start = round(os.getloadavg()[0], 2)
    rows: list[dict[str, Any]] = []
    churn_rows: list[dict[str, Any]] = []
    for n_items in [int(x) for x in args.items.split(",")]:
        clusters = scale_clusters(n_items) if args.clusters < 0 else args.clusters
        rng = np.random.default_rng(0)
        pools = {
            b: [[str(i) for i in rng.integers(0, n_items, args.history)] for _ in range(b)]
            for b in [int(x) for x in args.batch_sizes.split(",")]
        }
        for kind in args.index.split(","):
            cfg = IndexConfig(
                kind=kind,  # type: ignore[arg-type]
                codes=args.codes,
                nprobe=args.nprobe,
                target_recall=args.target_recall,
                threads=args.threads,
            )
            t0 = time.perf_counter()
            with omp_threads(args.threads):
                model = random_serving_model(n_items, args.dim, clusters=clusters, index=cfg)
            build_s = time.perf_counter() - t0
            rec = Recommender(model)
            rep = model.index_report
            largest = pools[max(pools)]
            served = [[i for i, _ in r] for r in rec.recommend_batch(largest, 10)]
            recall = exact_recall(rec, largest, served, 10)
            base = {
                "items": n_items,
                "index": rep.kind,
                "nlist": rep.nlist,
                "nprobe": rep.nprobe,
                "codes": rep.codes,
                "clusters": clusters,
                "recall_at_10": round(recall, 4),
                "build_recall_at_10": rep.recall_at_10,
                "model_build_s": round(build_s, 2),
                "index_build_s": rep.build_s,
            }
            for b, histories in pools.items():
                rows.append({**base, "batch": b, **_time_batches(rec, histories, args.seconds)})
                print(rows[-1], flush=True)
            if args.churn:
                before = rows[-1]
                c = _churn(rec, args, rng)
                after = _time_batches(rec, largest, args.seconds)
                served = [[i for i, _ in r] for r in rec.recommend_batch(largest, 10)]
                churn_rows.append(
                    {
                        **{k: base[k] for k in ("items", "index", "nlist", "nprobe", "codes")},
                        **c,
                        "batch": max(pools),
                        "ms_per_batch_before": before["ms_per_batch"],
                        "ms_per_batch_after": after["ms_per_batch"],
                        "latency_ratio_after_before": round(
                            after["ms_per_batch"] / before["ms_per_batch"], 3
                        ),
                        "recall_at_10_before": base["recall_at_10"],
                        "recall_at_10_after": round(exact_recall(rec, largest, served, 10), 4),
                        "rows_at_most_items": c["rows_held_after"] <= c["items"],
                    }
                )
                print(churn_rows[-1], flush=True)
            del rec, model
    threads = args.threads or torch.get_num_threads()
    t = Table(
        title=f"batched recommend, CPU, dim {args.dim}, history {args.history}, k 10, "
        f"threads {threads}"
    )
    for col in ("items", "index", "nprobe", "batch", "users/s", "ms/batch", "encode", "search"):
        t.add_column(col, justify="right")
    t.add_column("recall@10", justify="right")
    for r in rows:
        t.add_row(
            f"{r['items']:,}",
            r["index"],
            str(r["nprobe"] or "-"),
            str(r["batch"]),
            f"{r['users_per_s']:,.0f}",
            f"{r['ms_per_batch']:.2f}",
            f"{r['encode_ms']:.2f}",
            f"{r['search_ms']:.2f}",
            f"{r['recall_at_10']:.3f}",
        )
    console = Console()
    console.print(t)
    if churn_rows:
        c = Table(title="index churn: upserts of existing items")
        for col in (
            "items",
            "index",
            "upserts",
            "entries max",
            "entries after",
            "items",
            "ms/batch before",
            "after",
            "recall before",
            "after",
        ):
            c.add_column(col, justify="right")
        for r in churn_rows:
            c.add_row(
                f"{r['items']:,}",
                r["index"],
                f"{r['upserts']:,}",
                f"{r['rows_held_max']:,}",
                f"{r['rows_held_after']:,}",
                f"{r['items']:,}",
                f"{r['ms_per_batch_before']:.2f}",
                f"{r['ms_per_batch_after']:.2f}",
                f"{r['recall_at_10_before']:.3f}",
                f"{r['recall_at_10_after']:.3f}",
            )
        console.print(c)
    report = {
        "rows": rows,
        "churn": churn_rows,
        "dim": args.dim,
        "history": args.history,
        "k": 10,
        "threads": threads,
        "cores": os.cpu_count(),
        "index_settings": {
            "codes": args.codes,
            "nprobe": args.nprobe or "tuned",
            "target_recall": args.target_recall,
        },
        "recall_definition": "served top-10 vs exact inner-product top-10 over live items, "
        "seen items excluded, on the largest batch's users",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_avg_1m_start": load_start,
        "load_avg_1m_end": round(os.getloadavg()[0], 2),
        "machine": platform.platform(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return ExitCode.OK
