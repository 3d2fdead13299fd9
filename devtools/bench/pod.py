"""``coldstream bench pod``: what one 2-core pod serves, flat out, per way of using its cores.

A worker process does its Python work on one thread; only the student's kernels and the
FAISS search release the GIL. Per catalogue size (random clustered students, as ``bench
serve --items``), one Apache Kafka, a fresh topic set and the same backlog per row:

* one process, one torch/FAISS thread (the benchmarks' worker);
* one process, two threads (the GIL-free kernels on both cores);
* two processes of one thread each, one consumer group (what ``replicas`` or a second
  container per pod gives).

The workers start and own their partitions before the backlog is sent, so a row measures
serving, not start-up or a rebalance. Events/s come from the outputs' broker timestamps
(first to last). Once per run, the ceilings over the same backlog: bare aiokafka consume ->
produce, and a stock Faust agent that only counts (:mod:`devtools.bench.null_agent`); each
row is also stated as a multiple of the latter. Writes ``reports/bench-pod.json`` and
prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run"]

CONFIGS = (
    ("1 process, 1 thread", 1, 1),
    ("1 process, 2 threads", 1, 2),
    ("2 processes, 1 thread each", 2, 1),
)
"""``(label, processes, torch/FAISS threads per process)``."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", default="1682,1000000", help="catalogue sizes, comma-separated")
    p.add_argument("--events", type=int, default=150_000, help="backlog per row")
    p.add_argument("--users", type=int, default=20_000, help="distinct users in the events")
    p.add_argument("--bootstrap", default=None, help="an Apache Kafka (default: start one)")
    p.add_argument("--out", default="reports/bench-pod.json", help="the JSON report")


def _row(
    bootstrap: str,
    store: Path,
    work: Path,
    env: dict[str, str],
    plan: Any,
    n_items: int,
    label: str,
    processes: int,
    threads: int,
) -> dict[str, Any]:
    from coldstream.core.topics import create_topics, topic_names
    from devtools.bench.pipeline import flat_out, processed, send_events
    from devtools.processes import WorkerProcess, wait_ready
    from devtools.waiting import wait_until

    tag = uuid.uuid4().hex[:6]
    prefix = f"pod-{tag}-"
    names = topic_names(prefix)
    asyncio.run(create_topics(bootstrap, replication_factor=1, prefix=prefix))
    workers = []
    for i in range(processes):
        folder = work / f"{tag}-w{i}"  # its own working folder (Faust's data dir)
        folder.mkdir()
        workers.append(
            WorkerProcess(
                log_path=folder / "worker.log",
                env=env,
                bootstrap=bootstrap,
                topic_prefix=prefix,
                app_id=prefix + "app",  # one consumer group
                model_store=store,
                threads=threads,
                log_level="warning",
                session_store="memory",
                ready_timeout_s=1800,
            )
        )
    try:
        for w in workers:
            w.spawn()
        for w in workers:  # each owns input partitions: the group is formed
            assert w.proc is not None
            wait_ready(
                w.url("/ready?partitions=1"), proc=w.proc, timeout_s=1800, log_path=w.log_path
            )
        time.sleep(5.0)  # the group settles after the last join
        backlog = plan.events(n_items, tag)
        asyncio.run(send_events(bootstrap, names, backlog))
        wait_until(
            lambda: sum(processed(w.get_text("/metrics")) for w in workers) >= len(backlog),
            1800,
            f"{processes} worker(s) to process {len(backlog)} events",
            interval_s=1.0,
        )
        rate, out, n_dlq = flat_out(bootstrap, names, len(backlog))
        shares = [processed(w.get_text("/metrics")) / len(backlog) for w in workers]
    finally:
        for w in workers:
            w.stop(deadline_s=15)
    row = {
        "items": n_items,
        "config": label,
        "processes": processes,
        "threads_per_process": threads,
        "events_per_s": round(rate, 1),
        "events_per_s_per_process": round(rate / processes, 1),
        "outputs": len(out),
        "dlq": n_dlq,
        "share_per_process": [round(s, 3) for s in shares],
    }
    print(json.dumps(row), flush=True)
    return row


def ceilings(bootstrap: str, work: Path, plan: Any) -> dict[str, float]:
    """The same backlog (1,682 items) through bare aiokafka consume -> produce, and through a
    stock Faust agent that only counts (:mod:`devtools.bench.null_agent`): events/s."""
    from coldstream.core.topics import create_topics, topic_names
    from devtools.bench.pipeline import passthrough, send_events
    from devtools.brokers.probe import free_port
    from devtools.processes import start_process, stop_process
    from devtools.waiting import wait_until

    tag = uuid.uuid4().hex[:6]
    pt, na = f"pod-{tag}-pt-", f"pod-{tag}-null-"
    for prefix in (pt, na):
        asyncio.run(create_topics(bootstrap, replication_factor=1, prefix=prefix))
    events = plan.events(1682, tag)
    clicks = [("clicks", k, v) for _, k, v in events]  # one input topic for the pass-through
    asyncio.run(send_events(bootstrap, topic_names(pt), clicks))
    n = len(clicks)
    bare = asyncio.run(
        passthrough(
            bootstrap, topic_names(pt)["clicks"], topic_names(pt)["recommendations"], n, 600
        )
    )
    names = topic_names(na)
    asyncio.run(send_events(bootstrap, names, events))
    out = work / f"null-{tag}.json"
    proc = start_process(
        [sys.executable, "-m", "devtools.bench.null_agent"],
        log_path=work / f"null-{tag}.log",
        env={
            **os.environ,
            "NULL_AGENT_BOOTSTRAP": bootstrap,
            "NULL_AGENT_APP_ID": na + "app",
            "NULL_AGENT_TOPICS": f"{names['clicks']},{names['purchases']}",
            "NULL_AGENT_EVENTS": str(len(events)),
            "NULL_AGENT_WEB_PORT": str(free_port()),
            "NULL_AGENT_OUT": str(out),
        },
        cwd=work,
    )
    try:

        def counted_all() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the stock Faust agent exited; see {work}/null-{tag}.log")
            return out.exists()

        wait_until(counted_all, 600, "the stock Faust agent to count the backlog", interval_s=0.5)
        counted = json.loads(out.read_text())
    finally:
        stop_process(proc, deadline_s=15)
    stock = (counted["events"] - 1) / counted["seconds"]
    print(f"ceilings: bare aiokafka {bare:,.0f} ev/s, stock Faust agent counting {stock:,.0f} ev/s")
    return {
        "bare_aiokafka_passthrough_events_per_s": round(bare, 1),
        "stock_faust_counting_agent_events_per_s": round(stock, 1),
    }


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from devtools.bench.pipeline import run_fields, start_broker, write_report
    from devtools.bench.scale import EventPlan
    from devtools.checkpoints import scale_checkpoint, verify_env

    load_start = os.getloadavg()[0]
    sizes = [int(x) for x in args.items.split(",")]
    work = Path(tempfile.mkdtemp(prefix="coldstream-bench-pod-"))
    env = {**os.environ, **verify_env()}
    plan = EventPlan(args.events, n_users=args.users, seed=1)
    rows: list[dict[str, Any]] = []
    broker = None
    try:
        broker, bootstrap, broker_name = start_broker(
            argparse.Namespace(bootstrap=args.bootstrap, broker="kafka"), work
        )
        ceiling = ceilings(bootstrap, work, plan)
        for n_items in sizes:
            store = work / f"store-{n_items}"
            scale_checkpoint(store, n_items)
            one = None
            for label, processes, threads in CONFIGS:
                row = _row(bootstrap, store, work, env, plan, n_items, label, processes, threads)
                one = one or row["events_per_s"]
                row["vs_one_process_one_thread"] = round(row["events_per_s"] / one, 2)
                row["vs_stock_faust_counting"] = round(
                    row["events_per_s"] / ceiling["stock_faust_counting_agent_events_per_s"], 2
                )
                rows.append(row)
            shutil.rmtree(store, ignore_errors=True)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "what": "coldstream bench pod: events/s of one 2-core pod, flat out, per way of using "
        "its cores (one process with 1 or 2 torch/FAISS threads, or two processes in one "
        "consumer group); the same backlog per row, sent after the workers own their "
        "partitions",
        "command": "coldstream bench pod " + " ".join(sys.argv[3:]),
        "broker": broker_name,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "users": args.users,
        "events": args.events,
        "model": "random student (GRU, dim 64, text 32), item text in one topic per 1,000 "
        "items (at least 16)",
        **ceiling,
        "rows": rows,
        **run_fields(load_start),
    }
    write_report(args.out, report)
    table = Table(title="one 2-core pod, flat out")
    for col in ("items", "config", "events/s", "per process", "vs 1x1", "vs stock Faust"):
        table.add_column(col, justify="right" if col != "config" else "left")
    for r in rows:
        table.add_row(
            f"{r['items']:,}",
            r["config"],
            f"{r['events_per_s']:,.0f}",
            f"{r['events_per_s_per_process']:,.0f}",
            f"{r['vs_one_process_one_thread']:.2f}x",
            f"{r['vs_stock_faust_counting']:.2f}x",
        )
    Console().print(table)
    return 0
