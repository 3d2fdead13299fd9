"""``coldstream demo``: one command on a fresh machine: embedded Tansu broker -> topics -> a quick
bootstrap model if the store has none (``trainer.train_bootstrap``) -> a worker subprocess
(own process group) -> MovieLens replay -> a live table of recommendations for new users
with item titles. ``--events N`` / ``--duration S`` make it finish by itself; Ctrl-C stops
every process it started (SIGTERM to the group, deadline, SIGKILL). The replay is
:func:`devtools.replay.replay`; ``coldstream replay`` is :mod:`devtools.replay`'s command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model-store", default=None, help="model store (default: COLDSTREAM_MODEL_STORE)"
    )
    p.add_argument("--events", type=int, default=2000, help="events to replay, then stop (0: all)")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: when the events are answered)",
    )
    p.add_argument("--rate", type=float, default=200.0, help="events per second (0: flat out)")
    p.add_argument(
        "--web-port", type=int, default=None, help="worker web port (default: a free one)"
    )
    p.add_argument(
        "--random-model",
        action="store_true",
        help="skip training: serve a random model over the MovieLens items (quick checks)",
    )
    p.add_argument("--no-live", action="store_true", help="print a final table only")


def _ensure_model(store: Path, random_model: bool) -> Path:
    from coldstream.core.checkpoint import latest_checkpoint

    path = latest_checkpoint(store)
    if path is not None:
        print(f"model: {path}")
        return path
    if random_model:
        return _random_movielens_model(store)
    print(
        f"no model in {store}: training a quick bootstrap model on MovieLens-100K (1-3 min on CPU)...",
        flush=True,
    )
    from trainer import train_bootstrap

    t0 = time.time()
    path = train_bootstrap(store, quick=True, progress=True)
    print(f"model: {path} (trained in {time.time() - t0:.0f} s)")
    return path


def _random_movielens_model(store: Path) -> Path:
    import numpy as np
    import torch

    from coldstream.core.checkpoint import save_checkpoint
    from coldstream.core.student import Student, StudentConfig
    from trainer.data import load_movielens

    _, items = load_movielens()
    torch.manual_seed(0)
    model = Student(StudentConfig(n_items=len(items), text_dim=32, dim=32, dropout=0.0))
    rng = np.random.default_rng(0)
    return save_checkpoint(
        store,
        model=model,
        item_ids=items.ids,
        item_titles=items.titles,
        item_text_vecs=rng.standard_normal((len(items), 32)).astype(np.float32),
        metrics={"note": "random demo model"},
        teacher={"name": "none"},
    )


def run(args: argparse.Namespace) -> int:
    """``coldstream demo``."""
    from rich.console import Console

    from coldstream.core.topics import create_topics, topic_names
    from devtools.brokers import TansuBroker, free_port
    from devtools.processes import WorkerProcess
    from stream_app.settings import Settings

    console = Console()
    settings = Settings()
    store = Path(args.model_store) if args.model_store else settings.model_store
    path = _ensure_model(store, args.random_model)
    from coldstream.core.checkpoint import load_checkpoint

    ck = load_checkpoint(path)
    titles = dict(zip(ck.item_ids, ck.item_titles, strict=True))
    del ck

    workdir = Path(tempfile.mkdtemp(prefix="coldstream-demo-"))
    broker = TansuBroker(log_path=workdir / "tansu.log")
    worker = None
    try:
        broker.start()
        asyncio.run(create_topics(broker.bootstrap, replication_factor=1))
        console.print(
            f"[bold]broker[/bold]: Tansu at {broker.bootstrap} (log {workdir / 'tansu.log'})"
        )
        port = args.web_port or free_port()
        worker = WorkerProcess(
            log_path=workdir / "worker.log",
            bootstrap=broker.bootstrap,
            model_store=store,
            web_port=port,
            web_bind="127.0.0.1",
            profile="dev",
            app_id="coldstream-demo",
        )
        worker.start()
        console.print(
            f"[bold]worker[/bold]: pid {worker.proc.pid}, ready in {worker.ready_s:.1f} s "
            f"(log {workdir / 'worker.log'})"
        )
        console.print(
            f"[bold]metrics[/bold]: {worker.url('/metrics')}   "
            f"[bold]recommend[/bold]: {worker.url('/recommend/<user_id>?k=10')}"
        )
        stats = asyncio.run(_run(args, broker.bootstrap, topic_names(""), titles, console))
    except KeyboardInterrupt:
        console.print("interrupted: stopping the worker and the broker")
        stats = None
    finally:
        if worker is not None:
            worker.stop(deadline_s=10)
        broker.stop()
    if stats is None:
        return 130
    console.print(
        f"events sent {stats['sent']}, recommendations {stats['recs']}, DLQ {stats['dlq']}, "
        f"new users {stats['users']}, latency p50 {stats['p50']:.1f} ms, p99 {stats['p99']:.1f} ms"
    )
    return 0 if stats["recs"] + stats["dlq"] >= stats["sent"] else 1


async def _run(
    args: argparse.Namespace,
    bootstrap: str,
    topics: dict[str, str],
    titles: dict[str, str],
    console: Any,
) -> dict[str, Any]:
    from rich.live import Live
    from rich.table import Table

    from devtools.kafka_io import read_until
    from devtools.replay import movielens_events, replay

    events, catalogue = movielens_events(args.events or None)
    total = args.events or 100_000
    users: OrderedDict[str, dict[str, Any]] = OrderedDict()
    latencies: list[float] = []
    counts = {"recs": 0, "dlq": 0}
    stop = asyncio.Event()

    def table() -> Table:
        t = Table(title=f"coldstream: live recommendations ({counts['recs']} so far)", expand=True)
        t.add_column("user", no_wrap=True)
        t.add_column("events", justify="right")
        t.add_column("cold", justify="center")
        t.add_column("last event")
        t.add_column("top 3 recommendations")
        t.add_column("ms", justify="right")
        for user, u in list(users.items())[-12:]:
            recs = "; ".join(titles.get(i["item_id"], i["item_id"])[:32] for i in u["items"][:3])
            if u.get("fallback"):
                recs = f"[popular] {recs}"
            t.add_row(
                user,
                str(u["n"]),
                "yes" if u["cold"] else "",
                titles.get(u["last"], u["last"])[:36],
                recs,
                f"{u['latency']:.0f}",
            )
        return t

    last_item: dict[str, str] = {}

    def on_sent(eid: str, ev: Any, _t: float) -> None:
        last_item[eid] = ev.item_id

    def on_records(records: list[Any], _now: float) -> None:
        for r in records:
            v = json.loads(r.value)
            if r.topic == topics["events-dlq"]:
                counts["dlq"] += 1
                continue
            counts["recs"] += 1
            latencies.append(v["latency_ms"])
            u = users.pop(v["user_id"], {"n": 0})
            u.update(
                n=u["n"] + 1,
                cold=v["cold_start"],
                items=v["items"],
                fallback=v.get("fallback"),
                latency=v["latency_ms"],
                last=last_item.get(v["event_id"], "?"),
            )
            users[v["user_id"]] = u

    t0 = time.monotonic()
    sent_box: dict[str, int | None] = {"n": None}
    producer_task: asyncio.Task[None] | None = None

    async def produce_all() -> None:
        sent_box["n"] = await replay(
            bootstrap,
            topics,
            events,
            rate=args.rate,
            total=total,
            catalogue=catalogue,
            progress=False,
            on_sent=on_sent,
            stop=stop,
        )

    live = (
        None
        if args.no_live or not console.is_terminal
        else Live(table(), console=console, refresh_per_second=4)
    )

    def finished() -> bool:
        """Asked after every poll: refresh the table, end the replay at ``--duration``, and
        stop once every sent event is answered (or after a generous timeout)."""
        if live:
            live.update(table())
        elapsed = time.monotonic() - t0
        if args.duration is not None and elapsed > args.duration:
            stop.set()
        if producer_task is not None and producer_task.done():
            producer_task.result()
            if counts["recs"] + counts["dlq"] >= (sent_box["n"] or 0) or stop.is_set():
                return True
            if elapsed > (args.duration or 0) + 60 + total / max(args.rate, 100):
                console.print("[red]timed out waiting for recommendations[/red]")
                return True
        return False

    positioned = asyncio.Event()
    reader = asyncio.create_task(
        read_until(
            bootstrap,
            [topics["recommendations"], topics["events-dlq"]],
            until=finished,
            timeout_s=None,
            positioned=positioned,
            on_records=on_records,
            keep=False,
            fetch_max_wait_ms=20,
            poll_ms=200,
        )
    )
    try:
        await positioned.wait()  # the consumer is up before the first event goes out
        t0 = time.monotonic()
        producer_task = asyncio.create_task(produce_all())
        if live:
            live.start()
        await reader
    finally:
        stop.set()
        if live:
            live.stop()
        if producer_task is not None and not producer_task.done():
            producer_task.cancel()
        if not reader.done():
            reader.cancel()
    if not live:
        console.print(table())
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return {
        "sent": sent_box["n"] or 0,
        "recs": counts["recs"],
        "dlq": counts["dlq"],
        "users": len(users),
        "p50": q[49],
        "p99": q[98],
    }
