"""``coldstream bench profile``: where a worker's CPU goes per event, by stage, at flat out.

On its own Apache Kafka, a backlog of ``--events`` input events is loaded, a worker (the
benchmark's options) is started on it, and while it drains, the worker process is sampled
for ``--seconds`` with py-spy (``--native``: frames inside torch, FAISS, msgspec, orjson
and aiokafka's C record code count where they are spent, on every thread). The worker's
CPU time (``/proc/<pid>/stat``) and its processed-event counter (``/metrics``) are read at
both ends of the window, so

    CPU us per event = CPU seconds in the window / events processed in the window,

and each stage's share of the samples splits that figure. A sample belongs to the stage of
the frame nearest its leaf that matches one of :data:`STAGES` (``other``: the event loop,
Faust's services, anything unmatched). Prints the table and writes
``reports/bench-profile.json``. Needs ``py-spy`` (a dev dependency) and permission to
ptrace the worker (a container needs ``SYS_PTRACE``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from coldstream.core.errors import ExitCode

__all__ = ["STAGES", "add_arguments", "attribute", "run"]

STAGES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        (
            "FAISS search + post-filter",
            r"faiss|stream_app/index/|search_unseen|search_wide|"
            r"\b(_take|_unseen|_seen_keys|_search_groups|_keep) \(stream_app/recommender\.py",
        ),
        ("student forward", r"torch|libtorch|mkl|gomp|openblas|student"),
        (
            "ranking: history rows, result lists",
            r"stream_app/recommender\.py",
        ),
        (
            "JSON decode + validation",
            r"validate_event|msgspec|core/events\.py|json/decoder|_json\.",
        ),
        ("record encoding", r"core/records\.py|orjson|recommendation_payload|dlq_payload"),
        (
            "session store + changelog",
            r"stream_app/sessions\.py|faust/stores|rocksdict|prepare_key|prepare_value|"
            r"faust/serializers",
        ),
        ("batch logic + online quality", r"stream_app/batch\.py|stream_app/online\.py"),
        (
            "produce (batches, sender, acks)",
            r"stream_app/produce\.py|stream_app/outputs\.py|aiokafka/producer|stream_app/delivery\.py",
        ),
        (
            "fetch, decode, intake",
            r"aiokafka/consumer|aiokafka/record|stream_app/transport\.py|stream_app/fastpath\.py|"
            r"faust/transport|_incoming|track_message",
        ),
        ("Prometheus metrics", r"prometheus_client|stream_app/metrics\.py"),
        ("serving task (agents.py)", r"stream_app/agents\.py"),
        ("network I/O (aiokafka conn)", r"aiokafka/conn\.py|aiokafka/client\.py"),
    )
)
"""Stage name -> pattern over a py-spy frame (``function (path:line)`` or a native
``symbol (library)``). Listed so that a frame names the work, not its caller: a torch frame
under the recommender is the student's (on CPU the student runs in numpy,
``NumpyEncoder`` in ``coldstream/core/student.py``; torch elsewhere)."""

PASS_THROUGH = re.compile(r"torch/utils/_contextlib\.py")
"""Frames that name no work: torch's ``inference_mode`` decorator wraps the recommender's
ranking, so without this every sample of the ranking's own Python (history rows, result
lists) would fall through to it and count as the student's."""


def attribute(raw: str) -> Counter[str]:
    """Samples per stage from py-spy's ``--format raw`` output (one collapsed stack per
    line, ``frame;frame;...;leaf count``): each stack goes to the stage of the frame nearest
    its leaf that matches :data:`STAGES`, else ``other``."""
    out: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stage = "other (event loop, Faust services)"
        for frame in reversed(stack.split(";")):
            if PASS_THROUGH.search(frame):
                continue
            hit = next((name for name, pat in STAGES if pat.search(frame)), None)
            if hit is not None:
                stage = hit
                break
        out[stage] += int(count)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=int, default=320_000, help="backlog the worker drains")
    p.add_argument("--seconds", type=float, default=10.0, help="sampling window")
    p.add_argument(
        "--warmup-seconds",
        type=float,
        default=12.0,
        help="draining before sampling (the default drains past the worker's 100,000-event "
        "dedupe memory: the window sees the steady state)",
    )
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--users", type=int, default=100_000, help="distinct users in the events")
    p.add_argument("--batch-size", type=int, default=512, help="worker micro-batch size")
    p.add_argument("--threads", type=int, default=1, help="worker torch/FAISS threads")
    p.add_argument("--bootstrap", default=None, help="an Apache Kafka (default: start one)")
    p.add_argument("--out", default="reports/bench-profile.json", help="the JSON report")
    p.add_argument(
        "--raw-out",
        default=None,
        help="also keep py-spy's collapsed stacks here, input for a flame graph (default: not kept)",
    )
    p.add_argument(
        "--native",
        action="store_true",
        help="sample native frames too (py-spy --native: pauses the worker for each sample, "
        "which slows it; default: Python frames, sampled without pausing it)",
    )


def run(args: argparse.Namespace) -> int:
    from coldstream.core.checkpoint import latest_checkpoint, load_checkpoint
    from coldstream.core.topics import create_topics, topic_names
    from devtools.bench.pipeline import (
        cpu_seconds,
        kafka_with_model,
        processed,
        run_fields,
        send_events,
        write_report,
    )
    from devtools.bench.serve import make_events
    from devtools.processes import WorkerProcess

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("coldstream bench profile: py-spy not found (pip install py-spy: a dev dependency)")
        return ExitCode.UNAVAILABLE
    load0 = os.getloadavg()[0]
    with kafka_with_model(args.bootstrap, "bench-profile-") as (bootstrap, store, work):
        checkpoint = latest_checkpoint(store)
        assert checkpoint is not None
        item_ids = load_checkpoint(checkpoint).item_ids
        prefix = f"bench-prof-{uuid.uuid4().hex[:6]}-"
        names = topic_names(prefix)
        asyncio.run(create_topics(bootstrap, replication_factor=1, prefix=prefix))
        backlog = make_events(
            args.events, n_users=args.users, item_ids=item_ids, seed=1, run=uuid.uuid4().hex[:6]
        )
        asyncio.run(send_events(bootstrap, names, backlog))
        print(f"backlog: {len(backlog):,} events", flush=True)
        worker = WorkerProcess(
            log_path=work / "worker.log",
            bootstrap=bootstrap,
            topic_prefix=prefix,
            app_id=prefix + "app",
            model_store=store,
            threads=args.threads,
            batch_size=args.batch_size,
            log_level="warning",
            ready_timeout_s=120,
        )
        worker.start()
        try:
            time.sleep(args.warmup_seconds)
            assert worker.proc is not None
            pid = worker.proc.pid
            n0, c0 = processed(worker.get_text("/metrics")), cpu_seconds(pid)
            raw_path = work / "profile.txt"
            t0 = time.monotonic()
            subprocess.run(  # noqa: S603 - our own worker's pid
                [spy, "record", "--pid", str(pid), "--rate", str(args.rate)]
                + (["--native"] if args.native else ["--nonblocking"])
                + ["--duration", str(int(args.seconds)), "--format", "raw", "-o", str(raw_path)],
                check=True,
                capture_output=True,
            )
            wall = time.monotonic() - t0
            n1, c1 = processed(worker.get_text("/metrics")), cpu_seconds(pid)
            raw = raw_path.read_text()
            if args.raw_out:
                Path(args.raw_out).write_text(raw)
        finally:
            worker.stop(deadline_s=15)
    events = n1 - n0
    if events <= 0 or events >= args.events:
        print(
            f"coldstream bench profile: {events} events in the sampling window; the backlog "
            f"must outlast it (raise --events or lower --seconds)"
        )
        return ExitCode.FAILURE
    samples = attribute(raw)
    total = sum(samples.values())
    cpu_us = (c1 - c0) / events * 1e6
    rows = [
        {
            "stage": stage,
            "samples": n,
            "share": round(n / total, 4),
            "cpu_us_per_event": round(cpu_us * n / total, 2),
        }
        for stage, n in samples.most_common()
    ]
    print(
        f"{events:,} events in {wall:.1f} s ({events / wall:,.0f} events/s); "
        f"{cpu_us:.1f} us CPU per event, {(c1 - c0) / wall:.2f} cores; {total:,} samples"
    )
    print(f"{'stage':<36} {'share':>6} {'us/event':>9}")
    for r in rows:
        print(f"{r['stage']:<36} {r['share']:>6.1%} {r['cpu_us_per_event']:>9.1f}")
    report = {
        "what": "coldstream bench profile: py-spy --native samples of one worker draining a "
        "backlog on Apache Kafka, attributed to stages (devtools/bench/profile.py STAGES)",
        **run_fields(load0),
        "items": len(item_ids),
        "users": args.users,
        "batch_size": args.batch_size,
        "worker_threads": args.threads,
        "events_in_window": events,
        "window_s": round(wall, 2),
        "events_per_s": round(events / wall, 1),
        "cpu_us_per_event": round(cpu_us, 2),
        "cores_used": round((c1 - c0) / wall, 3),
        "samples": total,
        "stages": rows,
    }
    write_report(args.out, report)
    return ExitCode.OK
