"""``coldstream bench serve`` and ``coldstream bench recommend``.

``serve`` drives the real pipeline (its own Apache Kafka or Tansu broker and worker
subprocess, or given ones) and measures, in one run on one broker:

* **flat out**: a backlog of ``--events`` input events is loaded first, then the worker
  drains it; throughput = outputs / (last - first output record timestamp);
* **fixed rate** (``--rate``, default 1,000 ev/s for ``--seconds``): event-to-recommendation
  latency = time the benchmark's consumer received the recommendation - time the event was
  sent (p50/p95/p99);
* **ceiling**: a bare aiokafka consume -> produce pass-through (one consumer group,
  batches of up to 1,000, futures gathered per batch, same payloads, same partitions)
  drains the same backlog size; our throughput is reported as a fraction of it.

``recommend`` is a micro-benchmark of ``Recommender.recommend_batch`` (users/s) on a large
random index (100k and 1M items by default).
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

import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks: serve (pipeline) and recommend (micro)")
    bsub = p.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    s = bsub.add_parser("serve", help="throughput and latency of the running pipeline vs a pass-through")
    s.add_argument("--bootstrap", default=None, help="use this broker instead of starting one")
    s.add_argument("--broker", choices=["kafka", "tansu"], default="kafka", help="broker to start")
    s.add_argument("--worker-url", default=None,
                   help="use a running worker (its topics: --topic-prefix) instead of starting one")
    s.add_argument("--topic-prefix", default=None)
    s.add_argument("--model-store", default=None, help="model store (default: a random 1,682-item model)")
    s.add_argument("--events", type=int, default=60_000, help="backlog size for the flat-out phases")
    s.add_argument("--rate", type=float, default=1000.0, help="fixed rate of the latency phase (ev/s)")
    s.add_argument("--seconds", type=float, default=20.0, help="length of the fixed-rate phase")
    s.add_argument("--warmup-seconds", type=float, default=10.0, help="unmeasured run at the fixed rate first")
    s.add_argument("--users", type=int, default=20_000, help="distinct users in the generated events")
    s.add_argument("--batch-size", type=int, default=512)
    s.add_argument("--batch-window-ms", type=float, default=5.0)
    s.add_argument("--threads", type=int, default=1, help="worker torch/FAISS threads")
    s.add_argument("--no-stock", action="store_true", help="skip the stock Faust agent comparison")
    s.add_argument("--out", default="reports/bench-serve.json")
    s.set_defaults(func=cmd_bench_serve)
    r = bsub.add_parser("recommend", help="users/s of batched recommend on a large random index")
    r.add_argument("--items", default="100000,1000000", help="index sizes, comma-separated")
    r.add_argument("--batch-sizes", default="1,64,512")
    r.add_argument("--dim", type=int, default=64)
    r.add_argument("--history", type=int, default=20)
    r.add_argument("--threads", type=int, default=0, help="torch/FAISS threads (0: library default)")
    r.add_argument("--seconds", type=float, default=3.0, help="time per configuration")
    r.add_argument("--out", default="reports/bench-recommend.json")
    r.set_defaults(func=cmd_bench_recommend)


# ---------------------------------------------------------------------------- events

def make_events(n: int, *, n_users: int, item_ids: list[str], seed: int, run: str) -> list[tuple[str, bytes, bytes]]:
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
        value = json.dumps({"event_id": f"{run}-{i}", "user_id": user, "item_id": item_ids[items[i]],
                            "ts": now}, separators=(",", ":")).encode()
        out.append(("purchases" if purchase[i] else "clicks", user.encode(), value))
    return out


async def _produce(bootstrap: str, names: dict[str, str], events, *, rate: float = 0.0,
                   sent_at: dict[str, float] | None = None, run_of_fixed: str = "") -> float:
    """Send ``events``; with ``sent_at``, event ``i`` has id ``f"{run_of_fixed}-{i}"`` (make_events)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2 if rate else 10, acks=1,
                                max_batch_size=512 * 1024)
    await producer.start()
    t0 = time.perf_counter()
    try:
        pending = []
        for i, (topic, key, value) in enumerate(events):
            if rate:
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            pending.append(await producer.send(names[topic], value=value, key=key))
            if sent_at is not None:
                sent_at[f"{run_of_fixed}-{i}"] = time.time()
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        await producer.flush()
    finally:
        await producer.stop()
    return time.perf_counter() - t0


async def _collect(bootstrap: str, topics: list[str], n: int, timeout_s: float,
                   received: dict[str, float] | None = None, started: asyncio.Event | None = None,
                   stop=None) -> list:  # noqa: ANN001
    """Read ``topics`` until ``n`` records; ``received[event_id] = arrival time``.

    From the start, or, with ``started``, from the current end (set once positioned)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from coldstream.core.topics import load_topics

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                         enable_auto_commit=False, fetch_max_wait_ms=5, max_poll_records=5000)
    await c.start()
    parts = load_topics()["recommendations"].partitions
    tps = [TopicPartition(t, p) for t in topics for p in range(parts)]
    c.assign(tps)
    if started is not None:
        await c.seek_to_end(*tps)
        for tp in tps:
            await c.position(tp)
        started.set()
    out = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < n and time.monotonic() < deadline and not (stop is not None and stop()):
            batch = await c.getmany(timeout_ms=100, max_records=5000)
            now = time.time()
            for records in batch.values():
                out.extend(records)
                if received is not None:
                    for r in records:  # the event id is the first field the worker writes
                        v = r.value
                        received[v[13:v.index(b'"', 13)].decode()] = now
    finally:
        await c.stop()
    return out


def _rate_from_timestamps(records) -> float:  # noqa: ANN001
    ts = sorted(r.timestamp for r in records)
    if len(ts) < 2 or ts[-1] == ts[0]:
        return float("nan")
    return (len(ts) - 1) / ((ts[-1] - ts[0]) / 1000.0)


async def passthrough(bootstrap: str, src: str, dst: str, n: int, timeout_s: float) -> float:
    """Bare consume -> produce (the ceiling); returns events/s from the output timestamps."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    group = "passthrough-" + uuid.uuid4().hex[:6]
    c = AIOKafkaConsumer(src, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                         enable_auto_commit=False, fetch_max_wait_ms=10, max_poll_records=1000)
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=-1, linger_ms=0)
    await c.start()
    await p.start()
    done = 0
    deadline = time.monotonic() + timeout_s
    try:
        while done < n and time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=100, max_records=1000)
            futures = [await p.send(dst, key=r.key, value=r.value) for rs in batch.values() for r in rs]
            if futures:
                await asyncio.gather(*futures)
                await c.commit()
                done += len(futures)
    finally:
        await c.stop()
        await p.stop()
    out = await _collect(bootstrap, [dst], n, 60)
    return _rate_from_timestamps(out)


# ---------------------------------------------------------------------------- serve

def _processed(metrics_text: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines()
               if line.startswith("coldstream_events_total{"))


def _wait_processed(worker, n: int, timeout_s: float) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _processed(worker.get_text("/metrics")) >= n:
            return
        time.sleep(1.0)
    raise TimeoutError(f"worker did not process {n} events within {timeout_s} s")


def cmd_bench_serve(args: argparse.Namespace) -> int:
    from coldstream.core.checkpoint import latest_checkpoint, load_checkpoint
    from coldstream.core.topics import create_topics, topic_names
    from devtools.brokers import KafkaBroker, TansuBroker
    from devtools.testing import WorkerProcess, make_checkpoint

    load_start = round(os.getloadavg()[0], 2)
    work = Path(tempfile.mkdtemp(prefix="coldstream-bench-"))
    broker = None
    worker = None
    results: dict = {}
    try:
        if args.bootstrap:
            bootstrap, broker_name = args.bootstrap, "given"
        elif args.broker == "kafka":
            broker = KafkaBroker(work / "kafka").start()
            bootstrap, broker_name = broker.bootstrap, "apache-kafka-3.9 (single node, KRaft)"
        else:
            broker = TansuBroker(log_path=work / "tansu.log").start()
            bootstrap, broker_name = broker.bootstrap, "tansu (memory)"
        store = Path(args.model_store) if args.model_store else work / "store"
        if latest_checkpoint(store) is None:
            make_checkpoint(store, n_items=1682, dim=64, text_dim=384)
        item_ids = load_checkpoint(latest_checkpoint(store)).item_ids
        prefix = args.topic_prefix or f"bench-{uuid.uuid4().hex[:6]}-"
        names = topic_names(prefix)
        asyncio.run(create_topics(bootstrap, replication_factor=1, prefix=prefix))
        run = uuid.uuid4().hex[:6]
        backlog = make_events(args.events, n_users=args.users, item_ids=item_ids, seed=1, run=run + "f")

        # -- ceiling: bare pass-through over the same backlog -----------------------------
        pt_names = topic_names(prefix + "pt-")
        asyncio.run(create_topics(bootstrap, replication_factor=1, prefix=prefix + "pt-"))
        flat_pt = [(("clicks", k, v)) for _, k, v in backlog]
        asyncio.run(_produce(bootstrap, pt_names, flat_pt))
        pt_rate = asyncio.run(passthrough(bootstrap, pt_names["clicks"], pt_names["recommendations"],
                                          len(flat_pt), timeout_s=300))
        print(f"pass-through ceiling: {pt_rate:,.0f} events/s", flush=True)

        # -- ours, flat out: load the backlog, then start the worker ----------------------
        asyncio.run(_produce(bootstrap, names, backlog))
        if args.worker_url:
            raise SystemExit("--worker-url: flat-out needs a fresh consumer group; start none")
        worker = WorkerProcess(log_path=work / "worker.log", bootstrap=bootstrap, topic_prefix=prefix,
                               app_id=prefix + "app", model_store=store, threads=args.threads,
                               batch_size=args.batch_size, batch_window_ms=args.batch_window_ms,
                               log_level="warning", ready_timeout_s=120)
        worker.start()
        _wait_processed(worker, len(backlog), timeout_s=600)  # poll /metrics: no reader competes for CPU
        out = asyncio.run(_collect(bootstrap, [names["recommendations"], names["events-dlq"]], len(backlog),
                                   timeout_s=120))
        ours = _rate_from_timestamps(out)
        n_dlq = sum(1 for r in out if r.topic == names["events-dlq"])
        print(f"ours, flat out: {ours:,.0f} events/s ({len(out)} outputs, {n_dlq} DLQ)", flush=True)

        # -- fixed rate: latency ---------------------------------------------------------
        n_fixed = int(args.rate * args.seconds)
        fixed = make_events(n_fixed, n_users=args.users, item_ids=item_ids, seed=2, run=run + "r")
        sent_at: dict[str, float] = {}
        received: dict[str, float] = {}

        warm = make_events(int(args.rate * args.warmup_seconds), n_users=args.users, item_ids=item_ids,
                           seed=3, run=run + "w")

        async def fixed_phase() -> tuple[float, list]:
            # warm-up at the same rate (a fresh broker JVM is still compiling), not measured
            await _produce(bootstrap, names, warm, rate=args.rate)
            ready = asyncio.Event()

            def all_answered() -> bool:
                return (len(sent_at) == n_fixed and len(received) >= n_fixed
                        and all(e in received for e in sent_at))

            collector = asyncio.create_task(_collect(bootstrap, [names["recommendations"]], 10 * n_fixed,
                                                     args.seconds + 60, received, started=ready,
                                                     stop=all_answered))
            await asyncio.wait_for(ready.wait(), 60)
            took = await _produce(bootstrap, names, fixed, rate=args.rate, sent_at=sent_at,
                                  run_of_fixed=run + "r")
            return took, await collector

        took, fixed_out = asyncio.run(fixed_phase())
        wlat = np.array([v["latency_ms"] for v in (json.loads(r.value) for r in fixed_out)
                         if v["event_id"] in sent_at])
        lat = np.array([(received[e] - t) * 1000 for e, t in sent_at.items() if e in received])
        achieved = n_fixed / took
        pct = {q: float(np.percentile(lat, q)) for q in (50, 95, 99)} if len(lat) else {}
        print(f"fixed rate {achieved:,.0f} ev/s: p50 {pct.get(50, float('nan')):.1f} ms, "
              f"p95 {pct.get(95, float('nan')):.1f} ms, p99 {pct.get(99, float('nan')):.1f} ms "
              f"({len(lat)}/{n_fixed} answered)", flush=True)
        metrics_text = worker.get_text("/metrics")
        worker.stop(deadline_s=10)
        worker = None
        stock = None
        if not args.no_stock:  # the same backlog through a stock Faust take_events agent
            sp = prefix + "stock-"
            stock_names = topic_names(sp)
            asyncio.run(create_topics(bootstrap, replication_factor=1, prefix=sp))
            asyncio.run(_produce(bootstrap, stock_names, backlog))
            worker = WorkerProcess(log_path=work / "worker-stock.log", bootstrap=bootstrap, topic_prefix=sp,
                                   app_id=sp + "app", model_store=store, threads=args.threads,
                                   batch_size=args.batch_size, batch_window_ms=args.batch_window_ms,
                                   log_level="warning", ready_timeout_s=120, fast_path=False)
            worker.start()
            _wait_processed(worker, len(backlog), timeout_s=900)
            stock = _rate_from_timestamps(asyncio.run(_collect(
                bootstrap, [stock_names["recommendations"]], len(backlog), timeout_s=120)))
            print(f"same pipeline through a stock Faust take_events agent: {stock:,.0f} events/s", flush=True)
        results = {
            "events_per_s": round(ours, 1),
            "passthrough_events_per_s": round(pt_rate, 1),
            "fraction_of_passthrough": round(ours / pt_rate, 3) if pt_rate else None,
            "stock_faust_agent_events_per_s": round(stock, 1) if stock else None,
            "flat_out_events": len(backlog), "flat_out_outputs": len(out),
            "fixed_rate_target_events_per_s": args.rate, "fixed_rate_achieved_events_per_s": round(achieved, 1),
            "fixed_rate_events": n_fixed, "fixed_rate_answered": int(len(lat)),
            "fixed_rate_warmup_s": args.warmup_seconds,
            "p50_ms": round(pct.get(50, float("nan")), 2), "p95_ms": round(pct.get(95, float("nan")), 2),
            "p99_ms": round(pct.get(99, float("nan")), 2),
            "latency_definition": "benchmark consumer receipt of the recommendation - producer send time",
            "worker_p50_ms": round(float(np.percentile(wlat, 50)), 2) if len(wlat) else None,
            "worker_p99_ms": round(float(np.percentile(wlat, 99)), 2) if len(wlat) else None,
            "worker_latency_definition": "latency_ms field: input record timestamp to the worker's send",
            "broker": broker_name, "cores": os.cpu_count(), "worker_threads": args.threads,
            "batch_size": args.batch_size, "batch_window_ms": args.batch_window_ms,
            "users": args.users, "items": len(item_ids),
            "model": "random student (GRU, dim 64, text 384)" if not args.model_store else str(store),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "load_avg_1m_start": load_start, "load_avg_1m_end": round(os.getloadavg()[0], 2),
            "machine": platform.platform(), "python": platform.python_version(),
            "batch_size_histogram_count": next((line.split()[-1] for line in metrics_text.splitlines()
                                                if line.startswith("coldstream_batch_size_count")), None),
        }
    finally:
        if worker is not None:
            worker.stop(deadline_s=10)
        if broker is not None:
            broker.stop()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return 0


# ---------------------------------------------------------------------------- recommend

def random_serving_model(n_items: int, dim: int, seed: int = 0):  # noqa: ANN201
    """A ServingModel over ``n_items`` random items without writing a checkpoint."""
    import torch

    from coldstream.core.checkpoint import Checkpoint
    from coldstream.core.student import Student, StudentConfig
    from stream_app.index import FaissCpuIndex
    from stream_app.recommender import ServingModel

    torch.manual_seed(seed)
    cfg = StudentConfig(n_items=1, text_dim=8, dim=dim, dropout=0.0)  # ids unused: vectors given
    model = Student(cfg).eval()
    vecs = np.random.default_rng(seed).standard_normal((n_items, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [str(i) for i in range(n_items)]
    ck = Checkpoint(path=Path("."), version=0, config=cfg, model=model, item_ids=ids, item_titles=[""] * n_items,
                    item_text_vecs=np.zeros((n_items, 0), np.float32), item_vectors=vecs, metrics={},
                    teacher={}, manifest={}, device=torch.device("cpu"))
    index = FaissCpuIndex(dim)
    index.add(vecs)
    return ServingModel(version="0", checkpoint=ck, item_ids=tuple(ids), index_of=ck.index_of,
                        table=ck._table, index=index, popular_seed=tuple(ids[:100]))


def cmd_bench_recommend(args: argparse.Namespace) -> int:
    import faiss
    import torch
    from rich.console import Console
    from rich.table import Table

    from stream_app.recommender import Recommender

    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    rows = []
    rng = np.random.default_rng(0)
    for n_items in [int(x) for x in args.items.split(",")]:
        t0 = time.perf_counter()
        rec = Recommender(random_serving_model(n_items, args.dim))
        build_s = time.perf_counter() - t0
        for b in [int(x) for x in args.batch_sizes.split(",")]:
            histories = [[str(i) for i in rng.integers(0, n_items, args.history)] for _ in range(b)]
            rec.recommend_batch(histories, 10)  # warm up
            n = 0
            inf = srch = 0.0
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < args.seconds or n == 0:
                r = rec.rank_batch(histories, 10)
                inf += r.inference_s
                srch += r.search_s
                n += 1
            el = time.perf_counter() - t0
            rows.append({"items": n_items, "batch": b, "users_per_s": round(n * b / el, 1),
                         "ms_per_batch": round(el / n * 1000, 3), "encode_ms": round(inf / n * 1000, 3),
                         "search_ms": round(srch / n * 1000, 3), "index_build_s": round(build_s, 2)})
            print(rows[-1], flush=True)
        del rec
    t = Table(title=f"batched recommend, CPU, dim {args.dim}, history {args.history}, k 10, "
                    f"threads {args.threads or torch.get_num_threads()}")
    for c in ("items", "batch", "users/s", "ms/batch", "encode ms", "search ms"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(f"{r['items']:,}", str(r["batch"]), f"{r['users_per_s']:,.0f}", f"{r['ms_per_batch']:.2f}",
                  f"{r['encode_ms']:.2f}", f"{r['search_ms']:.2f}")
    Console().print(t)
    report = {"rows": rows, "dim": args.dim, "history": args.history, "k": 10,
              "threads": args.threads or torch.get_num_threads(), "cores": os.cpu_count(),
              "index": "faiss IndexFlatIP (exact, CPU)",
              "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": platform.platform()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0

