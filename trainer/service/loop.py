"""The trainer service (``coldstream trainer``): continuous re-distillation from the stream.

One process, its own consumer group on ``clicks``, ``purchases``, ``items`` and
``forget-requests`` (a forget request purges the user from the buffer and from a running
cycle: :meth:`TrainerService.forget`); the teacher lives here only. :class:`TrainerService` is the loop; one step of it
(:meth:`TrainerService.step`) consumes a batch, handles new items, starts a cycle when one
is due and finishes the cycle that is done:

* **New items** -- an ``items`` record for an item the current student does not know is
  embedded from its text by the teacher, placed in the student's item space by the text
  projection alone (:meth:`coldstream.core.checkpoint.Checkpoint.item_vector_for_text`) and published
  to ``item-vectors`` (``item_id, model_version, vector``); serving upserts it.
* **Re-distillation** -- every ``cycle_events`` events or ``cycle_seconds`` seconds, in a
  worker thread, on a snapshot of the buffer: :func:`trainer.service.redistill.redistill` (warm
  start from the current student, KD from the teacher, gate on the buffer's latest slice).
* **Publish** -- a promoted candidate is written atomically to the model store, signed
  (:func:`trainer.service.redistill.publish_checkpoint`, with the teacher head it was distilled
  from, :mod:`trainer.teacher.heads`); the store's ``CURRENT.json`` is moved to it (``seq``
  + 1, :func:`coldstream.core.pointer.write_pointer`), then a ``model-updates`` record with
  that ``seq`` is sent, signed (:func:`coldstream.core.model_updates.make_update`), and the
  store pruned to the newest ``keep_versions`` plus the pointer's.
* **Rollback** -- ``coldstream rollback --to V`` moves the pointer from outside; the service
  notices (:meth:`TrainerService.follow_pointer`), makes that version its current model and
  discards a cycle that was running on the old one.

Every record of ``clicks``, ``purchases`` and ``items`` is handled on its own: a malformed,
oversize or out-of-bounds one is counted (``coldstream_trainer_records_skipped_total``) and
skipped; nothing one record does stops the loop. The private key is required
(``COLDSTREAM_TRAINER_SIGNING_KEY`` / ``_FILE``): every control record is signed with it.

Without a saved teacher head the service fits one on the buffer in its first cycle and
saves it with the version it promotes. Metrics: :class:`trainer.service.telemetry.TrainerMetrics`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from coldstream.core.checkpoint import Checkpoint, load_checkpoint, prune_store, version_path
from coldstream.core.errors import ExitCode
from coldstream.core.events import FORGET_TOPIC, Event, Forget, check_id, validate_event
from coldstream.core.model_updates import make_item_vector, make_update
from coldstream.core.pointer import (
    NoServableModel,
    PointerError,
    read_pointer,
    select_checkpoint,
    write_pointer,
)
from coldstream.core.signing import Keyring
from coldstream.core.topics import load_topics, topic_names
from trainer.service.buffer import EventBuffer
from trainer.service.redistill import (
    CycleConfig,
    CycleResult,
    cycle_train_config,
    item_table,
    publish_checkpoint,
    redistill,
)
from trainer.service.telemetry import TrainerMetrics
from trainer.teacher.encoder import catalog_text
from trainer.teacher.heads import (
    HEADS_DIR,
    TeacherScorer,
    load_teacher_adapter,
    load_teacher_head,
)

log = logging.getLogger(__name__)

MAX_FUTURE_SKEW_S = 86400 * 365 * 50
"""Event timestamps are not checked against the clock here (replays carry old ones)."""
MAX_ITEM_RECORD_BYTES = 64 * 1024
"""Larger ``items`` records are skipped before parsing (``oversize``)."""
MAX_EVENT_RECORD_BYTES = 64 * 1024
"""Larger ``clicks``/``purchases`` records are skipped before validation (``oversize``)."""
MAX_TEXT_CHARS = 2000
"""An item's catalogue text is cut to this many characters."""
MAX_NEW_ITEMS = 100_000
"""New items (not in the current student) held for embedding and the next cycle; later ones
are skipped (``new_items_full``) until a promotion folds the held ones into the model.
``texts`` holds only the current model's items and these."""
POINTER_CHECK_S = 5.0
"""How often the service re-reads ``CURRENT.json`` (a rollback from outside)."""


class NoSigningKey(RuntimeError):
    """The trainer service needs the private key (every control record is signed)."""


class TrainerService:
    """Consumes the stream, embeds new items, runs cycles, publishes (see module doc)."""

    def __init__(
        self, settings: Any, *, teacher: Any = None, metrics: TrainerMetrics | None = None
    ) -> None:
        self.s = settings
        self.names = topic_names(settings.topic_prefix, load_topics())
        consumed = ("clicks", "purchases", "items", FORGET_TOPIC)
        self.logical = {self.names[n]: n for n in consumed if n in self.names}
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
        self.signer = settings.signer()
        self.keys: Keyring = settings.verify_keyring()
        if self.signer is not None:
            self.keys = self.keys | self.signer.keyring
        self.seq = 0
        """Sequence number of the store pointer this service's current model came from."""
        self.cycle_seq = 0
        self.pointer_checked = 0.0
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.running_cycle: asyncio.Future | None = None
        self.forget_lock = threading.Lock()
        """Held while a cycle publishes, and while a forget request is checked against it."""
        self.cycle_users: frozenset[str] = frozenset()
        """The users of the running cycle's snapshot."""
        self.cycle_forgotten: set[str] = set()
        """Those of them forgotten while the cycle ran: its candidate is discarded."""

    # -- start-up --------------------------------------------------------------------------
    def load(self) -> None:
        """The current model: what the store's pointer names (else the newest verified
        checkpoint; :func:`coldstream.core.pointer.select_checkpoint`)."""
        sel = select_checkpoint(
            self.s.model_store,
            keyring=self.keys,
            device="cpu",
            allow_unsigned=self.s.allow_unsigned_checkpoints,
        )
        if sel.source != "pointer":
            log.warning("trainer: no usable pointer; current model is %s", sel.describe())
        self.ck, self.seq = sel.checkpoint, sel.seq
        for iid, title in zip(self.ck.item_ids, self.ck.item_titles, strict=True):
            self.texts.setdefault(iid, title)
        if self.teacher is None:
            from coldstream.core.device import resolve_device
            from trainer.teacher.encoder import Teacher

            self.teacher = Teacher(
                self.s.teacher_path,
                device=resolve_device(self.s.device),
                item_cache=self.s.item_vector_cache,
            )
        found = load_teacher_head(self.s.model_store, None)
        load_teacher_adapter(self.s.model_store, self.teacher)  # the LoRA encoder, if kept
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
    def skip(self, topic: str, reason: str) -> None:
        """Count a record the trainer does not use."""
        self.metrics.records_skipped.labels(topic, reason).inc()

    def on_item(self, key: bytes | None, value: bytes | None, fresh: dict[str, str]) -> None:
        """Record an ``items`` record's text; an item the student lacks (or whose text
        changed) goes into ``fresh`` to be embedded. A bad record is counted and skipped."""
        if value is not None and len(value) > MAX_ITEM_RECORD_BYTES:
            return self.skip("items", "oversize")
        try:
            rec = json.loads(value or b"")
            if not isinstance(rec, dict):
                return self.skip("items", "not_an_object")
            iid = check_id(rec.get("item_id"), "item_id")
            text = catalog_text(rec)[:MAX_TEXT_CHARS]
        except RecursionError:
            return self.skip("items", "nested_too_deeply")
        except (ValueError, KeyError, TypeError, AttributeError):
            return self.skip("items", "malformed")
        if not text:
            return self.skip("items", "no_text")
        known = self.ck is not None and iid in self.ck.index_of
        changed = self.texts.get(iid) != text
        held = len(self.new_items) + len(fresh)
        if not known and iid not in self.new_items and iid not in fresh and held >= MAX_NEW_ITEMS:
            return self.skip("items", "new_items_full")
        self.texts[iid] = text
        if not known and (iid not in self.new_items or changed):
            fresh[iid] = text
        return None

    def embed_items(self, items: dict[str, str]) -> list[tuple[str, bytes]]:
        """Teacher text vectors -> student item vectors under the current model (blocking)."""
        ck = self.ck
        ids = list(items)
        tv = self.teacher.encode_items([items[i] for i in ids])  # cached by text
        vecs = ck.item_vector_for_text(tv)
        out = []
        if self.signer is None:
            raise NoSigningKey("item vectors cannot be published unsigned")
        for iid, t, v in zip(ids, tv, np.atleast_2d(vecs), strict=True):
            self.new_items[iid] = (t, items[iid][:200])
            out.append((iid, make_item_vector(iid, ck.version, v, self.signer)))
        return out

    # -- one cycle (blocking, in a thread) -----------------------------------------------------
    def cycle_config(self) -> CycleConfig:
        """The configuration of the next cycle (its seed: the settings' seed + cycles run)."""
        s = self.s
        train = cycle_train_config(
            epochs=s.cycle_epochs,
            seed=s.seed + self.cycles,
            device=s.device,
            softmax=s.softmax,
            full_softmax_max_items=s.full_softmax_max_items,
            negatives=s.sampled_negatives,
            teacher_topk=s.teacher_topk,
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
            with self.forget_lock:  # no forget request lands between the check and the write
                if self.cycle_forgotten:
                    log.warning(
                        "trainer: candidate discarded: %d user(s) of its training data were "
                        "forgotten while it trained",
                        len(self.cycle_forgotten),
                    )
                    return res, None
                path = publish_checkpoint(
                    self.s.model_store,
                    res,
                    teacher={**ck.teacher, **self.teacher.describe(), "head": f"{HEADS_DIR}/"},
                    signer=self.signer,
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
        if self.signer is None:
            raise NoSigningKey(
                f"the trainer service signs every control record: set "
                f"{self.s.env_var('signing_key_file')} (coldstream keys generate) or "
                f"{self.s.env_var('signing_key')}"
            )
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
        if time.monotonic() - self.pointer_checked >= POINTER_CHECK_S:
            await self.follow_pointer()
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
                try:
                    self.on_record(topic, r, fresh_items)
                except Exception:  # noqa: BLE001 - one record never stops the service
                    log.exception("trainer: %s offset %s skipped", topic, getattr(r, "offset", "?"))
                    self.skip(str(topic), "error")
        return fresh_items

    def on_record(self, topic: str | None, r: Any, fresh_items: dict[str, str]) -> None:
        """One consumed record: an item's text, or an event for the buffer."""
        if topic == "items":
            self.on_item(r.key, r.value, fresh_items)
            return
        if r.value is not None and len(r.value) > MAX_EVENT_RECORD_BYTES:
            self.skip(str(topic), "oversize")
            return
        ev = validate_event(r.value, topic, key=r.key, max_future_skew_s=MAX_FUTURE_SKEW_S)
        if isinstance(ev, Event):
            self.buffer.add(ev.user_id, ev.item_id, ev.type_code, ev.ts, ev.event_id)
        elif isinstance(ev, Forget):
            self.forget(ev)

    def forget(self, ev: Forget) -> None:
        """A forget request (``forget-requests``, ``docs/privacy.md``): the user's events leave
        the buffer (older ones are refused from now on), and a running cycle whose snapshot
        holds the user publishes nothing: the next checkpoint is not trained on them."""
        removed = self.buffer.forget(ev.user_id, ev.ts)
        with self.forget_lock:
            if ev.user_id in self.cycle_users:
                self.cycle_forgotten.add(ev.user_id)
        log.info("trainer: forget request %s: %d buffered events removed", ev.event_id, removed)

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
        self.cycle_seq = self.seq
        snap = self.buffer.snapshot()
        with self.forget_lock:
            self.cycle_users, self.cycle_forgotten = frozenset(snap.users()), set()
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
        await self.follow_pointer()
        if self.seq != self.cycle_seq:  # rolled back while the cycle ran on the old model
            log.warning(
                "trainer: the pointer moved during the cycle (seq %d -> %d): candidate %s "
                "discarded",
                self.cycle_seq,
                self.seq,
                path.name,
            )
            self.metrics.cycles.labels("rejected").inc()
            return
        if self.s.rollout_share > 0:
            await self.start_canary(path)
            return
        await self.announce(res, path)

    async def start_canary(self, path: Path) -> None:
        """Put the gate-passing checkpoint beside the live model as a canary to
        ``rollout_share`` of the users (:func:`trainer.service.rollout.start`), for the judge
        to promote or roll back; while a rollout runs, a new candidate waits for the next
        cycle. The service keeps distilling from the live model meanwhile."""
        from coldstream.core.errors import UsageError
        from trainer.service import rollout

        version = int(path.name[1:])
        try:
            r, record = rollout.start(self.s, version, share=self.s.rollout_share, publish=False)
        except UsageError as e:
            log.warning("trainer: v%d not rolled out: %s", version, e)
            self.metrics.cycles.labels("rejected").inc()
            return
        try:
            await self.producer.send_and_wait(self.names["model-updates"], value=record)
        except Exception:
            rollout.clear(self.s.model_store)  # never announced: no rollout runs
            raise
        self.metrics.cycles.labels("canary").inc()
        log.warning(
            "trainer: v%d passed the gate; canary %s to %.0f%% of users beside v%d",
            version,
            r.rollout_id,
            100 * self.s.rollout_share,
            r.incumbent,
        )

    def prune(self, *, protect: int) -> None:
        """Bound the store: the newest ``keep_versions`` versions plus ``protect`` stay."""
        try:
            gone = prune_store(self.s.model_store, keep=self.s.keep_versions, protect=[protect])
        except OSError as e:
            log.error("trainer: pruning the model store failed: %s", e)
            return
        if gone:
            log.warning("trainer: pruned versions %s from the model store", gone)

    async def follow_pointer(self) -> None:
        """Re-read the store's pointer; when someone else moved it (``coldstream rollback``),
        make the version it names the current model."""
        self.pointer_checked = time.monotonic()
        root = self.s.model_store
        try:
            ptr = read_pointer(root, self.keys)
        except PointerError:
            return
        if ptr.seq <= self.seq:
            return
        if self.ck is not None and ptr.version == self.ck.version:
            self.seq = ptr.seq
            return
        loop = asyncio.get_running_loop()
        try:
            ck = await loop.run_in_executor(
                None,
                lambda: load_checkpoint(
                    version_path(root, ptr.version),
                    expected_sha256=ptr.manifest_sha256,
                    verify_keys=self.keys,
                ),
            )
        except Exception as e:  # noqa: BLE001 - keep the current model
            log.error("trainer: pointer names v%d, which is refused: %s", ptr.version, e)
            return
        log.warning(
            "trainer: pointer moved to v%d (seq %d, was v%d): following it",
            ptr.version,
            ptr.seq,
            self.ck.version if self.ck is not None else -1,
        )
        self.ck, self.seq = ck, ptr.seq

    async def announce(self, res: CycleResult, path: Path) -> None:
        """Send the signed ``model-updates`` record of the checkpoint at ``path``, make it the
        current model and re-place the new items it does not hold."""
        loop = asyncio.get_running_loop()
        signer = self.signer
        if signer is None:
            raise NoSigningKey("a promotion cannot be announced unsigned")
        new_ck = await loop.run_in_executor(
            None, lambda: load_checkpoint(path, device="cpu", verify_keys=self.keys)
        )
        ptr = write_pointer(
            self.s.model_store,
            version=new_ck.version,
            manifest_sha256=new_ck.manifest_sha256,
            signer=signer,
        )
        update = make_update(
            version=new_ck.version,
            seq=ptr.seq,
            checkpoint_dir=path,
            manifest_sha256=new_ck.manifest_sha256,
            metrics={k: v for k, v in res.metrics.items() if k != "popular_items"},
            signer=signer,
        )
        await self.producer.send_and_wait(self.names["model-updates"], value=update.to_json())
        self.ck, self.seq = new_ck, ptr.seq
        self.metrics.cycles.labels("promoted").inc()
        log.warning(
            "trainer: promoted and announced v%d (seq %d, %s)", new_ck.version, ptr.seq, path
        )
        self.prune(protect=ptr.version)
        self.new_items = {i: v for i, v in self.new_items.items() if i not in new_ck.index_of}
        keep = set(new_ck.index_of) | set(self.new_items)
        self.texts = {i: t for i, t in self.texts.items() if i in keep}
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
        if not settings.rollout_judge:
            await service.run(stop)
            return
        from trainer.service.judge_loop import JudgeMetrics, JudgeRunner

        judge = JudgeRunner(
            settings,
            config=settings.judge_config(),
            metrics=JudgeMetrics(service.metrics.registry),
        )
        # one process, one key holder, one writer of model-updates; the judge idles
        # (reading ROLLOUT.json every half second) until a canary runs
        await asyncio.gather(service.run(stop), judge.run(stop))

    try:
        asyncio.run(main())
    except (NoSigningKey, NoServableModel) as e:
        print(f"coldstream trainer: {e}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    return ExitCode.OK
