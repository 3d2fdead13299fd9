"""Your files to a running recommender in one command: train a quick model on your events
and catalogue, start the embedded Tansu broker and a worker, replay your latest events
through it, and print where to send events, where to read recommendations and the metrics
URL. Ctrl-C stops everything it started.

    coldstream quickstart --events events.csv --catalogue catalogue.csv
    coldstream quickstart --write-example shop     # a small example export to try it on

The files go through the same adapters as ``coldstream train`` (:mod:`trainer.data.files`:
a byte-order mark, extra columns, ISO-8601 or epoch s/ms times, ``--event-map``,
``--columns``, ``--unknown-items``). The model is trained once into ``--model-store``
(reused when it already holds one), then served from a copy signed with a key made for this
run, so the worker verifies it as in production. Replayed events carry the current time
(their order and users are yours).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from coldstream.core.errors import ExitCode, UsageError

__all__ = ["add_arguments", "run", "write_example"]

DEFAULT_STORE = Path(".coldstream") / "quickstart" / "model-store"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=Path, default=None, help="your events file (default: none)")
    p.add_argument(
        "--catalogue", type=Path, default=None, help="your catalogue file (default: none)"
    )
    from trainer.commands import add_input_options

    add_input_options(p)
    p.add_argument(
        "--model-store",
        type=Path,
        default=DEFAULT_STORE,
        help="where the model is trained (reused when it holds one)",
    )
    p.add_argument("--retrain", action="store_true", help="train a new model even if one is there")
    p.add_argument("--epochs", type=int, default=4, help="training epochs (quick mode)")
    p.add_argument(
        "--replay", type=int, default=200, help="replay your latest N events through it (0: none)"
    )
    p.add_argument("--rate", type=float, default=50.0, help="replay events per second")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    p.add_argument(
        "--web-port", type=int, default=None, help="worker web port (default: a free one)"
    )
    p.add_argument(
        "--write-example",
        type=Path,
        default=None,
        metavar="DIR",
        help="write a small example export (events.csv, catalogue.csv) into DIR and exit "
        "(default: none)",
    )


def write_example(
    folder: Path, *, n_users: int = 400, n_items: int = 300, n_events: int = 5000
) -> None:
    """A shop export as real ones come: a byte-order mark, ISO-8601 times, a ``view`` event
    type, extra columns (``price``, ``session_id``) and a few events on items that are not in
    the catalogue. Users stick to one of eight categories."""
    rng = random.Random(7)
    folder.mkdir(parents=True, exist_ok=True)
    kinds = ["jazz", "metal", "folk", "techno", "opera", "blues", "punk", "soul"]
    items = [(f"sku-{i:04d}", kinds[i % len(kinds)]) for i in range(n_items)]
    with open(folder / "catalogue.csv", "w", newline="", encoding="utf-8-sig") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "title", "category", "price"])
        for n, (sku, kind) in enumerate(items):
            w.writerow([sku, f"{kind.title()} album no. {n}", kind, f"{5 + n % 20}.99"])
    t0 = 1_714_560_000  # 2024-05-01T10:40:00Z
    with open(folder / "events.csv", "w", newline="", encoding="utf-8-sig") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "ts", "event_type", "session_id"])
        for e in range(n_events):
            u = rng.randrange(n_users)
            kind = u % len(kinds)
            if e % 250 == 249:
                sku = f"gone-{e}"  # an item deleted from the catalogue since
            else:
                sku = items[kind + len(kinds) * rng.randrange(n_items // len(kinds))][0]
            ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + 37 * e))
            etype = "purchase" if rng.random() < 0.1 else "view"
            w.writerow([f"user-{u}", sku, ts, etype, f"s{u}-{e // 50}"])


def _train(args: argparse.Namespace, inter: Any, items: Any) -> Path:
    from coldstream.core.checkpoint import latest_checkpoint

    store: Path = args.model_store
    path = None if args.retrain else latest_checkpoint(store)
    if path is not None:
        print(f"model: {path} (already trained; --retrain for a new one)", flush=True)
        return path
    from trainer.student.fitting import FitConfig, fit

    print(f"training a quick model on {len(inter)} events into {store} ...", flush=True)
    t0 = time.perf_counter()
    path = fit(inter, items, FitConfig(quick=True, train={"epochs": args.epochs}), store_root=store)
    print(f"model: {path} (trained in {time.perf_counter() - t0:.0f} s)", flush=True)
    return path


def _replay_records(inter: Any, items: Any, n: int, names: dict[str, str]) -> list[Any]:
    from coldstream.core.records import event_payload

    start = max(0, len(inter) - n)
    now = time.time()
    out = []
    for j in range(start, len(inter)):
        user = inter.user_ids[int(inter.user[j])]
        kind = "purchase" if int(inter.event[j]) == 1 else None
        value = event_payload(
            user, items.ids[int(inter.item[j])], event_id=f"qs-{j}", ts=now, event_type=kind
        )
        topic = names["purchases" if kind else "clicks"]
        out.append((topic, user.encode(), value))
    return out


def run(args: argparse.Namespace) -> int:
    """``coldstream quickstart``."""
    t_start = time.perf_counter()
    if args.write_example is not None:
        write_example(args.write_example)
        d = args.write_example
        print(f"wrote {d / 'events.csv'} and {d / 'catalogue.csv'}")
        print(
            f"next: coldstream quickstart --events {d / 'events.csv'} --catalogue {d / 'catalogue.csv'}"
        )
        return ExitCode.OK
    if args.events is None or args.catalogue is None:
        raise UsageError("give --events FILE and --catalogue FILE (or --write-example DIR)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from trainer.commands import load_data

    inter, items, _ = load_data(args)
    path = _train(args, inter, items)

    from coldstream.core.topics import create_topics, topic_names
    from devtools.brokers import TansuBroker, free_port
    from devtools.demo import signed_copy
    from devtools.processes import WorkerProcess

    workdir = Path(tempfile.mkdtemp(prefix="coldstream-quickstart-"))
    served, verify_keys = signed_copy(path, workdir)
    broker = TansuBroker(log_path=workdir / "tansu.log")
    worker = None
    names = topic_names("")
    try:
        broker.start()
        asyncio.run(create_topics(broker.bootstrap, replication_factor=1))
        print(f"broker: Tansu at {broker.bootstrap} (memory storage; log {workdir / 'tansu.log'})")
        worker = WorkerProcess(
            log_path=workdir / "worker.log",
            bootstrap=broker.bootstrap,
            model_store=served,
            env={**os.environ, "COLDSTREAM_VERIFY_KEYS_FILE": str(verify_keys)},
            web_port=args.web_port or free_port(),
            web_bind="127.0.0.1",
            profile="dev",
            app_id="coldstream-quickstart",
            idempotent_producer=False,  # Tansu gives out no producer ids
            fetch_max_wait_ms=100,  # idle: ~2% of a core instead of ~10% (10 ms polls)
        )
        worker.start()
        print(
            f"worker: pid {worker.proc.pid if worker.proc else '?'}, ready in {worker.ready_s:.1f} s (log {workdir / 'worker.log'})"
        )
        user = inter.user_ids[int(inter.user[-1])]
        print("send events (another shell):")
        print(f"  export COLDSTREAM_BOOTSTRAP={broker.bootstrap}")
        print(f"  export COLDSTREAM_MODEL_STORE={args.model_store}  # titles and item checks")
        print(f"  coldstream send --user {user} --item {items.ids[int(inter.item[-1])]} --wait 10")
        print(
            f"recommendations: {worker.url('/recommend/<user_id>')}  (e.g. {worker.url('/recommend/' + user)})"
        )
        print("  or: coldstream tail")
        print(f"metrics: {worker.url('/metrics')}", flush=True)
        if args.replay > 0:
            first = asyncio.run(_replay(broker.bootstrap, inter, items, args, names))
            if first is not None:
                rec, t_first = first
                titles = dict(zip(items.ids, items.titles, strict=True))
                shown = ", ".join(titles.get(i["item_id"], i["item_id"]) for i in rec["items"][:3])
                print(
                    f"first recommendation {time.perf_counter() - t_start:.1f} s after the start "
                    f"({t_first * 1000:.0f} ms after the first replayed event): user "
                    f"{rec['user_id']} -> {shown}, ...",
                    flush=True,
                )
            else:
                print("no recommendation within 60 s of the replay: see the worker log", flush=True)
        print("running; Ctrl-C stops the worker and the broker", flush=True)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
            if worker.proc is not None and worker.proc.poll() is not None:
                print(f"the worker exited ({worker.proc.returncode}): see {workdir / 'worker.log'}")
                return ExitCode.FAILURE
    except KeyboardInterrupt:
        print("interrupted: stopping the worker and the broker", file=sys.stderr)
        return ExitCode.INTERRUPTED
    finally:
        if worker is not None:
            worker.stop(deadline_s=10)
        broker.stop()
    return ExitCode.OK


async def _replay(
    bootstrap: str, inter: Any, items: Any, args: argparse.Namespace, names: dict[str, str]
) -> tuple[dict[str, Any], float] | None:
    """Send the latest events; the first recommendation and its delay after the first send."""
    from devtools.kafka_io import produce, read_until

    records = _replay_records(inter, items, args.replay, names)
    got: list[tuple[dict[str, Any], float]] = []
    sent_at: list[float] = []
    positioned = asyncio.Event()

    def on_records(rs: list[Any], now: float) -> None:
        for r in rs:
            if not got and sent_at:
                got.append((json.loads(r.value), time.perf_counter() - sent_at[0]))

    from coldstream.core.topics import load_topics

    parts = {names["recommendations"]: load_topics()["recommendations"].partitions}
    reader = asyncio.create_task(
        read_until(
            bootstrap,
            [names["recommendations"]],
            partitions=parts,
            from_end=True,
            positioned=positioned,
            until=lambda: bool(got),
            timeout_s=60.0,
            on_records=on_records,
            keep=False,
        )
    )
    await positioned.wait()
    sent_at.append(time.perf_counter())
    done = await produce(bootstrap, records, rate=args.rate)
    print(f"replayed {done.sent} of your events at {args.rate:g}/s", flush=True)
    await reader
    return got[0] if got else None
