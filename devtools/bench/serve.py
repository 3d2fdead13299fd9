"""``coldstream bench serve``: throughput and latency of the running pipeline vs a pass-through.

It drives the real pipeline (its own Apache Kafka or Tansu broker and worker
subprocess, or given ones) and measures, in one run on one broker:

* **flat out**: a backlog of ``--events`` input events is loaded first, then the worker
  drains it; throughput = outputs / (last - first output record timestamp);
* **fixed rate** (``--rate``, default 1,000 ev/s for ``--seconds``): event-to-recommendation
  latency = time the benchmark's consumer received the recommendation - time the event was
  sent (p50/p95/p99);
* **ceiling**: a bare aiokafka consume -> produce pass-through (one consumer group,
  batches of up to 1,000, futures gathered per batch, same payloads, same partitions)
  drains the same backlog size; our throughput is reported as a fraction of it.

Writes ``reports/bench-serve.json``. With ``--items 1682,100000,1000000`` every catalogue
size is measured in one run instead (:mod:`devtools.bench.scale`, ``reports/bench-scale.json``).
``coldstream bench recommend`` (:mod:`devtools.bench.recommend`) is the broker-less
micro-benchmark of the recommender.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from coldstream.core.errors import ExitCode
from coldstream.core.records import event_payload
from devtools.bench.pipeline import (
    collect,
    fixed_rate,
    flat_out,
    passthrough,
    rate_from_timestamps,
    send_events,
    start_broker,
    wait_processed,
)

__all__ = ["add_arguments", "fixed_rate_phase", "make_events", "run"]


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--bootstrap",
        default=None,
        help="use this broker instead of starting one (default: start --broker)",
    )
    s.add_argument("--broker", choices=["kafka", "tansu"], default="kafka", help="broker to start")
    s.add_argument(
        "--worker-url",
        default=None,
        help="use a running worker (its topics: --topic-prefix) instead of starting one "
        "(default: start one)",
    )
    s.add_argument(
        "--topic-prefix", default=None, help="topic prefix (default: a fresh bench-<hex>- prefix)"
    )
    s.add_argument(
        "--model-store", default=None, help="model store (default: a random 1,682-item model)"
    )
    s.add_argument(
        "--events",
        type=int,
        default=150_000,
        help="backlog size for the flat-out phases (past the worker's 100,000-event dedupe "
        "memory, so the figure is the steady state's)",
    )
    s.add_argument(
        "--rate", type=float, default=1000.0, help="fixed rate of the latency phase (ev/s)"
    )
    s.add_argument("--seconds", type=float, default=20.0, help="length of the fixed-rate phase")
    s.add_argument(
        "--warmup-seconds", type=float, default=10.0, help="unmeasured run at the fixed rate first"
    )
    s.add_argument(
        "--users", type=int, default=20_000, help="distinct users in the generated events"
    )
    s.add_argument("--batch-size", type=int, default=512, help="worker micro-batch size")
    s.add_argument("--batch-window-ms", type=float, default=2.0, help="worker micro-batch window")
    s.add_argument("--threads", type=int, default=1, help="worker torch/FAISS threads")
    s.add_argument("--no-stock", action="store_true", help="skip the stock Faust agent comparison")
    s.add_argument("--out", default="reports/bench-serve.json", help="the JSON report")
    s.add_argument(
        "--items",
        default=None,
        help="catalogue sizes, comma-separated (e.g. 1682,100000,1000000): every size in one "
        "run on one broker with the same events and users, random clustered models "
        "(devtools.bench.scale; writes --scale-out) (default: one model, --model-store or a "
        "random 1,682-item one)",
    )
    s.add_argument(
        "--index",
        default="auto",
        choices=["auto", "flat", "ivf"],
        help="with --items: the workers' COLDSTREAM_INDEX",
    )
    s.add_argument(
        "--recall-sample",
        type=int,
        default=500,
        help="with --items: recommendations per size checked against exact search",
    )
    s.add_argument(
        "--scale-out", default="reports/bench-scale.json", help="with --items: the JSON report"
    )


# ---------------------------------------------------------------------------- events


def make_events(
    n: int, *, n_users: int, item_ids: list[str], seed: int, run: str
) -> list[tuple[str, bytes, bytes]]:
    """``(logical topic, key, value)``: Zipf items, uniform users, 10% purchases."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, len(item_ids) + 1, dtype=np.float64)
    p = 1.0 / ranks**1.1
    items = rng.choice(len(item_ids), size=n, p=p / p.sum())
    users = rng.integers(0, n_users, n)
    purchase = rng.random(n) < 0.1
    now = time.time()
    out = []
    for i in range(n):
        user = f"bu{users[i]}"
        value = event_payload(user, item_ids[items[i]], event_id=f"{run}-{i}", ts=now)
        out.append(("purchases" if purchase[i] else "clicks", user.encode(), value))
    return out


def fixed_rate_phase(
    bootstrap: str,
    names: dict[str, str],
    args: argparse.Namespace,
    item_ids: list[str],
    run: str,
    isolation_level: str = "read_uncommitted",
    only_topic: str | None = None,
) -> dict[str, Any]:
    """The latency phase of a serving benchmark: ``args.warmup_seconds`` then
    ``args.seconds`` of events at ``args.rate`` over ``args.users`` users
    (:func:`devtools.bench.pipeline.fixed_rate`; its result). ``only_topic``: every event
    goes to that logical topic (a reader of one input topic sees them all)."""

    def events(n: int, seed: int, run: str) -> list[tuple[str, bytes, bytes]]:
        out = make_events(n, n_users=args.users, item_ids=item_ids, seed=seed, run=run)
        return out if only_topic is None else [(only_topic, k, v) for _, k, v in out]

    fixed = events(int(args.rate * args.seconds), 2, run + "r")
    warm = events(int(args.rate * args.warmup_seconds), 3, run + "w")
    return fixed_rate(
        bootstrap,
        names,
        fixed,
        warm,
        rate=args.rate,
        seconds=args.seconds,
        run_of_fixed=run + "r",
        isolation_level=isolation_level,
    )


def run(args: argparse.Namespace) -> int:
    if args.items:
        from devtools.bench.scale import run_scale

        return run_scale(args)
    from coldstream.core.checkpoint import latest_checkpoint, load_checkpoint
    from coldstream.core.topics import create_topics, topic_names
    from devtools.checkpoints import dev_signer, make_checkpoint, verify_env
    from devtools.processes import WorkerProcess

    load_start = round(os.getloadavg()[0], 2)
    work = Path(tempfile.mkdtemp(prefix="coldstream-bench-"))
    broker = None
    worker = None
    results: dict = {}
    try:
        broker, bootstrap, broker_name = start_broker(args, work)
        store = Path(args.model_store) if args.model_store else work / "store"
        if latest_checkpoint(store) is None:  # a fresh store: signed with this run's key
            make_checkpoint(store, n_items=1682, dim=64, text_dim=384, signer=dev_signer())
            os.environ.update(verify_env())  # inherited by the workers
        item_ids = load_checkpoint(latest_checkpoint(store)).item_ids
        prefix = args.topic_prefix or f"bench-{uuid.uuid4().hex[:6]}-"
        names = topic_names(prefix)
        asyncio.run(create_topics(bootstrap, replication_factor=1, prefix=prefix))
        run = uuid.uuid4().hex[:6]
        backlog = make_events(
            args.events, n_users=args.users, item_ids=item_ids, seed=1, run=run + "f"
        )

        # -- ceiling: bare pass-through over the same backlog -----------------------------
        pt_names = topic_names(prefix + "pt-")
        asyncio.run(create_topics(bootstrap, replication_factor=1, prefix=prefix + "pt-"))
        flat_pt = [(("clicks", k, v)) for _, k, v in backlog]
        asyncio.run(send_events(bootstrap, pt_names, flat_pt))
        pt_rate = asyncio.run(
            passthrough(
                bootstrap,
                pt_names["clicks"],
                pt_names["recommendations"],
                len(flat_pt),
                timeout_s=300,
            )
        )
        print(f"pass-through ceiling: {pt_rate:,.0f} events/s", flush=True)

        # -- ours, flat out: load the backlog, then start the worker ----------------------
        asyncio.run(send_events(bootstrap, names, backlog))
        if args.worker_url:
            raise SystemExit("--worker-url: flat-out needs a fresh consumer group; start none")
        worker = WorkerProcess(
            log_path=work / "worker.log",
            bootstrap=bootstrap,
            topic_prefix=prefix,
            app_id=prefix + "app",
            model_store=store,
            threads=args.threads,
            batch_size=args.batch_size,
            batch_window_ms=args.batch_window_ms,
            log_level="warning",
            idempotent_producer=args.broker != "tansu",  # Tansu has none
            ready_timeout_s=120,
        )
        worker.start()
        wait_processed(
            worker, len(backlog), timeout_s=600
        )  # poll /metrics: no reader competes for CPU
        ours, out, n_dlq = flat_out(bootstrap, names, len(backlog))
        print(f"ours, flat out: {ours:,.0f} events/s ({len(out)} outputs, {n_dlq} DLQ)", flush=True)

        # -- fixed rate: latency ---------------------------------------------------------
        n_fixed = int(args.rate * args.seconds)
        fr = fixed_rate_phase(bootstrap, names, args, item_ids, run)
        achieved, lat, wlat, pct = fr["achieved"], fr["lat"], fr["wlat"], fr["pct"]
        print(
            f"fixed rate {achieved:,.0f} ev/s: p50 {pct.get(50, float('nan')):.1f} ms, "
            f"p95 {pct.get(95, float('nan')):.1f} ms, p99 {pct.get(99, float('nan')):.1f} ms "
            f"({len(lat)}/{n_fixed} answered)",
            flush=True,
        )
        metrics_text = worker.get_text("/metrics")
        worker.stop(deadline_s=10)
        worker = None
        stock = None
        if not args.no_stock:  # the same backlog through a stock Faust take_events agent
            sp = prefix + "stock-"
            stock_names = topic_names(sp)
            asyncio.run(create_topics(bootstrap, replication_factor=1, prefix=sp))
            asyncio.run(send_events(bootstrap, stock_names, backlog))
            worker = WorkerProcess(
                log_path=work / "worker-stock.log",
                bootstrap=bootstrap,
                topic_prefix=sp,
                app_id=sp + "app",
                model_store=store,
                threads=args.threads,
                batch_size=args.batch_size,
                batch_window_ms=args.batch_window_ms,
                log_level="warning",
                idempotent_producer=args.broker != "tansu",  # Tansu has none
                ready_timeout_s=120,
                fast_path=False,
            )
            worker.start()
            wait_processed(worker, len(backlog), timeout_s=900)
            stock = rate_from_timestamps(
                asyncio.run(
                    collect(
                        bootstrap, [stock_names["recommendations"]], len(backlog), timeout_s=120
                    )
                )
            )
            print(
                f"same pipeline through a stock Faust take_events agent: {stock:,.0f} events/s",
                flush=True,
            )
        results = {
            "events_per_s": round(ours, 1),
            "passthrough_events_per_s": round(pt_rate, 1),
            "fraction_of_passthrough": round(ours / pt_rate, 3) if pt_rate else None,
            "stock_faust_agent_events_per_s": round(stock, 1) if stock else None,
            "flat_out_events": len(backlog),
            "flat_out_outputs": len(out),
            "fixed_rate_target_events_per_s": args.rate,
            "fixed_rate_achieved_events_per_s": round(achieved, 1),
            "fixed_rate_events": n_fixed,
            "fixed_rate_answered": int(len(lat)),
            "fixed_rate_warmup_s": args.warmup_seconds,
            "p50_ms": round(pct.get(50, float("nan")), 2),
            "p95_ms": round(pct.get(95, float("nan")), 2),
            "p99_ms": round(pct.get(99, float("nan")), 2),
            "latency_definition": "benchmark consumer receipt of the recommendation - producer send time",
            "worker_p50_ms": round(float(np.percentile(wlat, 50)), 2) if len(wlat) else None,
            "worker_p99_ms": round(float(np.percentile(wlat, 99)), 2) if len(wlat) else None,
            "worker_latency_definition": "latency_ms field: input record timestamp to the worker's send",
            "broker": broker_name,
            "cores": os.cpu_count(),
            "worker_threads": args.threads,
            "batch_size": args.batch_size,
            "batch_window_ms": args.batch_window_ms,
            "users": args.users,
            "items": len(item_ids),
            "model": "random student (GRU, dim 64, text 384)"
            if not args.model_store
            else str(store),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "load_avg_1m_start": load_start,
            "load_avg_1m_end": round(os.getloadavg()[0], 2),
            "machine": platform.platform(),
            "python": platform.python_version(),
            "batch_size_histogram_count": next(
                (
                    line.split()[-1]
                    for line in metrics_text.splitlines()
                    if line.startswith("coldstream_batch_size_count")
                ),
                None,
            ),
        }
    finally:
        if worker is not None:
            worker.stop(deadline_s=10)
        if broker is not None:
            broker.stop()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return ExitCode.OK
