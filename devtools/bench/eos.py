"""``coldstream bench eos``: what ``exactly_once`` costs against ``at_least_once``, one run.

For each processing guarantee (``COLDSTREAM_PROCESSING_GUARANTEE``), on one Apache Kafka,
with fresh topics and a fresh worker each:

* **flat out**: a backlog of ``--events`` input events, then the worker drains it;
  events/s from the output records' timestamps;
* **fixed rate** (``--rate``, default 1,000 ev/s, for ``--seconds`` after a warm-up): the
  event-to-recommendation latency p50/p95/p99 as the benchmark's consumer receives it.

The outputs of ``exactly_once`` are read with ``read_committed`` (what a downstream reader
sees: an output arrives when its transaction commits), those of ``at_least_once`` with the
default ``read_uncommitted``. Writes ``reports/bench-eos.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import Any

from coldstream.core.errors import ExitCode

__all__ = ["add_arguments", "run"]

GUARANTEES = ("at_least_once", "exactly_once")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=int, default=40_000, help="backlog of the flat-out phase")
    p.add_argument("--rate", type=float, default=1000.0, help="events/s of the latency phase")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the latency phase")
    p.add_argument("--warmup-seconds", type=float, default=5.0, help="unmeasured, first")
    p.add_argument("--users", type=int, default=20_000, help="distinct users in the events")
    p.add_argument("--threads", type=int, default=1, help="worker torch/FAISS threads")
    p.add_argument("--bootstrap", default=None, help="an Apache Kafka (default: start one)")
    p.add_argument("--out", default="reports/bench-eos.json", help="the JSON report")


def _one(args: argparse.Namespace, bootstrap: str, store: Path, work: Path, mode: str) -> dict:
    from coldstream.core.checkpoint import latest_checkpoint, load_checkpoint
    from coldstream.core.topics import create_topics, topic_names
    from devtools.bench.pipeline import flat_out, send_events, wait_processed
    from devtools.bench.serve import fixed_rate_phase, make_events
    from devtools.processes import WorkerProcess

    checkpoint = latest_checkpoint(store)
    assert checkpoint is not None
    item_ids = load_checkpoint(checkpoint).item_ids
    prefix = f"bench-eos-{mode.replace('_', '-')}-{uuid.uuid4().hex[:6]}-"
    names = topic_names(prefix)
    asyncio.run(create_topics(bootstrap, replication_factor=1, prefix=prefix))
    run = uuid.uuid4().hex[:6]
    backlog = make_events(args.events, n_users=args.users, item_ids=item_ids, seed=1, run=run)
    asyncio.run(send_events(bootstrap, names, backlog))
    isolation = "read_committed" if mode == "exactly_once" else "read_uncommitted"
    worker = WorkerProcess(
        log_path=work / f"worker-{mode}.log",
        bootstrap=bootstrap,
        topic_prefix=prefix,
        app_id=prefix + "app",
        model_store=store,
        threads=args.threads,
        log_level="warning",
        processing_guarantee=mode,
        session_store="memory",
        ready_timeout_s=120,
    )
    worker.start()
    try:
        wait_processed(worker, len(backlog), timeout_s=900)
        rate, out, n_dlq = flat_out(bootstrap, names, len(backlog), isolation_level=isolation)
        print(f"{mode}: flat out {rate:,.0f} events/s ({len(out)} outputs)", flush=True)
        fr = fixed_rate_phase(bootstrap, names, args, item_ids, run, isolation)
    finally:
        worker.stop(deadline_s=15)
    pct = fr["pct"]
    row = {
        "processing_guarantee": mode,
        "reader_isolation": isolation,
        "flat_out_events_per_s": round(rate, 1),
        "flat_out_outputs": len(out),
        "flat_out_dlq": n_dlq,
        "fixed_rate_target_events_per_s": args.rate,
        "fixed_rate_achieved_events_per_s": round(fr["achieved"], 1),
        "fixed_rate_answered": len(fr["lat"]),
        "fixed_rate_events": fr["n"],
        "latency_ms": {f"p{q}": round(v, 1) for q, v in pct.items()},
    }
    print(json.dumps(row), flush=True)
    return row


def run(args: argparse.Namespace) -> int:
    from devtools.bench.pipeline import kafka_with_model, run_fields, write_report

    rows: list[dict[str, Any]] = []
    load0 = os.getloadavg()[0]
    with kafka_with_model(args.bootstrap, "bench-eos-") as (bootstrap, store, work):
        for mode in GUARANTEES:
            rows.append(_one(args, bootstrap, store, work, mode))
    print(f"{'guarantee':>14} {'events/s':>9} {'p50 ms':>7} {'p99 ms':>7}")
    for r in rows:
        lat = r["latency_ms"]
        print(
            f"{r['processing_guarantee']:>14} {r['flat_out_events_per_s']:>9,.0f} "
            f"{lat.get('p50', float('nan')):>7.1f} {lat.get('p99', float('nan')):>7.1f}"
        )
    report = {
        **run_fields(load0),
        "broker": "given" if args.bootstrap else "apache-kafka (single node, KRaft)",
        "events": args.events,
        "rows": rows,
    }
    write_report(args.out, report)
    return ExitCode.OK
