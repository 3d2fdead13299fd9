"""Benchmark (not a test): the student's user encoder on CPU, torch against numpy, per batch
size and history length, in one run.

Serving encodes a micro-batch of users per call: a few users with a few events each at a
low rate, the batch size under load. For each case the same random histories (lengths
uniform in 1..``L``) are encoded by the torch path (:func:`~coldstream.core.student.
pack_histories` + :meth:`~coldstream.core.student.Student.encode_indexed`, inference mode,
as the checkpoint API does) and by :class:`~coldstream.core.student.NumpyEncoder` (what the
worker ranks with on CPU), alternating, ``--repeats`` rounds; the table shows the median
microseconds of this thread's CPU time per call, their ratio, and the largest difference
between the two answers.

    coldstream bench encoder [--batches 1,4,16,64,512] [--lengths 3,20,50]

Prints a table and writes ``reports/bench-encoder.json`` (with the load average: the figures
are only comparable within one run).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from coldstream.core.errors import ExitCode
from devtools.bench import int_list, run_facts, write_report

__all__ = ["add_arguments", "run"]


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--batches", type=int_list, default=[1, 4, 16, 64, 512], help="users per call")
    ap.add_argument(
        "--lengths",
        type=int_list,
        default=[3, 20, 50],
        help="longest history L (each user's length is uniform in 1..L)",
    )
    ap.add_argument("--items", type=int, default=1682, help="rows of the item table")
    ap.add_argument("--dim", type=int, default=64, help="user and item vector width")
    ap.add_argument("--encoder", choices=["gru", "mean"], default="gru", help="student encoder")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds per case")
    ap.add_argument(
        "--out", type=Path, default=Path("reports/bench-encoder.json"), help="the JSON report"
    )


def _cpu_us_per_call(fn: Callable[[], Any], batch: int, length: int) -> float:
    n = max(3, 20_000 // (batch * length))
    t = time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - t) / n * 1e6


def run(args: argparse.Namespace) -> int:
    import torch

    from coldstream.core.student import NumpyEncoder, Student, StudentConfig, pack_histories
    from stream_app.worker import cap_threads

    if min([args.items, args.dim, args.repeats, *args.batches, *args.lengths], default=0) <= 0:
        print("coldstream bench encoder: every size must be positive")
        return ExitCode.BAD_INPUT
    cap_threads(1)  # as the worker (COLDSTREAM_THREADS=1)
    torch.manual_seed(0)
    cfg = StudentConfig(n_items=args.items, dim=args.dim, encoder=args.encoder)
    model = Student(cfg).eval()
    fast = NumpyEncoder(model)
    table = torch.randn(args.items, args.dim)
    table_np = table.numpy()
    rng = np.random.default_rng(0)
    rows_out: list[dict[str, Any]] = []
    print(
        f"{'batch':>6} {'L':>4} {'torch':>9} {'numpy':>9} {'ratio':>6}  max |diff|  (CPU µs/call)"
    )
    for length in args.lengths:
        for batch in args.batches:
            lens = rng.integers(1, length + 1, batch)
            rows = [rng.integers(0, args.items, n).tolist() for n in lens]
            types = [rng.integers(0, 2, n).tolist() for n in lens]

            def by_torch(rows: list = rows, types: list = types) -> np.ndarray:
                with torch.inference_mode():
                    packed = pack_histories(rows, types, cfg.max_len)
                    return model.encode_indexed(table, *packed).numpy()

            def by_numpy(rows: list = rows, types: list = types) -> np.ndarray:
                return fast.encode(table_np, rows, types)

            diff = float(np.abs(by_torch() - by_numpy()).max())
            times: dict[str, list[float]] = {"torch": [], "numpy": []}
            for _ in range(args.repeats):
                times["torch"].append(_cpu_us_per_call(by_torch, batch, length))
                times["numpy"].append(_cpu_us_per_call(by_numpy, batch, length))
            t_torch, t_numpy = (statistics.median(times[k]) for k in ("torch", "numpy"))
            row = {
                "batch": batch,
                "longest": length,
                "events": int(lens.sum()),
                "torch_us_per_call": round(t_torch, 1),
                "numpy_us_per_call": round(t_numpy, 1),
                "torch_over_numpy": round(t_torch / t_numpy, 2),
                "max_abs_diff": diff,
            }
            rows_out.append(row)
            print(
                f"{batch:>6} {length:>4} {t_torch:>9.1f} {t_numpy:>9.1f} "
                f"{row['torch_over_numpy']:>5.2f}x  {diff:.1e}",
                flush=True,
            )
    report = {
        "what": "coldstream bench encoder: the student's user encoder on CPU, torch (packed "
        "GRU) vs numpy (NumpyEncoder), median CPU µs per call of this thread",
        **run_facts(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "items": args.items,
        "dim": args.dim,
        "encoder": args.encoder,
        "threads": 1,
        "rows": rows_out,
    }
    write_report(args.out, report)
    return ExitCode.OK if all(r["max_abs_diff"] < 1e-4 for r in rows_out) else ExitCode.FAILURE
