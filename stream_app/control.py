"""Serving-side control plane: hot swap from ``model-updates``, item upserts from ``item-vectors``.

Both topics are *broadcast*: every worker replica must read every record, so they are
read by plain aiokafka consumers with manual partition assignment and no group (never
through the worker's shared Faust consumer group). Each runs as a Faust ``app.task``
inside the worker:

* ``model-updates`` (one partition) is read from its end, minus the newest record: the
  worker has already loaded the checkpoint the store's signed pointer names at start
  (:func:`coldstream.core.pointer.select_checkpoint`), and re-reading the last record closes
  the gap between that load and the consumer's start (records whose ``seq`` is not above
  the served one are skipped).
* ``item-vectors`` (compacted) is read from the beginning; a vector counts only for the
  model version it was computed with (older ones are dropped, newer ones kept, bounded,
  until that version is served). Deleting an item is a tombstone for its key: it withdraws
  an item that came from ``item-vectors`` (never a checkpoint's own item), which is what a
  worker started after compaction sees too.

Every record is signed by the trainer's private key and verified here with the configured
public keys (:mod:`coldstream.core.signing`). A swap (:class:`ModelSwapper`): verify the
record (size cap, signature, ``seq`` above the served one, URI containment), load the
checkpoint against the announced manifest sha256 with its own signature checked, build the
item table and FAISS index -- all in a thread (``loop.run_in_executor``) -- then replace
the recommender's one reference on the event loop. The serving agent reads
``recommender.model`` once per micro-batch and ranks a batch without yielding to the loop,
so a swap always falls between two micro-batches. An item vector (:class:`ItemVectorSink`)
must be signed, carry a valid id and version, be finite, of the served model's dimension,
with a norm at most :data:`NORM_FACTOR` times the largest item-vector norm of the served
checkpoint, and not replace one of the checkpoint's own items.

Per-record isolation: any exception from one record is caught, counted
(``coldstream_control_records_total{topic, outcome, reason}``; swaps also in
``coldstream_model_swaps_total`` / ``coldstream_model_swap_failures_total{reason}``) and the
loop goes on; the current model keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coldstream.core.checkpoint import load_checkpoint
from coldstream.core.errors import Refused
from coldstream.core.events import check_id
from coldstream.core.model_updates import (
    ItemVector,
    ModelUpdate,
    UpdateRefused,
    VectorRefused,
    verify_item_vector,
    verify_update,
)
from coldstream.core.rollout import MAX_DECISION_BYTES, is_decision_record, verify_decision
from coldstream.core.signing import Keyring
from coldstream.core.topics import topic_partitions
from stream_app.metrics import Metrics
from stream_app.recommender import Candidate, Recommender, ServingModel

log = logging.getLogger(__name__)

MAX_PENDING_VECTORS = 200_000
"""Item vectors kept, over all versions, for model versions not served yet (bounded memory)."""
MAX_PENDING_VERSIONS = 4
"""Model versions with pending vectors; a vector for a fifth newer version is dropped."""
MAX_RESULTS = 256
"""Swap results kept in :attr:`ModelSwapper.results` (the newest)."""
NORM_FACTOR = 2.0
"""An item vector's L2 norm may be at most this times the largest item-vector norm of the
served checkpoint (a vector far longer than every real item would rank first for everyone)."""

UPDATES, VECTORS = "model-updates", "item-vectors"


@dataclass(frozen=True)
class SwapResult:
    """What became of one ``model-updates`` record."""

    outcome: str
    """``ok``, ``refused`` or ``skipped`` (``seq`` not above the served one)."""
    reason: str | None = None
    version: int | None = None
    seconds: float = 0.0
    """Verify + load + index build (off the loop) + swap."""
    detail: str = ""
    seq: int | None = None


def _is_decision(raw: bytes | str | dict[str, Any]) -> bool:
    """Whether a ``model-updates`` record is a rollout decision (both share the topic); an
    unreadable record is not (the update path refuses it with its reason)."""
    if isinstance(raw, dict):
        return is_decision_record(raw)
    try:
        data = json.loads(raw) if len(raw) <= MAX_DECISION_BYTES else None
    except ValueError:
        return False
    return isinstance(data, dict) and is_decision_record(data)


def _count(metrics: Metrics | None, topic: str, outcome: str, reason: str, n: int = 1) -> None:
    if metrics is not None and n:
        metrics.control_records.labels(topic, outcome, reason).inc(n)


class ModelSwapper:
    """Verifies, loads and swaps in announced checkpoints; refuses anything suspicious.

    ``keys``: the public keys (``Settings.verify_keyring()``); ``store_root``: the model store
    the URI must resolve into; ``served_seq``: the pointer sequence number of the model served
    at start (:class:`coldstream.core.pointer.Selection`)."""

    def __init__(
        self,
        recommender: Recommender,
        *,
        store_root: Path | str,
        keys: Keyring,
        served_seq: int = 0,
        metrics: Metrics | None = None,
        device: str = "cpu",
        prefer_gpu_index: bool = True,
        on_swap: Callable[[ServingModel], None] | None = None,
    ) -> None:
        self.recommender = recommender
        self.store_root = Path(store_root)
        self.keys = keys
        self.served_seq = served_seq
        self.metrics = metrics
        self.device = device
        self.prefer_gpu_index = prefer_gpu_index
        self.on_swap = on_swap
        self.results: deque[SwapResult] = deque(maxlen=MAX_RESULTS)
        self.candidate_seq = served_seq
        """The highest ``seq`` of a candidate (or live) record applied: a candidate must be
        above it."""
        self._lock = asyncio.Lock()
        if metrics is not None:
            metrics.model_seq.set(served_seq)

    @property
    def served_version(self) -> int:
        try:
            return int(self.recommender.model.version)
        except ValueError:
            return -1

    # -- the off-loop part -----------------------------------------------------------------
    def prepare(
        self, raw: bytes | str | dict[str, Any]
    ) -> tuple[ServingModel, int, ModelUpdate] | None:
        """Verify and build the new bundle (blocking; run it in a thread). Returns ``None``
        for a record whose ``seq`` is not above the served one; raises
        :class:`UpdateRefused` or :class:`~coldstream.core.checkpoint.CheckpointError`. The
        ``live`` record that promotes the running canary or shadow reuses the candidate's
        bundle (same version, rollout and manifest: it was verified when it was loaded)."""
        update, path = verify_update(raw, keys=self.keys, store_root=self.store_root)
        if self._stale(update):
            return None
        cand = self.recommender.candidate
        if (
            update.arm == "live"
            and cand is not None
            and update.rollout_id == cand.rollout_id
            and str(update.version) == cand.model.version
            and update.sha256 == cand.sha256
        ):
            return cand.model, update.seq, update
        ck = load_checkpoint(
            path, device=self.device, expected_sha256=update.sha256, verify_keys=self.keys
        )
        if ck.version != update.version:
            raise UpdateRefused(
                "version_mismatch",
                f"record announces v{update.version}, checkpoint is v{ck.version}",
            )
        # the served recommender's index settings; quantizer trained here, off the loop
        bundle = self.recommender.build_model(ck, prefer_gpu_index=self.prefer_gpu_index)
        return bundle, update.seq, update

    def _stale(self, update: ModelUpdate) -> bool:
        """Whether ``update`` is not newer than what it would replace: a ``live`` record's
        ``seq`` must be above the served pointer's; a candidate's also above every
        candidate seen (a replayed, already decided canary is not loaded again). A
        candidate does not advance the live sequence, so the promotion's ``live`` record
        may carry the pointer's next number, which the rollout's record used too."""
        if update.seq <= self.served_seq:
            return True
        return update.arm != "live" and update.seq <= self.candidate_seq

    # -- the on-loop part ------------------------------------------------------------------
    def apply(self, new: ServingModel, seq: int, update: ModelUpdate | None = None) -> None:
        """Swap one reference (call on the event loop, between micro-batches). A ``canary``
        or ``shadow`` update becomes the recommender's candidate (replacing any other); a
        ``live`` one replaces the live model and ends any rollout (a promotion, or a newer
        version that supersedes the candidate)."""
        rec = self.recommender
        self.candidate_seq = max(self.candidate_seq, seq)
        if update is not None and update.arm != "live" and update.rollout_id is not None:
            rec.candidate = Candidate(
                new,
                update.arm,
                update.served_share,
                update.rollout_id,
                seq,
                update.sha256,
            )
            self._set_candidate_metric()
            log.warning(
                "rollout %s: v%s loaded as %s (share %.3f) beside live v%s",
                update.rollout_id,
                new.version,
                update.arm,
                update.served_share,
                rec.model.version,
            )
            return
        self.served_seq = seq
        if self.metrics is not None:
            self.metrics.model_seq.set(seq)
        ended, rec.candidate = rec.candidate, None
        old = rec.swap(new)
        self._set_candidate_metric()
        if self.metrics is not None:
            self.metrics.set_model(new.version, new.n_items)
            self.metrics.set_index(new.index_report)
        if self.on_swap is not None:
            self.on_swap(new)
        log.warning(
            "hot swap: model %s -> %s (%d items, seq %d)%s",
            old.version,
            new.version,
            new.n_items,
            seq,
            f"; rollout {ended.rollout_id} ended" if ended is not None else "",
        )

    def _set_candidate_metric(self) -> None:
        if self.metrics is None:
            return
        cand = self.recommender.candidate
        for arm in ("canary", "shadow"):
            version = cand.model.version if cand is not None and cand.arm == arm else "0"
            self.metrics.rollout_candidate.labels(arm).set(float(version))

    # -- decisions -------------------------------------------------------------------------
    def decide(self, raw: bytes | str | dict[str, Any]) -> SwapResult:
        """Apply a signed rollout decision (:func:`coldstream.core.rollout.verify_decision`)
        on the event loop: ``rollback``, ``give_up`` or ``manual_abort`` of the running
        rollout drops its candidate (the live model never changed); ``promote`` and
        ``manual_promote`` change nothing here (the ``live`` update that follows them swaps
        the candidate in). A decision for another rollout, or a second one for this
        rollout, does nothing (a replayed old decision is harmless)."""
        t0 = time.perf_counter()
        try:
            d = verify_decision(raw, self.keys)
        except Refused as e:
            return self._refused(e, t0)
        cand = self.recommender.candidate
        if cand is None or cand.rollout_id != d.rollout_id:
            _count(self.metrics, UPDATES, "skipped", "decision_not_running")
            return SwapResult("skipped", reason="decision_not_running", version=d.candidate_version)
        if d.decision in ("rollback", "give_up", "manual_abort"):
            self.recommender.candidate = None
            self._set_candidate_metric()
            log.warning(
                "rollout %s: %s; candidate v%s dropped, live v%s serves everyone",
                d.rollout_id,
                d.decision,
                cand.model.version,
                self.recommender.model.version,
            )
        _count(self.metrics, UPDATES, "applied", f"decision_{d.decision}")
        return SwapResult(
            "ok", reason=f"decision_{d.decision}", version=d.candidate_version,
            seconds=time.perf_counter() - t0,
        )  # fmt: skip

    def _record(self, result: SwapResult) -> SwapResult:
        self.results.append(result)
        if self.metrics is not None:
            if result.outcome != "skipped":
                self.metrics.model_swaps.labels(result.outcome).inc()
            if result.outcome == "refused" and result.reason:
                self.metrics.model_swap_failures.labels(result.reason).inc()
            if result.outcome == "ok":  # verify + load + index build of the swapped-in model
                self.metrics.model_load_seconds.set(result.seconds)
        outcome = {"ok": "applied"}.get(result.outcome, result.outcome)
        _count(self.metrics, UPDATES, outcome, result.reason or "")
        return result

    def _skipped(self) -> SwapResult:
        return self._record(
            SwapResult(
                "skipped", reason="not_newer", version=self.served_version, seq=self.served_seq
            )
        )

    def handle_sync(self, raw: bytes | str | dict[str, Any]) -> SwapResult:
        """Verify, load and swap in the calling thread (tests, tools)."""
        if _is_decision(raw):
            return self.decide(raw)
        t0 = time.perf_counter()
        try:
            got = self.prepare(raw)
            if got is None:
                return self._skipped()
            self.apply(*got)
        except Exception as e:  # noqa: BLE001 - every failure is a refusal; serving goes on
            return self._refused(e, t0)
        return self._record(
            SwapResult(
                "ok", version=int(got[0].version), seconds=time.perf_counter() - t0, seq=got[1]
            )
        )

    async def handle(self, raw: bytes | str | dict[str, Any]) -> SwapResult:
        """Verify, load and build off the event loop, then swap on it (a rollout decision:
        :meth:`decide`, on the loop)."""
        async with self._lock:  # one update at a time, in record order
            if _is_decision(raw):
                return self.decide(raw)
            t0 = time.perf_counter()
            loop = asyncio.get_running_loop()
            try:
                got = await loop.run_in_executor(None, self.prepare, raw)
                if got is None or self._stale(got[2]):  # raced with another swap
                    return self._skipped()
                self.apply(*got)  # no await between here and the return: atomic w.r.t. batches
            except Exception as e:  # noqa: BLE001 - every failure is a refusal; serving goes on
                return self._refused(e, t0)
            return self._record(
                SwapResult(
                    "ok", version=int(got[0].version), seconds=time.perf_counter() - t0, seq=got[1]
                )
            )

    def _refused(self, e: Exception, t0: float) -> SwapResult:
        reason = e.reason if isinstance(e, Refused) else "load_error"
        log.error(
            "model update refused (%s): %s; still serving model %s (seq %d)",
            reason,
            str(e)[:300],
            self.recommender.model.version,
            self.served_seq,
        )
        return self._record(
            SwapResult(
                "refused", reason=reason, seconds=time.perf_counter() - t0, detail=str(e)[:500]
            )
        )


Checked = ItemVector | VectorRefused
"""One ``item-vectors`` record after :meth:`ItemVectorSink.check_many`."""


class ItemVectorSink:
    """Applies ``item-vectors`` records (``item_id, model_version, vector``, signed) to the
    served bundle: vectors of the served version are upserted, older ones dropped, newer ones
    kept (bounded: :data:`MAX_PENDING_VECTORS`, :data:`MAX_PENDING_VERSIONS`) until their
    version is swapped in. Every refusal is counted with its reason."""

    def __init__(
        self,
        recommender: Recommender,
        metrics: Metrics | None = None,
        *,
        keys: Keyring,
        norm_factor: float = NORM_FACTOR,
    ) -> None:
        self.recommender = recommender
        self.metrics = metrics
        self.keys = keys
        self.norm_factor = norm_factor
        self.pending: dict[str, dict[str, np.ndarray]] = {}
        self.applied = 0
        self.dropped = 0
        self.reasons: dict[str, int] = {}

    def drop(self, reason: str, outcome: str = "refused", n: int = 1) -> None:
        self.dropped += n
        self.reasons[reason] = self.reasons.get(reason, 0) + n
        _count(self.metrics, VECTORS, outcome, reason, n)

    def check_many(self, raws: Sequence[bytes | str | None]) -> list[Checked]:
        """Verify each record on its own (size, shape, id, version, finiteness, signature);
        thread-safe (touches nothing served): run it off the event loop."""
        out: list[Checked] = []
        for raw in raws:
            try:
                out.append(verify_item_vector(raw if raw is not None else b"", keys=self.keys))
            except VectorRefused as e:
                out.append(e)
            except Exception as e:  # noqa: BLE001 - one record never stops the follower
                out.append(VectorRefused("error", f"{type(e).__name__}: {str(e)[:200]}"))
        return out

    def add_many(self, raws: Sequence[bytes | str | None]) -> int:
        """Check and apply a batch of records (one upsert); returns items upserted."""
        return self.apply(self.check_many(raws))

    def _bound(self, m: ServingModel) -> float:
        return float(m.checkpoint.max_item_norm) * self.norm_factor

    def _admissible(self, m: ServingModel, v: ItemVector, vec: np.ndarray) -> str | None:
        """Why ``vec`` may not join the served model ``m`` (``None``: it may)."""
        if vec.shape != (m.table.shape[1],):
            return "bad_dim"
        if float(np.linalg.norm(vec.astype(np.float64))) > self._bound(m):
            return "norm_too_large"
        if v.item_id in m.checkpoint.index_of:
            return "checkpoint_item"
        return None

    def apply(self, checked: Sequence[Checked]) -> int:
        """Apply checked records to the served bundle (call on the event loop)."""
        m = self.recommender.model
        served = m.version
        now: dict[str, np.ndarray] = {}
        for c in checked:
            if isinstance(c, VectorRefused):
                self.drop(c.reason)
                continue
            vec = np.asarray(c.vector, dtype=np.float32)
            if not np.isfinite(vec).all():  # finite in float64, not in float32
                self.drop("non_finite")
                continue
            if c.model_version == served:
                why = self._admissible(m, c, vec)
                if why is not None:
                    self.drop(why)
                    continue
                now[c.item_id] = vec
            elif _newer(c.model_version, served):
                self._keep_pending(c.model_version, c.item_id, vec)
            else:
                self.drop("stale_version", outcome="skipped")
        return self._upsert(now)

    def withdraw(self, keys: Sequence[bytes | None]) -> int:
        """Tombstones (``item_id`` key, no value): the item leaves the served index, as it
        does for a worker that starts after compaction removed its vector, so a running and
        a restarted worker agree. A tombstone carries no signature, so it can only withdraw
        an item that came from ``item-vectors``, never one of the checkpoint's own items
        (``checkpoint_item``, skipped). Returns the items removed."""
        m = self.recommender.model
        ids: list[str] = []
        for key in keys:
            try:
                iid = check_id(key.decode("utf-8") if key is not None else None, "item_id")
            except (UnicodeDecodeError, ValueError):
                self.drop("bad_key", outcome="skipped")
                continue
            for slot in self.pending.values():
                slot.pop(iid, None)
            if iid in m.checkpoint.index_of:
                self.drop("checkpoint_item", outcome="skipped")
                continue
            ids.append(iid)
        n = self.recommender.remove_items(ids) if ids else 0
        _count(self.metrics, VECTORS, "withdrawn", "", n)
        if n and self.metrics is not None:
            self.metrics.index_items.set(self.recommender.model.n_items)
        return n

    def _keep_pending(self, version: str, item_id: str, vec: np.ndarray) -> None:
        slot = self.pending.get(version)
        if slot is None:
            if len(self.pending) >= MAX_PENDING_VERSIONS:
                self.drop("pending_versions_full")
                return
            slot = self.pending[version] = {}
        if (
            item_id not in slot
            and sum(len(p) for p in self.pending.values()) >= MAX_PENDING_VECTORS
        ):
            self.drop("pending_full")
            return
        slot[item_id] = vec
        _count(self.metrics, VECTORS, "pending", "")

    def on_swap(self, new: ServingModel) -> None:
        """Called after a swap: apply vectors that were waiting for this version (checked
        against the new model's dimension and norm bound)."""
        ready = self.pending.pop(new.version, {})
        for ver in [v for v in self.pending if not _newer(v, new.version)]:
            self.drop("stale_version", outcome="skipped", n=len(self.pending.pop(ver)))
        ok: dict[str, np.ndarray] = {}
        for iid, vec in ready.items():
            why = self._admissible(new, ItemVector(iid, new.version, [], ""), vec)
            if why is None:
                ok[iid] = vec
            else:
                self.drop(why)
        if ok:
            self._upsert(ok)

    def _upsert(self, vecs: dict[str, np.ndarray]) -> int:
        if not vecs:
            return 0
        ids = list(vecs)
        new = self.recommender.upsert_items(ids, np.stack([vecs[i] for i in ids]))
        self.applied += len(ids)
        _count(self.metrics, VECTORS, "applied", "", len(ids))
        if self.metrics is not None:
            self.metrics.index_items.set(new.n_items)
        return len(ids)


def _newer(a: str, b: str) -> bool:
    try:
        return int(a) > int(b)
    except ValueError:
        return False


# -------------------------------------------------------------------------------------
# Faust wiring
# -------------------------------------------------------------------------------------


@dataclass
class Control:
    swapper: ModelSwapper
    vectors: ItemVectorSink


async def broadcast_consumer(
    bootstrap: str,
    topic: str,
    *,
    from_end: int | None,
    fetch_max_wait_ms: int,
    client_kwargs: dict[str, Any] | None = None,
):
    """A group-less consumer assigned every partition of ``topic``. ``from_end=None``:
    from the beginning; ``from_end=n``: the last ``n`` records of each partition.
    ``client_kwargs``: security arguments (:meth:`Settings.kafka_client_kwargs`)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
        **(client_kwargs or {}),
    )
    parts = await topic_partitions(bootstrap, topic, client_kwargs=client_kwargs)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        if from_end is None:
            await consumer.seek_to_beginning(*tps)
        else:
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, max(0, ends[tp] - from_end))
    except BaseException:
        await consumer.stop()
        raise
    return consumer


def attach(w: Any, *, served_seq: int = 0) -> Control:
    """Register the control tasks on a wired worker (:class:`stream_app.agents.Wiring`);
    ``served_seq``: the pointer sequence number of the model it started with."""
    s = w.settings
    keys = s.verify_keyring()
    sink = ItemVectorSink(w.recommender, w.metrics, keys=keys)
    swapper = ModelSwapper(
        w.recommender,
        store_root=s.model_store,
        keys=keys,
        served_seq=served_seq,
        metrics=w.metrics,
        device=str(w.recommender.model.device),
        on_swap=sink.on_swap,
    )
    control = Control(swapper, sink)
    w.control = control
    from stream_app.online import WindowedCounter

    if not isinstance(
        w.recommender.popularity, WindowedCounter
    ):  # popularity of the current window
        w.recommender.popularity = WindowedCounter(s.popular_window_s)
    app = w.app
    updates_topic, vectors_topic = w.names[UPDATES], w.names[VECTORS]

    @app.task
    async def follow_model_updates() -> None:
        consumer = await broadcast_consumer(
            s.bootstrap,
            updates_topic,
            from_end=1,
            fetch_max_wait_ms=max(s.fetch_max_wait_ms, 50),
            client_kwargs=s.kafka_client_kwargs(),
        )
        try:
            while True:
                try:
                    batch = await consumer.getmany(timeout_ms=500)
                except Exception:  # noqa: BLE001 - a fetch error never ends the follower
                    log.exception("model-updates: fetch failed; retrying in 1 s")
                    await asyncio.sleep(1.0)
                    continue
                for records in batch.values():
                    for r in records:
                        await handle_update(swapper, r.value, r.offset)
        finally:
            await consumer.stop()

    @app.task
    async def follow_item_vectors() -> None:
        consumer = await broadcast_consumer(
            s.bootstrap,
            vectors_topic,
            from_end=None,
            fetch_max_wait_ms=max(s.fetch_max_wait_ms, 50),
            client_kwargs=s.kafka_client_kwargs(),
        )
        try:
            while True:
                try:
                    batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                except Exception:  # noqa: BLE001 - a fetch error never ends the follower
                    log.exception("item-vectors: fetch failed; retrying in 1 s")
                    await asyncio.sleep(1.0)
                    continue
                records = [(r.key, r.value) for rs in batch.values() for r in rs]
                if records:
                    await handle_vector_records(sink, records)
        finally:
            await consumer.stop()

    return control


async def handle_update(swapper: ModelSwapper, raw: Any, offset: int = -1) -> SwapResult | None:
    """One ``model-updates`` record, isolated: nothing it does ends the follower."""
    try:
        res = await swapper.handle(raw)
    except Exception as e:  # noqa: BLE001 - handle() refuses; this is the last guard
        log.exception("model-updates offset %d: unexpected error", offset)
        _count(swapper.metrics, UPDATES, "refused", "error")
        swapper.results.append(SwapResult("refused", reason="error", detail=str(e)[:500]))
        return None
    log.info("model-updates offset %d: %s", offset, res)
    return res


async def handle_vector_records(
    sink: ItemVectorSink, records: Sequence[tuple[bytes | None, bytes | None]]
) -> int:
    """``(key, value)`` records of ``item-vectors`` in topic order: runs of vectors go to
    :func:`handle_vectors`, tombstones (no value) withdraw their item
    (:meth:`ItemVectorSink.withdraw`). Returns the items upserted."""
    n = 0
    run: list[bytes] = []
    for key, value in records:
        if value is not None:
            run.append(value)
            continue
        if run:
            n += await handle_vectors(sink, run)
            run = []
        try:
            sink.withdraw([key])
        except Exception:  # noqa: BLE001 - one record never stops the follower
            log.exception("item-vectors: a tombstone failed")
            sink.drop("error")
    if run:
        n += await handle_vectors(sink, run)
    return n


async def handle_vectors(sink: ItemVectorSink, raws: Sequence[Any]) -> int:
    """A batch of ``item-vectors`` records: verified off the loop, applied on it; nothing
    one record does ends the follower."""
    try:
        checked = await asyncio.get_running_loop().run_in_executor(None, sink.check_many, raws)
        n = sink.apply(checked)
    except Exception:  # noqa: BLE001 - check_many isolates records; this is the last guard
        log.exception("item-vectors: a batch of %d records failed", len(raws))
        sink.drop("error", n=len(raws))
        return 0
    if n:
        log.info("item-vectors: %d items upserted (model %s)", n, sink.recommender.model.version)
    return n
