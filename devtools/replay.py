"""Replay events into ``clicks`` / ``purchases`` (and the catalogue into ``items``).

Sources: MovieLens-100K from :mod:`trainer.data` in time order (rating >= 4 is a purchase),
or the synthetic generator of :mod:`trainer.data.synthetic`. ``rate`` is events per second
(0 = flat out). Each event gets a fresh ``event_id`` (``<run>-<n>``) so a second replay is
new traffic, not duplicates.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ReplayEvent:
    user_id: str
    item_id: str
    event_type: int  # 0 click, 1 purchase
    ts: float


def movielens_events(limit: int | None = None) -> tuple[Iterator[ReplayEvent], list[tuple[str, str]]]:
    """MovieLens-100K interactions in time order, and the catalogue ``[(item_id, title)]``."""
    from trainer.data import load_movielens

    inter, items = load_movielens()

    def gen() -> Iterator[ReplayEvent]:
        n = len(inter) if limit is None else min(limit, len(inter))
        for i in range(n):  # already sorted stably by (timestamp, file order)
            yield ReplayEvent(inter.user_ids[int(inter.user[i])], items.ids[int(inter.item[i])],
                              int(inter.event[i]), float(inter.ts[i]))

    return gen(), list(zip(items.ids, items.titles, strict=True))


def synthetic_events(limit: int, *, n_users: int = 10_000, n_items: int = 10_000,
                     seed: int = 0) -> tuple[Iterator[ReplayEvent], list[tuple[str, str]]]:
    from trainer.data.synthetic import SyntheticConfig, synthetic_items
    from trainer.data.synthetic import synthetic_events as gen_chunks

    cfg = SyntheticConfig(n_users=n_users, n_items=n_items, n_events=limit, seed=seed)
    catalogue: list[tuple[str, str]] = []
    for ids, titles, _texts in synthetic_items(cfg):
        catalogue.extend(zip(ids, titles, strict=True))
    ids_all = [c[0] for c in catalogue]

    def gen() -> Iterator[ReplayEvent]:
        for chunk in gen_chunks(cfg):
            for u, it, ts, ev in zip(chunk["user"].tolist(), chunk["item"].tolist(), chunk["ts"].tolist(),
                                     chunk["event"].tolist(), strict=True):
                yield ReplayEvent(f"su{u}", ids_all[it], ev, float(ts))

    return gen(), catalogue


def event_record(ev: ReplayEvent, event_id: str, topics: dict[str, str]) -> tuple[str, bytes, bytes]:
    topic = topics["purchases" if ev.event_type == 1 else "clicks"]
    value = json.dumps({"event_id": event_id, "user_id": ev.user_id, "item_id": ev.item_id, "ts": ev.ts},
                       separators=(",", ":")).encode()
    return topic, ev.user_id.encode(), value


async def replay(bootstrap: str, topics: dict[str, str], events: Iterator[ReplayEvent], *,
                 rate: float = 0.0, total: int | None = None, catalogue: list[tuple[str, str]] | None = None,
                 progress: bool = True, run_id: str | None = None,
                 on_sent: Callable[[str, ReplayEvent, float], None] | None = None,
                 stop: asyncio.Event | None = None) -> int:
    """Send ``events`` (at ``rate`` ev/s, 0 = flat out); returns how many were sent.

    ``on_sent(event_id, event, send_time)`` is called for every event (benchmarks, demo)."""
    from aiokafka import AIOKafkaProducer
    from tqdm import tqdm

    run_id = run_id or uuid.uuid4().hex[:8]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1,
                                max_batch_size=256 * 1024)
    await producer.start()
    sent = 0
    bar = tqdm(total=total, unit="ev", disable=not progress, smoothing=0.1, desc="replay")
    try:
        if catalogue:
            now = time.time()
            for iid, title in catalogue:
                await producer.send(topics["items"], key=iid.encode(), value=json.dumps(
                    {"item_id": iid, "title": title, "ts": now}).encode())
            await producer.flush()
        t0 = last = time.perf_counter()
        pending: list = []
        for ev in events:
            if stop is not None and stop.is_set():
                break
            eid = f"{run_id}-{sent}"
            topic, key, value = event_record(ev, eid, topics)
            if rate > 0:
                delay = t0 + sent / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            pending.append(await producer.send(topic, value=value, key=key))
            if on_sent is not None:
                on_sent(eid, ev, time.time())
            sent += 1
            if len(pending) >= 1000 or time.perf_counter() - last > 0.2:
                await asyncio.gather(*pending)
                bar.update(len(pending))
                pending.clear()
                last = time.perf_counter()
        if pending:
            await asyncio.gather(*pending)
            bar.update(len(pending))
        await producer.flush()
    finally:
        bar.close()
        await producer.stop()
    return sent
