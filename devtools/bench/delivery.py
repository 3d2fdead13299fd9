"""``coldstream bench delivery``: what the delivery guarantee costs, measured in one run.

For each ``max_uncommitted_batches`` (``COLDSTREAM_MAX_UNCOMMITTED_BATCHES``; 1 is the
strongest at-least-once mode: a batch's inputs are committed right after its outputs were
delivered, and the next batch waits for that (the default); 4 lets small batches go on while
earlier ones are delivered, within ``COLDSTREAM_MAX_UNCOMMITTED_EVENTS``, the batch size by
default), on one Apache Kafka:

* **throughput**: a backlog of ``--events`` input events, then a fresh worker drains it;
  events/s = outputs / (last - first output record time);
* **duplicates after kill -9**: the fault suite's ``kill9`` scenario (a stream at
  ``--rate``, the worker SIGKILLed at 40%, a new worker started): the outputs beyond one per
  input.

Exactly-once (``COLDSTREAM_PROCESSING_GUARANTEE=exactly_once``, Kafka transactions) is
compared with at-least-once by ``coldstream bench eos`` (``reports/bench-eos.json``). Prints a
table and writes ``reports/bench-delivery.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from coldstream.core.errors import ExitCode

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--modes", default="1,4,16", help="max_uncommitted_batches values to compare")
    p.add_argument("--events", type=int, default=40_000, help="backlog of the throughput phase")
    p.add_argument("--kill-events", type=int, default=3000, help="stream of the kill -9 phase")
    p.add_argument("--rate", type=float, default=600.0, help="events/s of the kill -9 stream")
    p.add_argument("--bootstrap", default=None, help="an Apache Kafka (default: start one)")
    p.add_argument("--out", default="reports/bench-delivery.json", help="the JSON report")


def _harness(bootstrap: str, work: Path, name: str, mode: int) -> Any:
    from coldstream.core.topics import create_topics, load_topics, prefixed
    from devtools.faults.harness import Harness
    from devtools.kafka_io import run_coro

    prefix = f"bench-dl-{name}-{mode}-{uuid.uuid4().hex[:6]}-"
    specs = load_topics()
    run_coro(create_topics(bootstrap, specs, replication_factor=1, prefix=prefix), 120)
    topics = {k: s.name for k, s in prefixed(specs, prefix).items()}
    return Harness(
        bootstrap=bootstrap,
        prefix=prefix,
        topics=topics,
        workdir=work / f"{name}-{mode}",
        worker_options={"max_uncommitted_batches": mode},
    )


def _throughput(bootstrap: str, work: Path, mode: int, n: int) -> dict[str, Any]:
    from devtools.faults.inputs import good_events

    h = _harness(bootstrap, work, "tp", mode)
    try:
        inputs = good_events(n, n_users=20_000, tag=h.prefix + "tp")
        h.produce(inputs)
        h.start_worker("a")
        out = h.collect(inputs, timeout_s=1800, idle_s=1.0)
        times = sorted(out.produced_at)
        span = (times[-1] - times[0]) if len(times) > 1 else float("nan")
        return {"outputs": out.n_recs, "events_per_s": round(out.n_recs / span) if span else None}
    finally:
        h.close()


def _kill9(bootstrap: str, work: Path, mode: int, n: int, rate: float) -> dict[str, Any]:
    from devtools.faults.scenarios import kill9

    h = _harness(bootstrap, work, "k9", mode)
    try:
        r = kill9(h, n_events=n, rate=rate)
        return {
            "events": r.events_in,
            "lost": r.lost,
            "duplicated": r.duplicated,
            "recovery_s": r.recovery_seconds,
        }
    finally:
        h.close()


def run(args: argparse.Namespace) -> int:
    from devtools.bench.pipeline import run_fields, write_report
    from devtools.brokers import KafkaBroker

    work = Path(tempfile.mkdtemp(prefix="bench-delivery-"))
    broker = None
    rows = []
    load0 = os.getloadavg()[0]
    try:
        bootstrap = args.bootstrap
        if bootstrap is None:
            broker = KafkaBroker(work / "kafka").start()
            bootstrap = broker.bootstrap
        for mode in (int(m) for m in args.modes.split(",")):
            t0 = time.perf_counter()
            row = {
                "max_uncommitted_batches": mode,
                **_throughput(bootstrap, work, mode, args.events),
                "kill9": _kill9(bootstrap, work, mode, args.kill_events, args.rate),
            }
            row["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0]["events_per_s"] if rows and rows[0]["events_per_s"] else None
    print(f"{'mode':>5} {'events/s':>9} {'vs mode 1':>9} {'kill -9 dup':>11} {'lost':>5}")
    for r in rows:
        rel = f"{r['events_per_s'] / base:.2f}" if base and r["events_per_s"] else "-"
        print(
            f"{r['max_uncommitted_batches']:>5} {r['events_per_s'] or '-':>9} {rel:>9} "
            f"{r['kill9']['duplicated']:>11} {r['kill9']['lost']:>5}"
        )
    report = {
        **run_fields(load0),
        "exactly_once": "see reports/bench-eos.json (coldstream bench eos)",
        "rows": rows,
    }
    write_report(args.out, report)
    return ExitCode.OK
