"""``coldstream bench recommend``: a micro-benchmark of ``Recommender.recommend_batch``
(users/s) on a large random index (100k and 1M items by default), no broker. Prints a table
and writes ``reports/bench-recommend.json``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

__all__ = ["add_arguments", "run"]


def add_arguments(r: argparse.ArgumentParser) -> None:
    r.add_argument("--items", default="100000,1000000", help="index sizes, comma-separated")
    r.add_argument("--batch-sizes", default="1,64,512", help="users per batch, comma-separated")
    r.add_argument("--dim", type=int, default=64, help="item vector size")
    r.add_argument("--history", type=int, default=20, help="events per user history")
    r.add_argument(
        "--threads", type=int, default=0, help="torch/FAISS threads (0: library default)"
    )
    r.add_argument("--seconds", type=float, default=3.0, help="time per configuration")
    r.add_argument("--out", default="reports/bench-recommend.json", help="the JSON report")


def run(args: argparse.Namespace) -> int:
    import faiss
    import torch
    from rich.console import Console
    from rich.table import Table

    from devtools.checkpoints import random_serving_model
    from stream_app.recommender import Recommender

    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    rows = []
    rng = np.random.default_rng(0)
    for n_items in [int(x) for x in args.items.split(",")]:
        t0 = time.perf_counter()
        rec = Recommender(random_serving_model(n_items, args.dim))
        build_s = time.perf_counter() - t0
        for b in [int(x) for x in args.batch_sizes.split(",")]:
            histories = [[str(i) for i in rng.integers(0, n_items, args.history)] for _ in range(b)]
            rec.recommend_batch(histories, 10)  # warm up
            n = 0
            inf = srch = 0.0
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < args.seconds or n == 0:
                r = rec.rank_batch(histories, 10)
                inf += r.inference_s
                srch += r.search_s
                n += 1
            el = time.perf_counter() - t0
            rows.append(
                {
                    "items": n_items,
                    "batch": b,
                    "users_per_s": round(n * b / el, 1),
                    "ms_per_batch": round(el / n * 1000, 3),
                    "encode_ms": round(inf / n * 1000, 3),
                    "search_ms": round(srch / n * 1000, 3),
                    "index_build_s": round(build_s, 2),
                }
            )
            print(rows[-1], flush=True)
        del rec
    t = Table(
        title=f"batched recommend, CPU, dim {args.dim}, history {args.history}, k 10, "
        f"threads {args.threads or torch.get_num_threads()}"
    )
    for c in ("items", "batch", "users/s", "ms/batch", "encode ms", "search ms"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(
            f"{r['items']:,}",
            str(r["batch"]),
            f"{r['users_per_s']:,.0f}",
            f"{r['ms_per_batch']:.2f}",
            f"{r['encode_ms']:.2f}",
            f"{r['search_ms']:.2f}",
        )
    Console().print(t)
    report = {
        "rows": rows,
        "dim": args.dim,
        "history": args.history,
        "k": 10,
        "threads": args.threads or torch.get_num_threads(),
        "cores": os.cpu_count(),
        "index": "faiss IndexFlatIP (exact, CPU)",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0
