"""``coldstream demo``: one command on a fresh machine: embedded Tansu broker -> topics -> a quick
bootstrap model if the demo's store has none -> a worker subprocess (own process group) ->
MovieLens replay -> a live table of recommendations for new users with item titles.

It is a cold-start demo (:mod:`devtools.demo_scoring`): 10% of the MovieLens users are held
out of the bootstrap model, and only their events are replayed, so every user in the table
is one the model has never seen. The table shows, per user, whether their latest event was
among the items recommended after their previous one, and the running hit rate of those
recommendations against the most popular items at the same moment. ``--events N`` /
``--duration S`` make it finish by itself; Ctrl-C stops every process it started (SIGTERM to
the group, deadline, SIGKILL). The replay is :func:`devtools.replay.replay`; ``coldstream
replay`` is :mod:`devtools.replay`'s command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from coldstream.core.errors import ExitCode

__all__ = ["add_arguments", "run"]


DEMO_STORE = Path(".cache") / "demo" / "model-store"
"""The demo's own store: its bootstrap model never saw the replayed users (a model-store/
trained by ``coldstream train`` on every user would make the demo warm)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model-store",
        default=None,
        help=f"model store; trained here (held-out users) when empty (default: {DEMO_STORE})",
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


def _ensure_model(store: Path, random_model: bool) -> tuple[Path, bool]:
    """The checkpoint to serve, and whether it is known never to have seen the replayed
    users (trained here without them, or the random model)."""
    from coldstream.core.checkpoint import latest_checkpoint
    from devtools.demo_scoring import read_marker

    path = latest_checkpoint(store)
    if path is not None:
        print(f"model: {path}")
        if read_marker(store) is None:
            print(
                f"warning: {store} was not trained by the demo: its model may know the replayed "
                f"users (not a cold start); give a fresh --model-store for a cold demo",
                flush=True,
            )
            return path, False
        return path, True
    if random_model:
        return _random_movielens_model(store), True
    from devtools.demo_scoring import held_out_users, without_users, write_marker
    from trainer.data import load_movielens
    from trainer.student.fitting import FitConfig, fit

    inter, items = load_movielens()
    held = held_out_users(inter.user_ids)
    print(
        f"no model in {store}: training a quick bootstrap model on MovieLens-100K without the "
        f"{len(held)} users the demo replays (about 2 min on 2 CPUs)...",
        flush=True,
    )
    t0 = time.time()
    path = fit(without_users(inter, held), items, FitConfig(quick=True), store_root=store)
    write_marker(store, held, path)
    print(f"model: {path} (trained in {time.time() - t0:.0f} s)")
    return path, True


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


def signed_copy(path: Path, workdir: Path) -> tuple[Path, Path]:
    """The demo's own store: a copy of the checkpoint at ``path``, signed with a key pair made
    for this run (``workdir/keys``; the worker gets the public key only), and the store's
    ``CURRENT.json`` pointing at it. The user's store is only read."""
    import shutil

    from coldstream.core.checkpoint import sign_checkpoint
    from coldstream.core.signing import Signer
    from devtools.checkpoints import point_store

    signer = Signer.generate()
    _, public = signer.write(workdir / "keys")
    store = workdir / "store"
    store.mkdir()
    copy = store / path.name
    shutil.copytree(path, copy, symlinks=True)
    (copy / "signature.json").unlink(missing_ok=True)  # signed below with this run's key
    sign_checkpoint(copy, signer)
    point_store(copy, signer)
    return store, public


def run(args: argparse.Namespace) -> int:
    """``coldstream demo``."""
    from rich.console import Console

    from coldstream.core.topics import create_topics, topic_names
    from devtools.brokers import TansuBroker, free_port
    from devtools.processes import WorkerProcess

    console = Console()
    store = Path(args.model_store) if args.model_store else DEMO_STORE
    path, cold = _ensure_model(store, args.random_model)
    from coldstream.core.checkpoint import load_checkpoint

    ck = load_checkpoint(path)
    titles = dict(zip(ck.item_ids, ck.item_titles, strict=True))
    del ck

    workdir = Path(tempfile.mkdtemp(prefix="coldstream-demo-"))
    served, verify_keys = signed_copy(path, workdir)
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
            model_store=served,
            env={**os.environ, "COLDSTREAM_VERIFY_KEYS_FILE": str(verify_keys)},
            web_port=port,
            web_bind="127.0.0.1",
            profile="dev",
            app_id="coldstream-demo",
            idempotent_producer=False,  # Tansu has no idempotent producer
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
        stats = asyncio.run(_run(args, broker.bootstrap, topic_names(""), titles, console, cold))
    except KeyboardInterrupt:
        console.print("interrupted: stopping the worker and the broker")
        stats = None
    finally:
        if worker is not None:
            worker.stop(deadline_s=10)
        broker.stop()
    if stats is None:
        return ExitCode.INTERRUPTED
    who = "new users (never seen by the model)" if cold else "users (the model may know them)"
    console.print(
        f"events sent {stats['sent']}, recommendations {stats['recs']}, DLQ {stats['dlq']}, "
        f"{who} {stats['users']}, latency p50 {stats['p50']:.1f} ms, p99 {stats['p99']:.1f} ms"
    )
    console.print(
        f"next event among the previous top-10: coldstream {stats['hit_rate']:.1%}, popularity "
        f"{stats['popular_rate']:.1%} (n={stats['judged']} next events)"
    )
    return ExitCode.OK if stats["recs"] + stats["dlq"] >= stats["sent"] else ExitCode.FAILURE


async def _run(
    args: argparse.Namespace,
    bootstrap: str,
    topics: dict[str, str],
    titles: dict[str, str],
    console: Any,
    cold: bool = True,
) -> dict[str, Any]:
    from rich.live import Live
    from rich.table import Table

    from devtools.demo_scoring import (
        NextEventScore,
        held_out_events,
        held_out_users,
        without_users,
    )
    from devtools.kafka_io import read_until
    from devtools.replay import replay
    from trainer.data import load_movielens

    inter, ml_items = load_movielens()
    held = held_out_users(inter.user_ids)
    replayed = held_out_events(inter, ml_items, held, args.events or None)
    events = iter(replayed)
    catalogue = list(zip(ml_items.ids, ml_items.titles, strict=True))
    trained = without_users(inter, held)
    scorer = NextEventScore(past_items=[ml_items.ids[int(i)] for i in trained.item])
    total = len(replayed)
    users: OrderedDict[str, dict[str, Any]] = OrderedDict()
    latencies: list[float] = []
    counts = {"recs": 0, "dlq": 0}
    stop = asyncio.Event()

    def table() -> Table:
        sys_rate, pop_rate = scorer.rates()
        who = "new users" if cold else "users"
        t = Table(
            title=f"coldstream: live recommendations for {len(users)} {who} "
            f"({counts['recs']} so far)",
            caption=f"next event among the previous top-10: coldstream {sys_rate:.1%} vs "
            f"popularity {pop_rate:.1%} (n={scorer.judged})",
            expand=True,
        )
        t.add_column("user", no_wrap=True)
        t.add_column("events", justify="right")
        t.add_column("cold", justify="center")
        t.add_column("last event")
        t.add_column("in prev. recs", justify="center")
        t.add_column("top 3 recommendations")
        t.add_column("ms", justify="right")
        for user, u in list(users.items())[-12:]:
            recs = "; ".join(titles.get(i["item_id"], i["item_id"])[:32] for i in u["items"][:3])
            if u.get("fallback"):
                recs = f"[popular] {recs}"
            hit = u.get("hit")
            t.add_row(
                user,
                str(u["n"]),
                "yes" if u["cold"] else "",
                titles.get(u["last"], u["last"])[:36],
                "-" if hit is None else ("[green]hit[/green]" if hit.system else "no"),
                recs,
                f"{u['latency']:.0f}",
            )
        return t

    last_item: dict[str, str] = {}

    def on_sent(eid: str, ev: Any, _t: float) -> None:
        last_item[eid] = ev.item_id
        scorer.sent(eid, ev.user_id, ev.item_id)

    def on_records(records: list[Any], _now: float) -> None:
        for r in records:
            v = json.loads(r.value)
            if r.topic == topics["events-dlq"]:
                counts["dlq"] += 1
                continue
            counts["recs"] += 1
            latencies.append(v["latency_ms"])
            u = users.pop(v["user_id"], {"n": 0})
            hit = scorer.answered(v["event_id"], [str(i["item_id"]) for i in v["items"]])
            u.update(
                hit=hit,
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
        "hit_rate": scorer.rates()[0],
        "popular_rate": scorer.rates()[1],
        "judged": scorer.judged,
    }
