"""Soak benchmark: a long steady stream through broker, worker and trainer (not a CI test).

``coldstream bench soak --events 1000000 --rate 1000`` produces synthetic events (Zipf items,
sessions: ``trainer.data.synthetic``) at a steady rate into Apache Kafka, with one serving worker
and the trainer service (its own group; re-distillation cycles off by default, so the soak
measures the streaming parts) running beside it. Every ``--sample-s`` seconds it records the
RSS of the broker (JVM), the worker and the trainer, and the end-to-end lag (events sent
minus events answered). At the end: lost (no recommendation and no DLQ record), duplicated,
RSS growth per process (after a warm-up share of the run), and whether lag grew (mean lag
of the last third vs the first third of the steady phase). Writes ``reports/soak.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from coldstream.core.errors import ExitCode
from coldstream.core.records import event_payload
from devtools.kafka_io import produce, read_until
from devtools.processes import rss_mb

__all__ = ["add_arguments", "run"]

ROOT = Path.cwd()


def _events(n: int, n_users: int, n_items: int, seed: int):
    """``(index, user, item, is_purchase)`` from the synthetic generator, streamed."""
    from trainer.data.synthetic import SyntheticConfig, synthetic_events

    cfg = SyntheticConfig(
        n_users=n_users, n_items=n_items, n_events=n, seed=seed, chunk_size=50_000
    )
    i = 0
    for chunk in synthetic_events(cfg):
        for u, it, ev in zip(
            chunk["user"].tolist(), chunk["item"].tolist(), chunk["event"].tolist(), strict=True
        ):
            yield i, u, it, ev
            i += 1


async def _produce(
    bootstrap: str, topics: dict[str, str], n: int, rate: float, args: Any, state: dict[str, Any]
) -> None:
    def records() -> Any:
        for i, u, it, ev in _events(n, args.users, args.items, args.seed):
            user = f"s{u}"
            value = event_payload(user, str(it + 1), event_id=f"soak-{i}", ts=round(time.time(), 3))
            yield topics["purchases" if ev else "clicks"], user.encode(), value

    def sent(i: int, _rec: Any, _t: float) -> None:
        state["sent"] = i + 1

    await produce(
        bootstrap,
        records(),
        rate=rate,
        min_sleep_s=0.005,
        on_sent=sent,
        settle_every=5000,
        acks="all",
        linger_ms=5,
        request_timeout_ms=120_000,
    )
    state["sent_done_at"] = time.monotonic()


async def _consume(
    bootstrap: str, topics: dict[str, str], n: int, state: dict[str, Any], timeout_s: float
) -> None:
    """Count the answers per event until all ``n`` are answered, or ``timeout_s`` after the
    last send."""
    seen = np.zeros(n, dtype=np.uint8)
    state["seen"] = seen
    dlq_t = topics["events-dlq"]
    drain: dict[str, float] = {}

    def count(records: list[Any], _now: float) -> None:
        for r in records:
            if r.topic == dlq_t:
                state["dlq"] += 1
                eid = json.loads(r.value).get("event_id") or ""
            else:  # the id is the first field of a recommendation: no full parse
                v = r.value
                eid = v[13 : v.index(b'"', 13)].decode()
            if eid.startswith("soak-"):
                i = int(eid[5:])
                if seen[i] < 255:
                    seen[i] += 1
                if seen[i] == 1:
                    state["answered"] += 1
            state["outputs"] += 1

    def done() -> bool:
        if state["answered"] >= n:
            return True
        if state.get("sent_done_at") is not None:
            deadline = drain.setdefault("deadline", time.monotonic() + timeout_s)
            return time.monotonic() > deadline
        return False

    await read_until(
        bootstrap,
        [topics["recommendations"], dlq_t],
        until=done,
        timeout_s=None,
        on_records=count,
        keep=False,
        fetch_max_wait_ms=100,
        poll_ms=200,
        max_records=20_000,
    )


async def _sample(pids: dict[str, int], state: dict[str, Any], every_s: float) -> None:
    t0 = time.monotonic()
    while not state.get("stop"):
        row = {
            "t": round(time.monotonic() - t0, 1),
            "sent": state["sent"],
            "answered": state["answered"],
            "lag": state["sent"] - state["answered"],
        }
        for name, pid in pids.items():
            r = rss_mb(pid)
            row[f"rss_{name}_mb"] = round(r, 1) if r is not None else None
        state["samples"].append(row)
        print(json.dumps(row), flush=True)
        await asyncio.sleep(every_s)


def _growth(samples: list[dict[str, Any]], key: str, warmup: float) -> dict[str, Any]:
    vals = [(s["t"], s[key]) for s in samples if s.get(key) is not None]
    if len(vals) < 3:
        return {}
    start = vals[int(len(vals) * warmup)]
    end = vals[-1]
    t = np.array([v[0] for v in vals[int(len(vals) * warmup) :]])
    y = np.array([v[1] for v in vals[int(len(vals) * warmup) :]])
    slope = float(np.polyfit(t, y, 1)[0]) * 60 if len(t) > 2 else 0.0
    return {
        "after_warmup_mb": start[1],
        "end_mb": end[1],
        "peak_mb": max(v[1] for v in vals),
        "growth_mb": round(end[1] - start[1], 1),
        "slope_mb_per_min": round(slope, 2),
    }


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--events", type=int, default=1_000_000, help="events to send")
    ap.add_argument("--rate", type=float, default=1000.0, help="events per second (steady)")
    ap.add_argument(
        "--users", type=int, default=100_000, help="distinct users of the synthetic stream"
    )
    ap.add_argument(
        "--items", type=int, default=2000, help="items of the synthetic stream and the model"
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic stream")
    ap.add_argument("--bootstrap", default=None, help="use this Apache Kafka (default: start one)")
    ap.add_argument("--no-trainer", action="store_true", help="run without the trainer service")
    ap.add_argument(
        "--sample-s", type=float, default=5.0, help="seconds between RSS and lag samples"
    )
    ap.add_argument(
        "--warmup", type=float, default=0.2, help="share of samples before RSS growth is measured"
    )
    ap.add_argument(
        "--drain-timeout-s",
        type=float,
        default=300.0,
        help="after the last send, wait at most this long for the answers",
    )
    ap.add_argument(
        "--workdir", default=None, help="logs, broker data and model store (default: a temp dir)"
    )
    ap.add_argument("--out", default=str(ROOT / "reports" / "soak.json"), help="the JSON report")


def run(args: argparse.Namespace) -> int:
    from coldstream.core.topics import create_topics, load_topics, prefixed
    from devtools.brokers import KafkaBroker, free_port
    from devtools.checkpoints import dev_signer, key_env, make_checkpoint
    from devtools.kafka_io import run_coro
    from devtools.processes import WorkerProcess, start_process, stop_process

    work = Path(args.workdir or tempfile.mkdtemp(prefix="coldstream-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    broker = None
    procs: list[Any] = []
    worker = None
    result: dict[str, Any] = {
        "events_requested": args.events,
        "rate": args.rate,
        "users": args.users,
        "items": args.items,
    }
    try:
        if args.bootstrap:
            bootstrap = args.bootstrap
            broker_pid = None
        else:
            broker = KafkaBroker(work / "kafka", heap="1g").start()
            bootstrap, broker_pid = broker.bootstrap, broker.pid
        prefix = f"soak-{uuid.uuid4().hex[:6]}-"
        specs = load_topics()
        topics = {k: s.name for k, s in prefixed(specs, prefix).items()}
        run_coro(create_topics(bootstrap, specs, replication_factor=1, prefix=prefix), 120)
        store = work / "store"
        make_checkpoint(store, n_items=args.items, dim=32, text_dim=384, signer=dev_signer())
        os.environ.update(key_env(work / "keys"))  # the worker's and the trainer's keys
        worker = WorkerProcess(
            log_path=work / "worker.log",
            bootstrap=bootstrap,
            topic_prefix=prefix,
            app_id=prefix + "app",
            model_store=store,
            threads=1,
            log_level="warning",
        )
        worker.start()
        pids = {"worker": worker.proc.pid}
        if broker_pid:
            pids["broker"] = broker_pid
        if not args.no_trainer:
            env = {
                **os.environ,
                "COLDSTREAM_TRAINER_CYCLE_EVENTS": "0",
                "COLDSTREAM_TRAINER_CYCLE_SECONDS": "0",
                "COLDSTREAM_TRAINER_THREADS": "1",
                "COLDSTREAM_TRAINER_PROGRESS": "false",
                "HF_HUB_OFFLINE": "1",
            }
            trainer = start_process(
                [
                    sys.executable,
                    "-m",
                    "coldstream",
                    "trainer",
                    "--bootstrap",
                    bootstrap,
                    "--topic-prefix",
                    prefix,
                    "--group-id",
                    prefix + "trainer",
                    "--model-store",
                    str(store),
                    "--metrics-port",
                    str(free_port()),
                ],
                env=env,
                log_path=work / "trainer.log",
                cwd=ROOT,
            )
            procs.append(trainer)
            pids["trainer"] = trainer.pid
        state: dict[str, Any] = {"sent": 0, "answered": 0, "outputs": 0, "dlq": 0, "samples": []}

        async def run() -> None:
            sampler = asyncio.create_task(_sample(pids, state, args.sample_s))
            consumer = asyncio.create_task(
                _consume(bootstrap, topics, args.events, state, args.drain_timeout_s)
            )
            t0 = time.monotonic()
            await _produce(bootstrap, topics, args.events, args.rate, args, state)
            state["produce_s"] = time.monotonic() - t0
            await consumer
            state["drain_s"] = time.monotonic() - state["sent_done_at"]
            state["stop"] = True
            await sampler

        t0 = time.monotonic()
        asyncio.run(run())
        seen = state["seen"]
        samples = state["samples"]
        steady = [s["lag"] for s in samples if s["sent"] < args.events]
        third = max(1, len(steady) // 3)
        trainer_alive = all(p.poll() is None for p in procs)
        result.update(
            {
                "events": int(state["sent"]),
                "wall_seconds": round(time.monotonic() - t0, 1),
                "achieved_rate": round(state["sent"] / state["produce_s"], 1),
                "outputs": state["outputs"],
                "dlq": state["dlq"],
                "lost": int((seen == 0).sum()),
                "duplicated": int(np.maximum(seen.astype(np.int64) - 1, 0).sum()),
                "drain_seconds_after_last_send": round(state["drain_s"], 1),
                "lag_first_third_mean": round(float(np.mean(steady[:third])), 1)
                if steady
                else None,
                "lag_last_third_mean": round(float(np.mean(steady[-third:])), 1)
                if steady
                else None,
                "lag_max": max((s["lag"] for s in samples), default=None),
                "rss": {name: _growth(samples, f"rss_{name}_mb", args.warmup) for name in pids},
                "worker_alive": worker.proc is not None and worker.proc.poll() is None,
                "trainer_alive": trainer_alive if procs else None,
                "trainer_cycles": "off (COLDSTREAM_TRAINER_CYCLE_EVENTS=0, _CYCLE_SECONDS=0)",
                "samples": samples,
            }
        )
        grew = result["lag_last_third_mean"] is not None and result[
            "lag_last_third_mean"
        ] > 2 * max(result["lag_first_third_mean"], args.rate * 0.5)
        result["lag_grew"] = bool(grew)
    finally:
        if worker is not None:
            worker.stop()
        for p in procs:
            stop_process(p, deadline_s=15)
        if broker is not None:
            broker.stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=1))
    return ExitCode.OK if result.get("lost") == 0 else ExitCode.FAILURE
