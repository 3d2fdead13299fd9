"""The trainer service (``coldstream trainer``): continuous re-distillation from the stream.

One process, its own consumer group on ``clicks``, ``purchases`` and ``items``; the
teacher lives here only. :class:`TrainerService` is the loop; one step of it
(:meth:`TrainerService.step`) consumes a batch, handles new items, starts a cycle when one
is due and finishes the cycle that is done:

* **New items** -- an ``items`` record for an item the current student does not know is
  embedded from its text by the teacher, placed in the student's item space by the text
  projection alone (:meth:`coldstream.core.checkpoint.Checkpoint.item_vector_for_text`) and published
  to ``item-vectors`` (``item_id, model_version, vector``); serving upserts it.
* **Re-distillation** -- every ``cycle_events`` events or ``cycle_seconds`` seconds, in a
  worker thread, on a snapshot of the buffer: :func:`trainer.redistill.redistill` (warm
  start from the current student, KD from the teacher, gate on the buffer's latest slice).
* **Publish** -- a promoted candidate is written atomically to the model store
  (:func:`trainer.redistill.publish_checkpoint`, with the teacher head it was distilled
  from, :mod:`trainer.teacher_heads`), then a signed ``model-updates`` record is sent
  (:func:`coldstream.core.model_updates.make_update`).

Without a saved teacher head the service fits one on the buffer in its first cycle and
saves it with the version it promotes. Metrics: :class:`trainer.telemetry.TrainerMetrics`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from coldstream.core.checkpoint import (
    Checkpoint,
    latest_checkpoint,
    load_checkpoint,
    manifest_sha256,
)
from coldstream.core.events import Event, validate_event
from coldstream.core.model_updates import make_update
from coldstream.core.topics import load_topics, topic_names
from trainer.buffer import EventBuffer
from trainer.redistill import (
    CycleConfig,
    CycleResult,
    cycle_train_config,
    item_table,
    publish_checkpoint,
    redistill,
)
from trainer.teacher import catalog_text
from trainer.teacher_heads import HEADS_DIR, TeacherScorer, load_teacher_head
from trainer.telemetry import TrainerMetrics

log = logging.getLogger(__name__)

MAX_FUTURE_SKEW_S = 86400 * 365 * 50
"""Event timestamps are not checked against the clock here (replays carry old ones)."""


class TrainerService:
    """Consumes the stream, embeds new items, runs cycles, publishes (see module doc)."""

    def __init__(
        self, settings: Any, *, teacher: Any = None, metrics: TrainerMetrics | None = None
    ) -> None:
        self.s = settings
        self.names = topic_names(settings.topic_prefix, load_topics())
        self.logical = {self.names[n]: n for n in ("clicks", "purchases", "items")}
        """Physical topic name -> logical name, for the consumed topics."""
        self.teacher = teacher
        self.metrics = metrics or TrainerMetrics()
        self.buffer = EventBuffer(settings.buffer_events)
        self.texts: dict[str, str] = {}
        self.new_items: dict[str, tuple[np.ndarray, str]] = {}
        self.ck: Checkpoint | None = None
        self.head: Any = None
        self.tau = 1.0
        self.cycles = 0
        self.last_cycle = time.monotonic()
        self.events_at_cycle = 0
        self.key = settings.hmac_key()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.running_cycle: asyncio.Future | None = None

    # -- start-up --------------------------------------------------------------------------
    def load(self) -> None:
        path = latest_checkpoint(self.s.model_store)
        if path is None:
            raise FileNotFoundError(
                f"no checkpoint in {self.s.model_store}: run coldstream train first"
            )
        self.ck = load_checkpoint(path, device="cpu")
        for iid, title in zip(self.ck.item_ids, self.ck.item_titles, strict=True):
            self.texts.setdefault(iid, title)
        if self.teacher is None:
            from coldstream.core.device import resolve_device
            from trainer.teacher import Teacher

            self.teacher = Teacher(self.s.teacher_path, device=resolve_device(self.s.device))
        found = load_teacher_head(self.s.model_store, None)
        if found is not None:
            self.head, self.tau = found
        log.warning(
            "trainer: current model v%d (%d items), teacher %s, head %s",
            self.ck.version,
            len(self.ck.item_ids),
            self.teacher.describe().get("name"),
            "loaded" if self.head is not None else "to fit",
        )

    # -- new items -------------------------------------------------------------------------
    def on_item(self, key: bytes | None, value: bytes | None, fresh: dict[str, str]) -> None:
        """Record an ``items`` record's text; an item the student lacks (or whose text
        changed) goes into ``fresh`` to be embedded."""
        try:
            rec = json.loads(value or b"")
            iid = str(rec["item_id"])
        except (ValueError, KeyError, TypeError):
            return
        text = catalog_text(rec)
        if not text:
            return
        known = self.ck is not None and iid in self.ck.index_of
        changed = self.texts.get(iid) != text
        self.texts[iid] = text
        if not known and (iid not in self.new_items or changed):
            fresh[iid] = text

    def embed_items(self, items: dict[str, str]) -> list[tuple[str, bytes]]:
        """Teacher text vectors -> student item vectors under the current model (blocking)."""
        ck = self.ck
        ids = list(items)
        tv = self.teacher.encode([items[i] for i in ids])
        vecs = ck.item_vector_for_text(tv)
        out = []
        for iid, t, v in zip(ids, tv, np.atleast_2d(vecs), strict=True):
            self.new_items[iid] = (t, items[iid][:200])
            out.append(
                (
                    iid,
                    json.dumps(
                        {
                            "item_id": iid,
                            "model_version": str(ck.version),
                            "vector": [round(float(x), 6) for x in v],
                        }
                    ).encode(),
                )
            )
        return out

    # -- one cycle (blocking, in a thread) -----------------------------------------------------
    def cycle_config(self) -> CycleConfig:
        """The configuration of the next cycle (its seed: the settings' seed + cycles run)."""
        s = self.s
        train = cycle_train_config(
            epochs=s.cycle_epochs, seed=s.seed + self.cycles, device=s.device
        )
        return CycleConfig(
            holdout_share=s.holdout_share,
            margin=s.gate_margin,
            teacher_prefixes=s.teacher_prefixes,
            train=train,
        )

    def cycle(
        self,
        buffer: EventBuffer,
        new_items: dict[str, tuple[np.ndarray, str]],
        snapshot_at: float | None = None,
    ) -> tuple[CycleResult, Path | None]:
        """``snapshot_at``: wall time (epoch s) the buffer was copied; recorded in the
        checkpoint's metrics so evaluations can prove no later event was trained on."""
        ck = self.ck
        table = item_table(ck, new_items)
        texts = [self.texts.get(i, t) for i, t in zip(table.ids, table.titles, strict=True)]
        scorer = TeacherScorer(self.teacher, texts, table.text_vecs, self.head, self.tau)
        res = redistill(ck, buffer, new_items=new_items, scorer=scorer, config=self.cycle_config())
        if snapshot_at is not None:
            res.metrics["snapshot_at"] = round(snapshot_at, 3)
        if scorer.fitted:
            self.head, self.tau = scorer.head, scorer.tau
        path = None
        if res.gate.promote:
            path = publish_checkpoint(
                self.s.model_store,
                res,
                teacher={**ck.teacher, **self.teacher.describe(), "head": f"{HEADS_DIR}/"},
            )
        return res, path

    def cycle_due(self) -> bool:
        s = self.s
        fresh = self.buffer.added - self.events_at_cycle
        if len(self.buffer) < s.min_buffer_events or fresh <= 0:
            return False
        return (s.cycle_events > 0 and fresh >= s.cycle_events) or (
            s.cycle_seconds > 0 and time.monotonic() - self.last_cycle >= s.cycle_seconds
        )

    # -- the loop ----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Load the current model, connect, and :meth:`step` until ``stop`` is set."""
        await asyncio.get_running_loop().run_in_executor(None, self.load)
        await self.connect()
        stop = stop or asyncio.Event()
        log.warning("trainer: consuming %s as group %s", sorted(self.logical), self.s.group_id)
        try:
            while not stop.is_set():
                await self.step()
        finally:
            await self.close()

    async def connect(self) -> None:
        """Start the consumer (the trainer's group on clicks, purchases, items) and the producer."""
        s = self.s
        security = s.kafka_client_kwargs()
        self.consumer = AIOKafkaConsumer(
            *self.logical,
            bootstrap_servers=s.bootstrap,
            group_id=s.group_id,
            auto_offset_reset="earliest",
            enable_auto_commit=True,
            fetch_max_wait_ms=100,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
            **security,
        )
        self.producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap, acks="all", linger_ms=5, **security
        )
        await self.consumer.start()
        await self.producer.start()

    async def close(self) -> None:
        """Wait a little for a running cycle, then stop the clients."""
        if self.running_cycle is not None:
            await asyncio.wait([self.running_cycle], timeout=5)
        await self.consumer.stop()
        await self.producer.stop()

    async def step(self) -> None:
        """One turn of the loop: a batch of records, its new items, the cycle."""
        fresh_items = await self.consume_batch()
        if fresh_items:
            await self.handle_items(fresh_items)
        self.update_gauges()
        if self.running_cycle is None and self.cycle_due():
            self.start_cycle()
        if self.running_cycle is not None and self.running_cycle.done():
            await self.finish_cycle()

    async def consume_batch(self) -> dict[str, str]:
        """Buffer the batch's valid click and purchase events; return the new items' texts."""
        batch = await self.consumer.getmany(timeout_ms=200, max_records=5000)
        fresh_items: dict[str, str] = {}
        for tp, records in batch.items():
            topic = self.logical.get(tp.topic)
            for r in records:
                if topic == "items":
                    self.on_item(r.key, r.value, fresh_items)
                    continue
                ev = validate_event(r.value, topic, key=r.key, max_future_skew_s=MAX_FUTURE_SKEW_S)
                if isinstance(ev, Event):
                    self.buffer.add(ev.user_id, ev.item_id, ev.type_code, ev.ts, ev.event_id)
        return fresh_items

    async def handle_items(self, items: dict[str, str]) -> None:
        """Embed new items under the current model; send their vectors to ``item-vectors``
        and wait until the broker has them."""
        out = await asyncio.get_running_loop().run_in_executor(None, self.embed_items, items)
        futs = [
            await self.producer.send(self.names["item-vectors"], key=k.encode(), value=v)
            for k, v in out
        ]
        await asyncio.gather(*futs)
        self.metrics.new_items.inc(len(out))
        log.warning("trainer: published %d new item vectors (model v%d)", len(out), self.ck.version)

    def update_gauges(self) -> None:
        m = self.metrics
        m.buffer_events.set(len(self.buffer))
        m.model_age.set(
            max(0.0, time.time() - float(self.ck.manifest.get("created_at", time.time())))
        )

    def start_cycle(self) -> None:
        """Run :meth:`cycle` in a worker thread on a snapshot of the buffer."""
        self.events_at_cycle, self.last_cycle = self.buffer.added, time.monotonic()
        snap = self.buffer.snapshot()
        self.running_cycle = asyncio.get_running_loop().run_in_executor(
            None, self.cycle, snap, dict(self.new_items), time.time()
        )
        log.warning("trainer: cycle %d started on %d events", self.cycles + 1, len(snap))

    async def finish_cycle(self) -> None:
        """Record the finished cycle; announce a promoted candidate. A failed cycle is
        counted and logged, never raised: it never stops the service."""
        fut, self.running_cycle = self.running_cycle, None
        self.cycles += 1
        try:
            res, path = fut.result()
        except Exception:  # noqa: BLE001 - a failed cycle never stops the service
            log.exception("trainer: cycle failed")
            self.metrics.cycles.labels("failed").inc()
            return
        self.metrics.record_cycle(res)
        log.warning("trainer: cycle %d in %.1f s: %s", self.cycles, res.seconds, res.gate.as_dict())
        if path is None:
            self.metrics.cycles.labels("rejected").inc()
            return
        await self.announce(res, path)

    async def announce(self, res: CycleResult, path: Path) -> None:
        """Send the signed ``model-updates`` record of the checkpoint at ``path``, make it the
        current model and re-place the new items it does not hold."""
        loop = asyncio.get_running_loop()
        new_ck = await loop.run_in_executor(None, lambda: load_checkpoint(path, device="cpu"))
        update = make_update(
            version=new_ck.version,
            checkpoint_dir=path,
            manifest_sha256=manifest_sha256(path),
            metrics={k: v for k, v in res.metrics.items() if k != "popular_items"},
            key=self.key or "",
        )
        if not self.key:
            log.error(
                "trainer: no COLDSTREAM_MODEL_HMAC_KEY: workers will refuse v%d", new_ck.version
            )
        await self.producer.send_and_wait(self.names["model-updates"], value=update.to_json())
        self.ck = new_ck
        self.metrics.cycles.labels("promoted").inc()
        log.warning("trainer: promoted and announced v%d (%s)", new_ck.version, path)
        missing = {
            i: self.texts.get(i, t)
            for i, (_, t) in self.new_items.items()
            if i not in new_ck.index_of
        }
        if missing:  # items that arrived during the cycle: re-place under the new model
            out = await loop.run_in_executor(None, self.embed_items, missing)
            for k, v in out:
                await self.producer.send(self.names["item-vectors"], key=k.encode(), value=v)


def run(settings: Any) -> int:
    """Run the service until SIGINT/SIGTERM."""
    import signal

    torch.set_num_threads(max(1, settings.threads))
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    service = TrainerService(settings)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, registry=service.metrics.registry)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await service.run(stop)

    asyncio.run(main())
    return 0
