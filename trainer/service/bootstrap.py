"""The trainer's first model when the model store is empty (``coldstream trainer`` on a new
cluster): the catalogue from the ``items`` topic, the events buffered on ``clicks`` and
``purchases``, one quick :func:`trainer.student.fitting.fit`.

:func:`first_model` reads every topic from its beginning to its current end (no consumer
group: the service's own group then starts from the beginning as usual), keeps the events
that pass the stream's rules and name a catalogue item, and trains once there are enough
(``min_buffer_events``, and at least two users with two events each: one to train, one to
validate). Until then it polls again every ``poll_s``, saying what it waits for. The
teacher reads each item as ``title - category. description`` (:func:`trainer.teacher.encoder.catalog_text`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coldstream.core.events import EVENT_TYPES, Event, validate_event
from coldstream.core.topics import load_topics, topic_names
from trainer.data.interactions import Interactions, Items

log = logging.getLogger(__name__)

__all__ = ["StreamData", "first_model", "read_stream"]

MAX_FUTURE_SKEW_S = 86400 * 365 * 50
"""As in the service: a replay carries old timestamps, the clock is not checked here."""


@dataclass
class StreamData:
    """What the topics hold: the catalogue (latest record per item) and the valid events."""

    titles: dict[str, str] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    events: list[tuple[str, str, float, int]] = field(default_factory=list)
    """``(user_id, item_id, ts, event code)`` in read order."""

    def dataset(self) -> tuple[Interactions, Items]:
        """The events on catalogue items, as :class:`Interactions` sorted by (ts, read order)."""
        ids = list(self.titles)
        row = {iid: i for i, iid in enumerate(ids)}
        items = Items(
            ids=ids, titles=[self.titles[i] for i in ids], texts=[self.texts[i] for i in ids]
        )
        kept = [e for e in self.events if e[1] in row]
        users: dict[str, int] = {}
        u = np.array([users.setdefault(e[0], len(users)) for e in kept], dtype=np.int64)
        it = np.array([row[e[1]] for e in kept], dtype=np.int64)
        ts = np.array([e[2] for e in kept], dtype=np.float64)
        ev = np.array([e[3] for e in kept], dtype=np.int64)
        order = np.lexsort((np.arange(len(ts)), ts))
        inter = Interactions(
            user=u[order], item=it[order], ts=ts[order], event=ev[order], user_ids=list(users)
        )
        return inter, items

    def enough(self, min_events: int) -> str | None:
        """``None`` when a first model can be trained, else what is missing."""
        if not self.titles:
            return "no item on the items topic yet"
        inter, _ = self.dataset()
        if len(inter) < min_events:
            return f"{len(inter)} events on catalogue items, need {min_events}"
        per_user = np.bincount(inter.user) if len(inter) else np.zeros(0)
        if int((per_user >= 2).sum()) < 2:
            return "fewer than two users with two events"
        return None


async def read_stream(settings: Any, *, timeout_s: float = 60.0) -> StreamData:
    """Read ``items``, ``clicks`` and ``purchases`` from the beginning to their current end."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from trainer.teacher.encoder import catalog_text

    names = topic_names(settings.topic_prefix)
    specs = load_topics()
    logical = {names[t]: t for t in ("items", "clicks", "purchases")}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **settings.kafka_client_kwargs(),
    )
    await consumer.start()
    data = StreamData()
    try:
        tps = [TopicPartition(n, p) for n, t in logical.items() for p in range(specs[t].partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                break
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, records in batch.items():
                topic = logical[tp.topic]
                for r in records:
                    if topic == "items":
                        try:
                            rec = json.loads(r.value or b"")
                            iid = str(rec["item_id"])
                        except (ValueError, KeyError, TypeError):
                            continue
                        text = catalog_text(rec)
                        if text:
                            data.titles[iid] = str(rec.get("title") or iid)
                            data.texts[iid] = text
                        continue
                    ev = validate_event(
                        r.value, topic, key=r.key, max_future_skew_s=MAX_FUTURE_SKEW_S
                    )
                    if isinstance(ev, Event):
                        data.events.append(
                            (ev.user_id, ev.item_id, ev.ts, EVENT_TYPES[ev.event_type])
                        )
        return data
    finally:
        await consumer.stop()


def first_model(settings: Any, *, poll_s: float = 30.0, max_wait_s: float | None = None) -> Path:
    """Wait for enough data on the topics, train a quick first model into the store and
    return its path (unsigned: the caller signs it and points the store at it)."""
    from trainer.student.fitting import FitConfig, fit

    t0 = time.monotonic()
    while True:
        data = asyncio.run(read_stream(settings))
        missing = data.enough(settings.min_buffer_events)
        if missing is None:
            break
        if max_wait_s is not None and time.monotonic() - t0 > max_wait_s:
            raise TimeoutError(f"no first model after {max_wait_s:.0f} s: {missing}")
        log.warning(
            "trainer: empty model store, waiting for data to train a first model: %s", missing
        )
        time.sleep(poll_s)
    inter, items = data.dataset()
    log.warning(
        "trainer: empty model store: training a first model on %d events of %d users, %d items "
        "(the items topic)",
        len(inter),
        len(inter.user_ids),
        len(items),
    )
    cfg = FitConfig(
        quick=True,
        teacher_path=str(settings.teacher_path) if settings.teacher_path else None,
        device=settings.device,
        threads=settings.threads,
        seed=settings.seed,
    )
    return fit(inter, items, cfg, store_root=settings.model_store, progress=settings.progress)
