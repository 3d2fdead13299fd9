"""Benchmark (not a test): FAISS exact search by one scan per query vs by one matrix product
(BLAS), per batch size, in one run; where :func:`stream_app.index.faiss_module` switches.

FAISS 1.14+ uses BLAS only from ``queries x dim >= 128,000`` (2,000 queries at dim 64):
every serving micro-batch, and every batch's IVF coarse-quantizer search, took the scan.
For each catalogue size (an exact index's items, or an IVF index's ``nlist`` centroids) and
each number of queries, the same random queries are searched with the switch forced to BLAS,
forced to the scan, and as :func:`~stream_app.index.faiss_module` sets it, alternating,
``--repeats`` rounds; the table shows the median microseconds of this thread's CPU time per
query, and whether the three gave the same top-``k`` slots (ties aside: scores within
1e-5).

    coldstream bench blas [--items 1682,4096,10000] [--queries 1,2,4,8,16,64,512]

Prints a table and writes ``reports/bench-blas.json`` (with the load average: the figures
are only comparable within one run).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from coldstream.core.errors import ExitCode
from devtools.bench import int_list, run_facts, write_report

__all__ = ["add_arguments", "run"]


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--items",
        type=int_list,
        default=[1682, 4096, 10_000],
        help="vectors searched, comma-separated",
    )
    ap.add_argument(
        "--queries", type=int_list, default=[1, 2, 4, 8, 16, 64, 512], help="queries per search"
    )
    ap.add_argument("--dim", type=int, default=64, help="vector dimension")
    ap.add_argument("--k", type=int, default=26, help="results per query (k + the margin)")
    ap.add_argument("--threads", type=int, default=1, help="FAISS OpenMP threads")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds per case")
    ap.add_argument(
        "--out", type=Path, default=Path("reports/bench-blas.json"), help="the JSON report"
    )


def _cpu_us_per_query(index: Any, q: np.ndarray, k: int) -> float:
    n = max(3, 4000 // q.shape[0])
    t = time.thread_time()
    for _ in range(n):
        index.search(q, k)
    return (time.thread_time() - t) / n / q.shape[0] * 1e6


def _same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    """Same slots per row, or the same scores where they differ (ties)."""
    (sa, ia), (sb, ib) = a, b
    return bool(np.all((ia == ib) | (np.abs(sa - sb) <= 1e-5 * np.maximum(1, np.abs(sa)))))


def run(args: argparse.Namespace) -> int:
    import faiss

    from stream_app.index import faiss_module

    if args.dim <= 0 or args.k <= 0 or min(args.items + args.queries, default=0) <= 0:
        print("coldstream bench blas: --items, --queries, --dim and --k must be positive")
        return ExitCode.BAD_INPUT
    faiss.omp_set_num_threads(args.threads)
    library_default = int(faiss.cvar.distance_compute_blas_threshold)
    faiss_module()
    tuned = int(faiss.cvar.distance_compute_blas_threshold)
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    print(f"FAISS {faiss.__version__}: library switch {library_default:,}, set {tuned:,}")
    print(f"{'items':>8} {'queries':>7} {'BLAS':>8} {'scan':>8} {'set':>8}  same  (µs/query)")
    for n in args.items:
        index = faiss.IndexFlatIP(args.dim)
        index.add(rng.standard_normal((n, args.dim)).astype(np.float32))
        for nq in args.queries:
            q = rng.standard_normal((nq, args.dim)).astype(np.float32)
            k = min(args.k, n)
            times: dict[str, list[float]] = {"blas": [], "scan": [], "set": []}
            results = {}
            for _ in range(args.repeats):
                for name, thr in (("blas", 0), ("scan", 2**31 - 1), ("set", tuned)):
                    faiss.cvar.distance_compute_blas_threshold = thr
                    results[name] = index.search(q, k)
                    times[name].append(_cpu_us_per_query(index, q, k))
            faiss.cvar.distance_compute_blas_threshold = tuned
            row = {
                "items": n,
                "queries": nq,
                **{
                    f"{name}_us_per_query": round(statistics.median(v), 2)
                    for name, v in times.items()
                },
                "same_results": _same(results["blas"], results["scan"])
                and _same(results["set"], results["scan"]),
            }
            rows.append(row)
            print(
                f"{n:>8,} {nq:>7} {row['blas_us_per_query']:>8.1f} {row['scan_us_per_query']:>8.1f}"
                f" {row['set_us_per_query']:>8.1f}  {'yes' if row['same_results'] else 'NO'}",
                flush=True,
            )
    report = {
        "what": "coldstream bench blas: FAISS exact search, one scan per query vs one matrix "
        "product, median CPU µs per query of this thread",
        **run_facts(),
        "faiss": faiss.__version__,
        "threads": args.threads,
        "dim": args.dim,
        "k": args.k,
        "library_threshold": library_default,
        "set_threshold": tuned,
        "rows": rows,
    }
    write_report(args.out, report)
    return ExitCode.OK if all(r["same_results"] for r in rows) else ExitCode.FAILURE
