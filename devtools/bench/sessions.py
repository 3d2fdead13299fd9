"""``coldstream bench sessions``: sessions for a real user base (not a CI test).

Two parts, in one run, on one machine:

* **store**: ``--users`` distinct users (default 10M) written through the worker's session
  store (:class:`stream_app.sessions.RocksDBSessionStore`, the ``prod`` default) in batches,
  with ``--history`` events each; the process's RSS and the store's size on disk are sampled
  every million users, then random reads are timed. What grows with users is the disk; RSS
  is bounded by RocksDB's caches and write buffers.
* **worker** (``--worker-users``, default 1M; 0 skips it): that many distinct users' events
  through Apache Kafka and a real worker on each store kind (``rocksdb`` and ``memory``),
  worker RSS sampled; then ``kill -9`` and a new worker on the same data directory: the
  recovery time is from the kill to the new worker's first answer to a new event (RocksDB
  resumes from its persisted changelog offsets; the memory store replays the whole
  changelog).

Prints a table and writes ``reports/bench-sessions.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import shutil
import signal
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from coldstream.core.errors import ExitCode

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", type=int, default=10_000_000, help="users written to the store")
    p.add_argument("--history", type=int, default=5, help="events per user session")
    p.add_argument("--reads", type=int, default=100_000, help="random reads timed afterwards")
    p.add_argument(
        "--worker-users",
        type=int,
        default=1_000_000,
        help="users through Kafka + a worker (0: skip)",
    )
    p.add_argument("--stores", default="rocksdb,memory", help="store kinds of the worker part")
    p.add_argument("--bootstrap", default=None, help="an Apache Kafka (default: start one)")
    p.add_argument("--workdir", default=None, help="keep data and logs here (default: a temp dir)")
    p.add_argument("--out", default="reports/bench-sessions.json", help="the JSON report")


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _store_part(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from devtools.processes import rss_mb
    from stream_app.app import create_app
    from stream_app.sessions import session_entry
    from stream_app.settings import Settings

    data = work / "store-data"
    app = create_app(Settings(data_dir=data, session_store="rocksdb", topic_prefix="bench-"))
    store = app.Table("sessions", default=None, partitions=6).data
    pid = os.getpid()
    samples = [{"users": 0, "rss_mb": round(rss_mb(pid) or 0.0, 1), "disk_mb": 0.0}]
    hist = [session_entry(str(1 + j), j % 2, 1.7e9 + j, f"e{j}") for j in range(args.history)]
    t0 = time.perf_counter()
    from tqdm import tqdm

    step = 1_000_000 if args.users >= 1_000_000 else max(1, args.users // 10)
    for i in tqdm(range(args.users), desc="store writes", unit="user", mininterval=5):
        store.put(i % 6, f"user-{i}", hist)
        if (i + 1) % step == 0:
            samples.append(
                {
                    "users": i + 1,
                    "rss_mb": round(rss_mb(pid) or 0.0, 1),
                    "disk_mb": round(_dir_mb(data), 1),
                }
            )
    write_s = time.perf_counter() - t0
    rng = random.Random(0)
    keys = [f"user-{rng.randrange(args.users)}" for _ in range(args.reads)]
    t1 = time.perf_counter()
    found = sum(1 for k in keys if store.get(k) is not None)
    read_s = time.perf_counter() - t1
    rss = [s["rss_mb"] for s in samples]
    return {
        "users": args.users,
        "history_events": args.history,
        "writes_per_s": round(args.users / write_s),
        "read_us": round(1e6 * read_s / max(1, args.reads), 1),
        "reads_found": found,
        "rss_mb_start": rss[0],
        "rss_mb_peak": max(rss),
        "rss_mb_end": rss[-1],
        "rss_growth_mb_per_million_users": round(
            (rss[-1] - rss[min(1, len(rss) - 1)]) / max(1, (args.users - step) / 1e6), 1
        ),
        "disk_mb": round(_dir_mb(data), 1),
        "samples": samples,
    }


def _worker_part(args: argparse.Namespace, work: Path, bootstrap: str, kind: str) -> dict[str, Any]:
    from coldstream.core.records import event_payload
    from coldstream.core.topics import create_topics, load_topics, topic_names
    from devtools.checkpoints import dev_signer, make_checkpoint, verify_env
    from devtools.kafka_io import produce, read_until
    from devtools.processes import WorkerProcess, rss_mb

    prefix = f"bench-sess-{kind}-{uuid.uuid4().hex[:6]}-"
    asyncio.run(create_topics(bootstrap, load_topics(), replication_factor=1, prefix=prefix))
    names = topic_names(prefix)
    store = work / f"model-{kind}"
    make_checkpoint(store, n_items=1682, dim=64, text_dim=384, signer=dev_signer())
    data = work / f"data-{kind}"
    options: dict[str, Any] = dict(
        env={**os.environ, **verify_env()},
        bootstrap=bootstrap,
        topic_prefix=prefix,
        app_id=prefix + "app",
        model_store=store,
        threads=1,
        log_level="warning",
        session_store=kind,
        data_dir=data,
    )
    n = args.worker_users
    records = [
        (
            names["clicks"],
            f"u{i}".encode(),
            event_payload(f"u{i}", str(1 + i % 1682), event_id=f"{prefix}{i}", ts=time.time()),
        )
        for i in range(n)
    ]
    w = WorkerProcess(log_path=work / f"worker-{kind}-a.log", **options).start()
    assert w.proc is not None
    t0 = time.perf_counter()
    asyncio.run(produce(bootstrap, records))
    seen = [0]

    def count(batch: list[Any], _t: float) -> None:
        seen[0] += len(batch)

    asyncio.run(
        read_until(
            bootstrap,
            [names["recommendations"]],
            count=n,
            timeout_s=3600,
            keep=False,
            on_records=count,
        )
    )
    through_s = time.perf_counter() - t0
    rss_after = rss_mb(w.proc.pid)
    time.sleep(3.0)  # let the changelog acknowledgements land (persisted offsets)
    t_kill = time.time()
    os.kill(w.proc.pid, signal.SIGKILL)
    w.proc.wait(10)
    w.proc = None
    b = WorkerProcess(
        log_path=work / f"worker-{kind}-b.log", ready_timeout_s=3600, **options
    ).start()
    probe_id = prefix + "probe"
    value = event_payload("probe", "1", event_id=probe_id, ts=time.time())
    asyncio.run(produce(bootstrap, [(names["clicks"], b"probe", value)]))
    answered: list[float] = []

    def spot(batch: list[Any], _t: float) -> None:
        for r in batch:
            if r.value is not None and probe_id.encode() in r.value:
                answered.append(json.loads(r.value)["produced_at"])

    asyncio.run(
        read_until(
            bootstrap,
            [names["recommendations"]],
            until=lambda: bool(answered),
            timeout_s=3600,
            on_records=spot,
            keep=False,
        )
    )
    recovery_s = (answered[0] if answered else time.time()) - t_kill
    b.stop()
    return {
        "store": kind,
        "users": n,
        "answered": seen[0],
        "events_per_s": round(n / through_s),
        "worker_rss_mb": round(rss_after or 0.0, 1),
        "recovery_s_after_kill9": round(recovery_s, 1),
        "probe_answered": bool(answered),
        "data_dir_mb": round(_dir_mb(data), 1) if data.exists() else 0.0,
    }


def run(args: argparse.Namespace) -> int:
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-sessions-"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_avg_1m_start": round(os.getloadavg()[0], 2),
    }
    broker = None
    try:
        report["store"] = _store_part(args, work)
        print(json.dumps({k: v for k, v in report["store"].items() if k != "samples"}, indent=1))
        if args.worker_users:
            from devtools.brokers import KafkaBroker

            bootstrap = args.bootstrap
            if bootstrap is None:
                broker = KafkaBroker(work / "kafka").start()
                bootstrap = broker.bootstrap
            report["worker"] = [
                _worker_part(args, work, bootstrap, kind) for kind in args.stores.split(",")
            ]
            for row in report["worker"]:
                print(json.dumps(row))
    finally:
        if broker is not None:
            broker.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    report["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return ExitCode.OK
