"""Serving-side control plane: hot swap from ``model-updates``, item upserts from ``item-vectors``.

Both topics are *broadcast*: every worker replica must read every record, so they are
read by plain aiokafka consumers with manual partition assignment and no group (never
through the worker's shared Faust consumer group). Each runs as a Faust ``app.task``
inside the worker:

* ``model-updates`` (one partition) is read from its end, minus the newest record: the
  worker has already loaded the newest checkpoint of the store at start, and re-reading
  the last record closes the gap between that load and the consumer's start (versions
  not newer than the served one are skipped).
* ``item-vectors`` (compacted) is read from the beginning; a vector counts only for the
  model version it was computed with (others are dropped, newer ones kept until that
  version is served).

A swap (:class:`ModelSwapper`): verify the record (signature, URI containment), verify
the checkpoint files against the announced manifest sha256, load the student, build the
item table and FAISS index -- all in a thread (``loop.run_in_executor``) -- then replace
the recommender's one reference on the event loop. The serving agent reads
``recommender.model`` once per micro-batch and ranks a batch without yielding to the
loop, so a swap always falls between two micro-batches. A refused or failed update is
logged, counted (``coldstream_model_swap_failures_total{reason}``,
``coldstream_model_swaps_total{outcome="refused"}``) and the current model keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coldstream.core.checkpoint import CheckpointError, load_checkpoint
from coldstream.core.model_updates import UpdateRefused, verify_update
from coldstream.core.topics import topic_partitions
from stream_app.metrics import Metrics
from stream_app.recommender import Recommender, ServingModel

log = logging.getLogger(__name__)

MAX_PENDING_VECTORS = 200_000
"""Item vectors kept for a model version that is not served yet (bounded memory)."""


@dataclass(frozen=True)
class SwapResult:
    """What became of one ``model-updates`` record."""

    outcome: str
    """``ok``, ``refused`` or ``skipped`` (not newer than the served version)."""
    reason: str | None = None
    version: int | None = None
    seconds: float = 0.0
    """Verify + load + index build (off the loop) + swap."""
    detail: str = ""


class ModelSwapper:
    """Verifies, loads and swaps in announced checkpoints; refuses anything suspicious.

    ``key`` is the HMAC secret (``Settings.model_hmac_key``); ``store_root`` the model store
    the URI must resolve into."""

    def __init__(
        self,
        recommender: Recommender,
        *,
        store_root: Path | str,
        key: bytes | str | None,
        metrics: Metrics | None = None,
        device: str = "cpu",
        prefer_gpu_index: bool = True,
        on_swap: Callable[[ServingModel], None] | None = None,
    ) -> None:
        self.recommender = recommender
        self.store_root = Path(store_root)
        self.key = key
        self.metrics = metrics
        self.device = device
        self.prefer_gpu_index = prefer_gpu_index
        self.on_swap = on_swap
        self.results: list[SwapResult] = []
        self._lock = asyncio.Lock()

    @property
    def served_version(self) -> int:
        try:
            return int(self.recommender.model.version)
        except ValueError:
            return -1

    # -- the off-loop part -----------------------------------------------------------------
    def prepare(self, raw: bytes | str | dict[str, Any]) -> ServingModel | None:
        """Verify and build the new bundle (blocking; run it in a thread). Returns ``None``
        for a version not newer than the served one; raises :class:`UpdateRefused` or
        :class:`~coldstream.core.checkpoint.CheckpointError` on refusal."""
        update, path = verify_update(raw, key=self.key, store_root=self.store_root)
        if update.version <= self.served_version:
            return None
        ck = load_checkpoint(path, device=self.device, expected_sha256=update.sha256)
        if ck.version != update.version:
            raise UpdateRefused(
                "version_mismatch",
                f"record announces v{update.version}, checkpoint is v{ck.version}",
            )
        return ServingModel.from_checkpoint(ck, prefer_gpu_index=self.prefer_gpu_index)

    # -- the on-loop part ------------------------------------------------------------------
    def apply(self, new: ServingModel) -> None:
        """Swap one reference (call on the event loop, between micro-batches)."""
        old = self.recommender.swap(new)
        if self.metrics is not None:
            self.metrics.set_model(new.version, new.n_items)
        if self.on_swap is not None:
            self.on_swap(new)
        log.warning("hot swap: model %s -> %s (%d items)", old.version, new.version, new.n_items)

    def _record(self, result: SwapResult) -> SwapResult:
        self.results.append(result)
        if self.metrics is not None and result.outcome != "skipped":
            self.metrics.model_swaps.labels(result.outcome).inc()
            if result.outcome == "refused" and result.reason:
                self.metrics.model_swap_failures.labels(result.reason).inc()
        return result

    def handle_sync(self, raw: bytes | str | dict[str, Any]) -> SwapResult:
        """Verify, load and swap in the calling thread (tests, tools)."""
        t0 = time.perf_counter()
        try:
            new = self.prepare(raw)
        except Exception as e:  # noqa: BLE001 - every failure is a refusal; serving goes on
            return self._refused(e, t0)
        if new is None:
            return self._record(SwapResult("skipped", version=self.served_version))
        self.apply(new)
        return self._record(
            SwapResult("ok", version=int(new.version), seconds=time.perf_counter() - t0)
        )

    async def handle(self, raw: bytes | str | dict[str, Any]) -> SwapResult:
        """Verify, load and build off the event loop, then swap on it."""
        async with self._lock:  # one update at a time, in record order
            t0 = time.perf_counter()
            loop = asyncio.get_running_loop()
            try:
                new = await loop.run_in_executor(None, self.prepare, raw)
            except Exception as e:  # noqa: BLE001
                return self._refused(e, t0)
            if new is None:
                return self._record(SwapResult("skipped", version=self.served_version))
            if int(new.version) <= self.served_version:  # raced with another swap
                return self._record(SwapResult("skipped", version=self.served_version))
            self.apply(new)  # no await between here and the return: atomic w.r.t. batches
            return self._record(
                SwapResult("ok", version=int(new.version), seconds=time.perf_counter() - t0)
            )

    def _refused(self, e: Exception, t0: float) -> SwapResult:
        reason = e.reason if isinstance(e, UpdateRefused | CheckpointError) else "load_error"
        log.error(
            "model update refused (%s): %s; still serving model %s",
            reason,
            e,
            self.recommender.model.version,
        )
        return self._record(
            SwapResult(
                "refused", reason=reason, seconds=time.perf_counter() - t0, detail=str(e)[:500]
            )
        )


class ItemVectorSink:
    """Applies ``item-vectors`` records (``item_id, model_version, vector``) to the served
    bundle: vectors of the served version are upserted, older ones dropped, newer ones
    kept (bounded) until their version is swapped in."""

    def __init__(self, recommender: Recommender, metrics: Metrics | None = None) -> None:
        self.recommender = recommender
        self.metrics = metrics
        self.pending: dict[str, dict[str, np.ndarray]] = {}
        self.applied = 0
        self.dropped = 0

    @staticmethod
    def _parse(raw: bytes | str) -> tuple[str, str, np.ndarray] | None:
        try:
            d = json.loads(raw)
            iid, ver, vec = (
                str(d["item_id"]),
                str(d["model_version"]),
                np.asarray(d["vector"], np.float32),
            )
        except (ValueError, KeyError, TypeError):
            return None
        if vec.ndim != 1 or not np.isfinite(vec).all():
            return None
        return iid, ver, vec

    def add_many(self, raws: list[bytes | str]) -> int:
        """Apply a batch of records (one upsert, one swap of the bundle); returns items upserted."""
        served = self.recommender.model.version
        now: dict[str, np.ndarray] = {}
        for raw in raws:
            parsed = self._parse(raw)
            if parsed is None:
                self.dropped += 1
                continue
            iid, ver, vec = parsed
            if ver == served:
                now[iid] = vec
            elif _newer(ver, served):
                slot = self.pending.setdefault(ver, {})
                if sum(len(p) for p in self.pending.values()) < MAX_PENDING_VECTORS:
                    slot[iid] = vec
            else:
                self.dropped += 1
        return self._upsert(now)

    def on_swap(self, new: ServingModel) -> None:
        """Called after a swap: apply vectors that were waiting for this version."""
        ready = self.pending.pop(new.version, {})
        for ver in [v for v in self.pending if not _newer(v, new.version)]:
            del self.pending[ver]
        if ready:
            self._upsert(ready)

    def _upsert(self, vecs: dict[str, np.ndarray]) -> int:
        if not vecs:
            return 0
        m = self.recommender.model
        dim = m.table.shape[1]
        ids = [i for i, v in vecs.items() if v.shape == (dim,)]
        self.dropped += len(vecs) - len(ids)
        if not ids:
            return 0
        new = self.recommender.upsert_items(ids, np.stack([vecs[i] for i in ids]))
        self.applied += len(ids)
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


def attach(w: Any) -> Control:
    """Register the control tasks on a wired worker (:class:`stream_app.agents.Wiring`)."""
    s = w.settings
    key = s.hmac_key()
    sink = ItemVectorSink(w.recommender, w.metrics)
    swapper = ModelSwapper(
        w.recommender,
        store_root=s.model_store,
        key=key,
        metrics=w.metrics,
        device=str(w.recommender.model.device),
        on_swap=sink.on_swap,
    )
    control = Control(swapper, sink)
    w.control = control
    from stream_app.online import OnlineQuality, WindowedCounter

    w.processor.online = OnlineQuality(window_s=s.online_window_s, metrics=w.metrics)
    if not isinstance(
        w.recommender.popularity, WindowedCounter
    ):  # popularity of the current window
        w.recommender.popularity = WindowedCounter(s.popular_window_s)
    app = w.app
    updates_topic, vectors_topic = w.names["model-updates"], w.names["item-vectors"]

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
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for r in records:
                        res = await swapper.handle(r.value)
                        log.info("model-updates offset %d: %s", r.offset, res)
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
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                raws = [r.value for records in batch.values() for r in records if r.value]
                if raws:
                    n = sink.add_many(raws)
                    if n:
                        log.info(
                            "item-vectors: %d items upserted (model %s)",
                            n,
                            w.recommender.model.version,
                        )
        finally:
            await consumer.stop()

    return control
