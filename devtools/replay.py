"""Replay events into ``clicks`` / ``purchases`` (and the catalogue into ``items``).

Sources: MovieLens-100K from :mod:`trainer.data` in time order (rating >= 4 is a purchase),
or the synthetic generator of :mod:`trainer.data.synthetic`, streamed at any size
(``--items 1000000 --users 10000000 --events 100000000``: memory does not grow with the
events). ``rate`` is events per second
(0 = flat out). Each event gets a fresh ``event_id`` (``<run>-<n>``) so a second replay is
new traffic, not duplicates. :func:`replay` is used by ``coldstream replay`` (this module's
:func:`run`), the demo and the prequential evaluation; it sends through
:func:`devtools.kafka_io.produce`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from coldstream.core.errors import ExitCode
from coldstream.core.records import event_payload
from devtools.kafka_io import produce

__all__ = [
    "ReplayEvent",
    "add_arguments",
    "event_record",
    "item_records",
    "movielens_events",
    "replay",
    "run",
    "synthetic_catalogue",
    "synthetic_events",
]


@dataclass(frozen=True)
class ReplayEvent:
    user_id: str
    item_id: str
    event_type: int  # 0 click, 1 purchase
    ts: float


def movielens_events(
    limit: int | None = None,
) -> tuple[Iterator[ReplayEvent], list[tuple[str, str]]]:
    """MovieLens-100K interactions in time order, and the catalogue ``[(item_id, title)]``."""
    from trainer.data import load_movielens

    inter, items = load_movielens()

    def gen() -> Iterator[ReplayEvent]:
        n = len(inter) if limit is None else min(limit, len(inter))
        for i in range(n):  # already sorted stably by (timestamp, file order)
            yield ReplayEvent(
                inter.user_ids[int(inter.user[i])],
                items.ids[int(inter.item[i])],
                int(inter.event[i]),
                float(inter.ts[i]),
            )

    return gen(), list(zip(items.ids, items.titles, strict=True))


def synthetic_catalogue(
    *, n_items: int, seed: int = 0, categories: bool = True
) -> Iterator[tuple[str, str] | tuple[str, str, str]]:
    """The synthetic catalogue, streamed: ``(item_id, title, category)`` (the category makes the
    trainer's :func:`trainer.teacher.encoder.catalog_text` equal the generator's item text), or
    ``(item_id, title)`` without ``categories``."""
    from trainer.data.synthetic import SyntheticConfig, synthetic_items

    cfg = SyntheticConfig(n_items=n_items, seed=seed, n_users=1, n_events=0)
    for ids, titles, texts in synthetic_items(cfg):
        for iid, title, text in zip(ids, titles, texts, strict=True):
            yield (iid, title, text[len(title) + 3 :]) if categories else (iid, title)


def synthetic_events(
    limit: int,
    *,
    n_users: int = 10_000,
    n_items: int = 10_000,
    seed: int = 0,
    chunk_size: int = 200_000,
) -> tuple[Iterator[ReplayEvent], Iterator[tuple[str, ...]]]:
    """``limit`` synthetic events (:mod:`trainer.data.synthetic`: Zipf popularity, sessions,
    drifting interests) and the catalogue, both lazy iterators: memory
    ``O(chunk_size + n_items + n_users)`` however many events (1M items, 10M users, 100M
    events stream in a few hundred MB). Users are ``su<n>``, items ``s<n>``."""
    from trainer.data.synthetic import SyntheticConfig
    from trainer.data.synthetic import synthetic_events as gen_chunks

    cfg = SyntheticConfig(
        n_users=n_users, n_items=n_items, n_events=limit, seed=seed, chunk_size=chunk_size
    )

    def gen() -> Iterator[ReplayEvent]:
        for chunk in gen_chunks(cfg):
            for u, it, ts, ev in zip(
                chunk["user"].tolist(),
                chunk["item"].tolist(),
                chunk["ts"].tolist(),
                chunk["event"].tolist(),
                strict=True,
            ):
                yield ReplayEvent(f"su{u}", f"s{it}", ev, float(ts))

    return gen(), synthetic_catalogue(n_items=n_items, seed=seed)


def item_records(
    catalogue: Iterable[tuple[str, ...]], topic: str
) -> Iterator[tuple[str, bytes, bytes]]:
    """``(topic, key, value)`` of the ``items`` records of a catalogue, lazily."""
    now = time.time()
    for entry in catalogue:
        iid, title = entry[0], entry[1]
        rec: dict[str, Any] = {"item_id": iid, "title": title, "ts": now}
        if len(entry) > 2 and entry[2]:
            rec["category"] = entry[2]
        yield topic, iid.encode(), json.dumps(rec).encode()


def event_record(
    ev: ReplayEvent, event_id: str, topics: dict[str, str]
) -> tuple[str, bytes, bytes]:
    """``(physical topic, key, value)`` of one replayed event."""
    topic = topics["purchases" if ev.event_type == 1 else "clicks"]
    return (
        topic,
        ev.user_id.encode(),
        event_payload(ev.user_id, ev.item_id, event_id=event_id, ts=ev.ts),
    )


async def replay(
    bootstrap: str,
    topics: dict[str, str],
    events: Iterator[ReplayEvent],
    *,
    rate: float = 0.0,
    total: int | None = None,
    catalogue: Iterable[tuple[str, ...]] | None = None,
    progress: bool = True,
    run_id: str | None = None,
    on_sent: Callable[[str, ReplayEvent, float], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Send ``events`` (at ``rate`` ev/s, 0 = flat out); returns how many were sent.

    The ``catalogue`` (``(item_id, title)`` or ``(item_id, title, category)`` tuples, a list
    or a lazy iterator) goes to ``items`` first, flat out and acknowledged before the first
    event. ``on_sent(event_id, event, send_time)`` is called
    for every event (benchmarks, demo); ``stop`` ends the replay early."""
    from tqdm import tqdm

    run_id = run_id or uuid.uuid4().hex[:8]
    config: dict[str, Any] = {
        "linger_ms": 5,
        "acks": 1,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": 40_000,
    }
    bar = tqdm(total=total, unit="ev", disable=not progress, smoothing=0.1, desc="replay")
    try:
        if catalogue is not None:
            await produce(bootstrap, item_records(catalogue, topics["items"]), **config)

        def records() -> Iterator[tuple[str, bytes, bytes, str, ReplayEvent]]:
            for n, ev in enumerate(events):
                eid = f"{run_id}-{n}"
                yield (*event_record(ev, eid, topics), eid, ev)

        def sent(_i: int, rec: tuple[str, bytes, bytes, str, ReplayEvent], t: float) -> None:
            if on_sent is not None:
                on_sent(rec[3], rec[4], t)

        done = await produce(
            bootstrap,
            records(),
            rate=rate,
            stop=(lambda _i: stop.is_set()) if stop is not None else None,
            on_sent=sent,
            on_acked=lambda *_: bar.update(1),
            settle_every=1000,
            settle_s=0.2,
            **config,
        )
    finally:
        bar.close()
    return done.sent


# ------------------------------------------------------------------------------ the command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", default=None, help="broker (default: env COLDSTREAM_BOOTSTRAP)")
    p.add_argument(
        "--topic-prefix", default=None, help="topic prefix (default: env COLDSTREAM_TOPIC_PREFIX)"
    )
    p.add_argument(
        "--source", choices=["movielens", "synthetic"], default="movielens", help="event source"
    )
    p.add_argument(
        "--events",
        type=int,
        default=0,
        help="events to send (0: all of MovieLens; synthetic: 100000)",
    )
    p.add_argument(
        "--items", type=int, default=10_000, help="synthetic: catalogue size (up to 2**31 - 1)"
    )
    p.add_argument("--users", type=int, default=10_000, help="synthetic: users")
    p.add_argument("--seed", type=int, default=0, help="synthetic: the generator's seed")
    p.add_argument("--rate", type=float, default=0.0, help="events per second (0: flat out)")
    p.add_argument("--no-items", action="store_true", help="do not send the catalogue to `items`")


def run(args: argparse.Namespace) -> int:
    """``coldstream replay``."""
    from coldstream.core.topics import topic_names
    from stream_app.settings import Settings

    s = Settings().with_overrides(bootstrap=args.bootstrap, topic_prefix=args.topic_prefix)
    if args.source == "movielens":
        events, catalogue = movielens_events(args.events or None)
        total = args.events or 100_000
    else:
        from coldstream.core.errors import UsageError

        if not 1 <= args.items < 2**31 or not 1 <= args.users < 2**31 or args.events < 0:
            raise UsageError("--items and --users must be in 1..2**31-1, --events >= 0")
        total = args.events or 100_000
        events, catalogue = synthetic_events(
            total, n_users=args.users, n_items=args.items, seed=args.seed
        )
    sent = asyncio.run(
        replay(
            s.bootstrap,
            topic_names(s.topic_prefix),
            events,
            rate=args.rate,
            total=total,
            catalogue=None if args.no_items else catalogue,
        )
    )
    print(f"sent {sent} events to {s.bootstrap}")
    return ExitCode.OK
