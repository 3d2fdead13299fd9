"""``coldstream bench latency``: the worker's latency settings swept at fixed rates, one run.

On one Apache Kafka, for each processing guarantee, micro-batch window
(``COLDSTREAM_BATCH_WINDOW_MS``) and, under ``at_least_once``, each number of batches allowed
in flight before their commit (``COLDSTREAM_MAX_UNCOMMITTED_BATCHES``; ``exactly_once``
commits each batch in its transactions before the next), a fresh worker on fresh topics
serves every rate of ``--rates`` in turn: ``--warmup-seconds`` unmeasured, then
``--seconds`` measured (:func:`devtools.bench.serve.fixed_rate_phase`). Latency is the
benchmark consumer's receipt of the recommendation minus the event's send time, read
``read_committed`` under ``exactly_once``; each row also gives the worker's own part
(``worker_latency_ms``: the send time to the recommendation built, from the record's
timestamp; the rest is delivery and the reader's fetch). The outputs go out as record
batches sent at once (``COLDSTREAM_PRODUCE_BATCHES``), so the producer's linger no longer
adds to them. The benchmark's producer and reader run on the same machine as the worker and
the broker: near the worker's capacity (5,000 ev/s on a slow 2-core machine) the rows measure
queueing, and vary by several times from run to run.

Two more things per run, so that a row says where its latency goes:

- the **floor** (``--floor``, on by default), measured first: the same producer at the same
  rate, read back from the input topic by the same reader, with no worker. A worker row's
  latency less the floor is what the worker adds (its fetch, batching, processing and
  produce); the floor is what the machine, the broker and the benchmark's clients cost;
- per row, the worker process's **CPU** over the phase (``/proc/<pid>/stat``, all threads,
  warm-up included): cores used, CPU microseconds per event and events per micro-batch (from
  its ``/metrics``). At a low rate this is far above ``coldstream bench profile``'s flat-out
  figure: costs per batch and per fetch are spread over few events.

Prints a table, and for each guarantee and rate the setting with the lowest p99 among those
that answered every event at the rate asked; writes ``reports/bench-latency.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from coldstream.core.errors import ExitCode
from devtools.bench import float_list, int_list

__all__ = ["add_arguments", "best_rows", "grid", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rates", type=float_list, default=[1000.0, 5000.0], help="events/s, comma-separated"
    )
    p.add_argument(
        "--guarantees",
        default="at_least_once,exactly_once",
        help="processing guarantees, comma-separated",
    )
    p.add_argument("--windows", type=float_list, default=[2.0, 5.0], help="batch windows (ms)")
    p.add_argument(
        "--in-flight",
        type=int_list,
        default=[1, 4],
        help="max uncommitted batches (at_least_once only)",
    )
    p.add_argument("--seconds", type=float, default=15.0, help="measured, per rate")
    p.add_argument("--warmup-seconds", type=float, default=5.0, help="unmeasured, before each rate")
    p.add_argument("--users", type=int, default=20_000, help="distinct users in the events")
    p.add_argument("--threads", type=int, default=1, help="worker torch/FAISS threads")
    p.add_argument(
        "--fetch-min-bytes",
        type=int_list,
        default=[1, 16384],
        help="consumer fetch minimum bytes (COLDSTREAM_FETCH_MIN_BYTES), comma-separated",
    )
    p.add_argument(
        "--floor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="first measure the same producer read back by a bare consumer (no worker)",
    )
    p.add_argument("--bootstrap", default=None, help="an Apache Kafka (default: start one)")
    p.add_argument("--out", default="reports/bench-latency.json", help="the JSON report")


def grid(
    guarantees: list[str],
    windows: list[float],
    in_flight: list[int],
    fetch_min_bytes: list[int] | None = None,
) -> list[dict[str, Any]]:
    """The worker settings to try: every window and fetch minimum (none given: the worker's
    default, ``None``) for every guarantee, and every in-flight count under
    ``at_least_once`` only (``exactly_once`` ignores it)."""
    out = []
    for g in guarantees:
        for b in fetch_min_bytes or [None]:  # None: the worker's default
            for w in windows:
                for n in in_flight if g == "at_least_once" else [1]:
                    out.append(
                        {
                            "processing_guarantee": g,
                            "fetch_min_bytes": b,
                            "batch_window_ms": w,
                            "max_uncommitted_batches": n,
                        }
                    )
    return out


def best_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (guarantee, rate): the row with the lowest p99 among those that answered every
    event and kept to 95% of the rate asked (none: that pair is left out)."""
    best: dict[tuple[str, float], dict[str, Any]] = {}
    for r in rows:
        ok = r["answered"] == r["events"] and r["achieved_events_per_s"] >= 0.95 * r["rate"]
        p99 = r["latency_ms"].get("p99")
        if not ok or p99 is None:
            continue
        key = (r["processing_guarantee"], r["rate"])
        if key not in best or p99 < best[key]["latency_ms"]["p99"]:
            best[key] = r
    return [best[k] for k in sorted(best)]


def _fresh_topics(bootstrap: str, store: Path, kind: str) -> tuple[list[str], str, dict[str, str]]:
    """The store's item ids, and a fresh topic prefix (``kind`` + random) with its topics
    created: ``(item_ids, prefix, names)``."""
    from coldstream.core.checkpoint import latest_checkpoint, load_checkpoint
    from coldstream.core.topics import create_topics, topic_names

    checkpoint = latest_checkpoint(store)
    assert checkpoint is not None
    prefix = f"{kind}{uuid.uuid4().hex[:8]}-"
    asyncio.run(create_topics(bootstrap, replication_factor=1, prefix=prefix))
    return load_checkpoint(checkpoint).item_ids, prefix, topic_names(prefix)


def _answered(fr: dict[str, Any]) -> dict[str, Any]:
    """A row's rate and latency fields from :func:`devtools.bench.pipeline.fixed_rate`."""
    return {
        "achieved_events_per_s": round(fr["achieved"], 1),
        "events": fr["n"],
        "answered": len(fr["lat"]),
        "latency_ms": {f"p{q}": round(v, 1) for q, v in fr["pct"].items()},
    }


def _floor(args: argparse.Namespace, bootstrap: str, store: Path) -> list[dict[str, Any]]:
    """The latency floor of this machine and broker, per rate: the benchmark's producer and
    reader as in a worker's row, the reader reading the input topic itself (no worker). A
    worker row's latency less this is what the worker adds (its fetch, batching, processing
    and produce)."""
    from devtools.bench.serve import fixed_rate_phase

    item_ids, _, names = _fresh_topics(bootstrap, store, "bench-floor-")
    read_back = {**names, "recommendations": names["clicks"]}  # the reader reads the input
    rows = []
    for rate in args.rates:
        phase = argparse.Namespace(**{**vars(args), "rate": rate})
        run = uuid.uuid4().hex[:6]
        # the events of a worker row, every one to clicks (the topic the reader reads)
        fr = fixed_rate_phase(bootstrap, read_back, phase, item_ids, run, only_topic="clicks")
        row = {"rate": rate, **_answered(fr)}
        print(json.dumps({"floor": row}), flush=True)
        rows.append(row)
    return rows


def _one(
    args: argparse.Namespace, bootstrap: str, store: Path, work: Path, setting: dict[str, Any]
) -> list[dict[str, Any]]:
    from devtools.bench.serve import fixed_rate_phase
    from devtools.processes import WorkerProcess

    item_ids, prefix, names = _fresh_topics(bootstrap, store, "bench-lat-")
    eos = setting["processing_guarantee"] == "exactly_once"
    isolation = "read_committed" if eos else "read_uncommitted"
    worker = WorkerProcess(
        log_path=work / f"worker-{prefix}.log",
        bootstrap=bootstrap,
        topic_prefix=prefix,
        app_id=prefix + "app",
        model_store=store,
        threads=args.threads,
        log_level="warning",
        session_store="memory",
        ready_timeout_s=120,
        **setting,
    )
    worker.start()
    rows = []
    try:
        for rate in args.rates:
            phase = argparse.Namespace(**{**vars(args), "rate": rate})
            run = uuid.uuid4().hex[:6]
            assert worker.proc is not None
            before = _worker_counts(worker)
            fr = fixed_rate_phase(bootstrap, names, phase, item_ids, run, isolation)
            cpu, events, n_batches, wall = (
                b - a for a, b in zip(before, _worker_counts(worker), strict=True)
            )
            row = {
                **setting,
                "rate": rate,
                **_answered(fr),
                # the worker's own part: the event's send time -> its recommendation built
                "worker_latency_ms": {f"p{q}": round(v, 1) for q, v in fr["wpct"].items()},
                # the worker process's CPU (all threads) over the phase, warm-up included
                "worker_cpu": {
                    "cores": round(cpu / wall, 3),
                    "us_per_event": round(cpu / max(events, 1) * 1e6, 1),
                    "events_per_batch": round(events / max(n_batches, 1), 2),
                },
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        worker.stop(deadline_s=15)
    return rows


def _worker_counts(worker: Any) -> tuple[float, float, float, float]:
    """The worker's (CPU seconds of all its threads, events processed, micro-batches,
    monotonic time) now."""
    from devtools.bench.pipeline import batches, cpu_seconds, processed

    text = worker.get_text("/metrics")
    return cpu_seconds(worker.proc.pid), processed(text), batches(text), time.monotonic()


def _table_tail(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    return (
        f"{r['rate']:>6g} {r['achieved_events_per_s']:>6,.0f} "
        f"{lat.get('p50', float('nan')):>7.1f} {lat.get('p95', float('nan')):>7.1f} "
        f"{lat.get('p99', float('nan')):>7.1f}"
    )


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from devtools.bench.pipeline import kafka_with_model, run_fields, write_report

    settings = grid(
        [g.strip() for g in args.guarantees.split(",") if g.strip()],
        args.windows,
        args.in_flight,
        args.fetch_min_bytes,
    )
    rows: list[dict[str, Any]] = []
    load0 = os.getloadavg()[0]
    floor: list[dict[str, Any]] = []
    with kafka_with_model(args.bootstrap, "bench-latency-") as (bootstrap, store, work):
        if args.floor:
            floor = _floor(args, bootstrap, store)
        for setting in tqdm(settings, desc="worker settings", unit="worker"):
            rows.extend(_one(args, bootstrap, store, work, setting))
    print(
        f"{'guarantee':>14} {'min B':>6} {'window':>6} {'flight':>6} {'rate':>6} {'got':>6} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'cpu us/ev':>9} {'ev/batch':>8}"
    )
    for r in floor:
        print(f"{'floor (no worker)':>35} {_table_tail(r)}")
    for r in rows:
        cpu = r["worker_cpu"]
        print(
            f"{r['processing_guarantee']:>14} {str(r['fetch_min_bytes']):>6} {r['batch_window_ms']:>6g} "
            f"{r['max_uncommitted_batches']:>6} {_table_tail(r)} "
            f"{cpu['us_per_event']:>9,.0f} {cpu['events_per_batch']:>8.1f}"
        )
    best = best_rows(rows)
    for b in best:
        print(
            f"best p99, {b['processing_guarantee']} at {b['rate']:g} ev/s: fetch minimum "
            f"{b['fetch_min_bytes']} B, window {b['batch_window_ms']:g} ms, "
            f"{b['max_uncommitted_batches']} in flight "
            f"({b['latency_ms']['p50']} / {b['latency_ms']['p99']} ms)"
        )
    report = {
        "what": "coldstream bench latency: fixed-rate latency per worker setting, one run",
        **run_fields(load0),
        "broker": "given" if args.bootstrap else "apache-kafka (single node, KRaft)",
        "seconds": args.seconds,
        "warmup_seconds": args.warmup_seconds,
        "users": args.users,
        "latency_definition": "benchmark consumer receipt of the recommendation - producer send time",
        "floor_definition": (
            "the same producer at the same rate, read back from the input topic by the same "
            "reader, no worker: what the machine, the broker and the benchmark's clients cost"
        ),
        "floor": floor,
        "rows": rows,
        "best_p99": best,
    }
    write_report(args.out, report)
    return ExitCode.OK
