"""The pieces of the broker benchmarks that drive the real pipeline: paced sends, the
read-until collector, the bare pass-through ceiling, and the flat-out and fixed-rate phases
(``coldstream bench serve``, :mod:`devtools.bench.serve`; every catalogue size in one run,
:mod:`devtools.bench.scale`)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from devtools.kafka_io import produce, read_until
from devtools.waiting import wait_until

if TYPE_CHECKING:
    from devtools.processes import WorkerProcess

__all__ = [
    "batches",
    "collect",
    "cpu_seconds",
    "fixed_rate",
    "flat_out",
    "passthrough",
    "processed",
    "rate_from_timestamps",
    "send_events",
    "wait_processed",
]


async def send_events(
    bootstrap: str,
    names: dict[str, str],
    events: list[tuple[str, bytes, bytes]],
    *,
    rate: float = 0.0,
    sent_at: dict[str, float] | None = None,
    run_of_fixed: str = "",
) -> float:
    """Send ``events`` (logical topics); returns the seconds taken. With ``sent_at``, event
    ``i`` has id ``f"{run_of_fixed}-{i}"`` (make_events) and its send time is recorded."""

    def record_send(i: int, _rec: object, t: float) -> None:
        if sent_at is not None:
            sent_at[f"{run_of_fixed}-{i}"] = t

    done = await produce(
        bootstrap,
        ((names[topic], key, value) for topic, key, value in events),
        rate=rate,
        on_sent=record_send,
        settle_every=2000,
        linger_ms=2 if rate else 10,
        acks=1,
        max_batch_size=512 * 1024,
        request_timeout_ms=40_000,
    )
    return done.seconds


async def collect(
    bootstrap: str,
    topics: list[str],
    n: int,
    timeout_s: float,
    received: dict[str, float] | None = None,
    started: asyncio.Event | None = None,
    stop: Callable[[], bool] | None = None,
    isolation_level: str = "read_uncommitted",
) -> list[Any]:
    """Read ``topics`` until ``n`` records; ``received[event_id] = arrival time``.

    From the start, or, with ``started``, from the current end (set once positioned).
    ``isolation_level="read_committed"``: what a downstream reader of an ``exactly_once``
    worker sees (outputs arrive when their transaction commits)."""
    from coldstream.core.topics import load_topics

    def note_arrivals(records: list[Any], now: float) -> None:
        if received is not None:
            for r in records:  # the event id is the first field the worker writes
                v = r.value
                received[v[13 : v.index(b'"', 13)].decode()] = now

    parts = load_topics()["recommendations"].partitions
    return await read_until(
        bootstrap,
        topics,
        count=n,
        until=stop,
        timeout_s=timeout_s,
        partitions=dict.fromkeys(topics, parts),
        from_end=started is not None,
        positioned=started,
        on_records=note_arrivals,
        fetch_max_wait_ms=5,
        poll_ms=100,
        max_records=5000,
        max_poll_records=5000,
        isolation_level=isolation_level,
    )


def rate_from_timestamps(records) -> float:  # noqa: ANN001
    ts = sorted(r.timestamp for r in records)
    if len(ts) < 2 or ts[-1] == ts[0]:
        return float("nan")
    return (len(ts) - 1) / ((ts[-1] - ts[0]) / 1000.0)


async def passthrough(bootstrap: str, src: str, dst: str, n: int, timeout_s: float) -> float:
    """Bare consume -> produce (the ceiling); returns events/s from the output timestamps."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    group = "passthrough-" + uuid.uuid4().hex[:6]
    c = AIOKafkaConsumer(
        src,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
        max_poll_records=1000,
    )
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=-1, linger_ms=0)
    await c.start()
    await p.start()
    done = 0
    deadline = time.monotonic() + timeout_s
    try:
        while done < n and time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=100, max_records=1000)
            futures = [
                await p.send(dst, key=r.key, value=r.value) for rs in batch.values() for r in rs
            ]
            if futures:
                await asyncio.gather(*futures)
                await c.commit()
                done += len(futures)
    finally:
        await c.stop()
        await p.stop()
    out = await collect(bootstrap, [dst], n, 60)
    return rate_from_timestamps(out)


def processed(metrics_text: str) -> float:
    """Events the worker processed (``coldstream_events_total``, every label)."""
    return _metric_sum(metrics_text, "coldstream_events_total{")


def batches(metrics_text: str) -> float:
    """Micro-batches the worker processed (``coldstream_batch_size``'s count)."""
    return _metric_sum(metrics_text, "coldstream_batch_size_count")


def _metric_sum(metrics_text: str, prefix: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith(prefix)
    )


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used, all of its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_processed(worker: WorkerProcess, n: int, timeout_s: float) -> None:
    wait_until(
        lambda: processed(worker.get_text("/metrics")) >= n,
        timeout_s,
        f"the worker to process {n} events",
        interval_s=1.0,
    )


def flat_out(
    bootstrap: str, names: dict[str, str], n: int, isolation_level: str = "read_uncommitted"
) -> tuple[float, list[Any], int]:
    """Read a drained backlog's ``n`` outputs: ``(events/s from their timestamps, records,
    DLQ records)``."""
    out = asyncio.run(
        collect(
            bootstrap,
            [names["recommendations"], names["events-dlq"]],
            n,
            timeout_s=120,
            isolation_level=isolation_level,
        )
    )
    n_dlq = sum(1 for r in out if r.topic == names["events-dlq"])
    return rate_from_timestamps(out), out, n_dlq


def fixed_rate(
    bootstrap: str,
    names: dict[str, str],
    fixed: list[tuple[str, bytes, bytes]],
    warm: list[tuple[str, bytes, bytes]],
    *,
    rate: float,
    seconds: float,
    run_of_fixed: str,
    isolation_level: str = "read_uncommitted",
) -> dict[str, Any]:
    """Send ``warm`` then ``fixed`` at ``rate`` (event ids ``f"{run_of_fixed}-{i}"``) and time
    each answer: ``achieved`` (ev/s), ``lat`` (send -> receipt, ms), ``wlat`` (the worker's
    ``latency_ms``), ``pct`` and ``wpct`` (p50/p95/p99 of ``lat`` and ``wlat``)."""
    n_fixed = len(fixed)
    sent_at: dict[str, float] = {}
    received: dict[str, float] = {}

    async def phase() -> tuple[float, list]:
        # warm-up at the same rate (a fresh broker JVM is still compiling), not measured
        await send_events(bootstrap, names, warm, rate=rate)
        ready = asyncio.Event()

        def all_answered() -> bool:
            return (
                len(sent_at) == n_fixed
                and len(received) >= n_fixed
                and all(e in received for e in sent_at)
            )

        collector = asyncio.create_task(
            collect(
                bootstrap,
                [names["recommendations"]],
                10 * n_fixed,
                seconds + 60,
                received,
                started=ready,
                stop=all_answered,
                isolation_level=isolation_level,
            )
        )
        await asyncio.wait_for(ready.wait(), 60)
        took = await send_events(
            bootstrap, names, fixed, rate=rate, sent_at=sent_at, run_of_fixed=run_of_fixed
        )
        return took, await collector

    took, fixed_out = asyncio.run(phase())
    wlat = np.array(  # none where the records read back are the inputs (no worker)
        [
            v["latency_ms"]
            for v in (json.loads(r.value) for r in fixed_out)
            if v["event_id"] in sent_at and "latency_ms" in v
        ]
    )
    lat = np.array([(received[e] - t) * 1000 for e, t in sent_at.items() if e in received])

    def pct(ms: np.ndarray) -> dict[int, float]:
        return {q: float(np.percentile(ms, q)) for q in (50, 95, 99)} if len(ms) else {}

    return {
        "achieved": n_fixed / took,
        "lat": lat,
        "wlat": wlat,
        "pct": pct(lat),
        "wpct": pct(wlat),
        "n": n_fixed,
    }


def start_broker(args: Any, work: Path) -> tuple[Any, str, str]:
    """The benchmark's broker: ``(broker or None, bootstrap, description)``. ``args.bootstrap``
    (a broker already running: nothing started), else ``args.broker`` (``kafka``: a private
    single-node Apache Kafka under ``work``; ``tansu``: the embedded Tansu). The caller stops
    the broker it gets."""
    from devtools.brokers import KafkaBroker, TansuBroker

    if getattr(args, "bootstrap", None):
        return None, args.bootstrap, "given"
    if args.broker == "kafka":
        broker = KafkaBroker(work / "kafka").start()
        return broker, broker.bootstrap, "apache-kafka-3.9 (single node, KRaft)"
    broker = TansuBroker(log_path=work / "tansu.log").start()
    return broker, broker.bootstrap, "tansu (memory)"


@contextlib.contextmanager
def kafka_with_model(bootstrap: str | None, prefix: str) -> Iterator[tuple[str, Path, Path]]:
    """A private single-node Apache Kafka (none when ``bootstrap`` names a running one) and
    a fresh signed random 1,682-item checkpoint store, in a temporary folder removed
    afterwards; yields ``(bootstrap, store, work folder)``. The verify keys go into this
    process's environment, so the workers it starts accept the checkpoint."""
    from devtools.brokers import KafkaBroker
    from devtools.checkpoints import dev_signer, make_checkpoint, verify_env

    work = Path(tempfile.mkdtemp(prefix=prefix))
    broker = None
    try:
        if bootstrap is None:
            broker = KafkaBroker(work / "kafka").start()
            bootstrap = broker.bootstrap
        store = work / "store"
        make_checkpoint(store, n_items=1682, dim=64, text_dim=384, signer=dev_signer())
        os.environ.update(verify_env())  # inherited by the workers
        yield bootstrap, store, work
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def run_fields(load_avg_start: float) -> dict[str, Any]:
    """What every benchmark report says of its run: date, machine, load at both ends."""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_avg_1m_start": round(load_avg_start, 2),
        "load_avg_1m_end": round(os.getloadavg()[0], 2),
    }


def write_report(path: str | Path, report: dict[str, Any]) -> None:
    """Write a benchmark's JSON report (folders made) and say where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
