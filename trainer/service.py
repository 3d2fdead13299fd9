"""The trainer service (``coldstream trainer``): continuous re-distillation from the stream.

One process, its own consumer group on ``clicks``, ``purchases`` and ``items``; the
teacher lives here only.

* **New items** -- an ``items`` record for an item the current student does not know is
  embedded from its text by the teacher, placed in the student's item space by the text
  projection alone (:meth:`coldstream.core.checkpoint.Checkpoint.item_vector_for_text`) and published
  to ``item-vectors`` (``item_id, model_version, vector``); serving upserts it.
* **Re-distillation** -- every ``cycle_events`` events or ``cycle_seconds`` seconds, in a
  worker thread: warm-start from the current student and train on the buffer's older
  part (CE on the next item + ``alpha * T^2 * KL`` to the teacher's scores on a budget of
  buffer prefixes, :mod:`trainer.distill`); new items are in the item table (text only).
* **Gate** -- :mod:`trainer.gate` on the buffer's latest slice (never trained on).
* **Publish** -- the checkpoint is written atomically to the model store, then a signed
  ``model-updates`` record is sent (:func:`coldstream.core.model_updates.make_update`).

The adapted teacher's head (:class:`trainer.adapt.TeacherHead`) is not part of a student
checkpoint; it is kept beside the checkpoints as ``<store>/teacher-heads/v000007.safetensors``
(:func:`save_teacher_head`). Without one the service fits a head on the buffer in its
first cycle and saves it with the version it promotes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coldstream.core.checkpoint import (
    Checkpoint,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from trainer.buffer import EventBuffer
from trainer.gate import GateResult, gate
from trainer.training import (
    TrainConfig,
    build_examples,
    prefix_positions,
    student_scores,
    train_student,
)

log = logging.getLogger(__name__)

Scorer = Callable[[list[np.ndarray]], np.ndarray]
"""Teacher logits ``[B, N]`` (already divided by the teacher temperature) for histories
given as rows of the cycle's item table."""


def catalog_text(record: dict[str, Any]) -> str:
    """The teacher's text of an ``items`` record: ``"Title - Category. Description"``."""
    text = str(record.get("title") or "").strip()
    cat = record.get("category")
    if cat:
        text = f"{text} - {', '.join(cat) if isinstance(cat, list) else cat}"
    desc = record.get("description")
    if desc:
        text = f"{text}. {str(desc).strip()}"
    return text[:2000]


# -------------------------------------------------------------------------------------
# the adapted teacher head, persisted beside the checkpoints
# -------------------------------------------------------------------------------------

def teacher_head_path(store_root: Path | str, version: int) -> Path:
    return Path(store_root) / "teacher-heads" / f"v{version:06d}.safetensors"


def save_teacher_head(store_root: Path | str, version: int, head: Any, tau: float) -> Path:
    """Write a :class:`~trainer.adapt.TeacherHead` (safetensors, atomically)."""
    from safetensors.torch import save_file

    dest = teacher_head_path(store_root, version)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
    os.close(fd)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(state, tmp, metadata={"dim": str(head.dim), "tau": repr(float(tau))})
    os.replace(tmp, dest)
    return dest


def load_teacher_head(store_root: Path | str, version: int | None = None) -> tuple[Any, float] | None:
    """The head saved for ``version`` (default: the newest saved), or ``None``."""
    from safetensors import safe_open

    from trainer.adapt import TeacherHead

    folder = Path(store_root) / "teacher-heads"
    if version is not None:
        path = teacher_head_path(store_root, version)
    else:
        found = sorted(folder.glob("v*.safetensors")) if folder.is_dir() else []
        path = found[-1] if found else None
    if path is None or not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open API
    head = TeacherHead(int(meta["dim"]))
    head.load_state_dict(state)
    head.eval()
    return head, float(meta.get("tau", 1.0))


class TeacherScorer:
    """Teacher logits for histories of item rows: encoder features of the history text
    through the adapted head (fitted on the buffer when none is given), divided by ``tau``."""

    def __init__(self, teacher: Any, texts: Sequence[str], item_vecs: np.ndarray,
                 head: Any = None, tau: float = 1.0) -> None:
        self.teacher, self.texts, self.item_vecs = teacher, list(texts), item_vecs
        self.head, self.tau = head, tau
        self.fitted = False

    def features(self, histories: list[np.ndarray]) -> np.ndarray:
        from trainer.features import teacher_features
        return teacher_features(self.teacher, self.item_vecs, self.texts, histories)

    def fit_head(self, histories: list[np.ndarray], targets: list[np.ndarray], feats: np.ndarray) -> None:
        from trainer.adapt import HeadConfig, calibrate_temperature, fit_head
        head, _ = fit_head(feats, targets, self.item_vecs, np.ones(len(self.item_vecs), bool),
                           config=HeadConfig(epochs=15, patience=3))
        self.tau = calibrate_temperature(head.score(feats, self.item_vecs), np.array([t[0] for t in targets]))
        self.head, self.fitted = head, True

    def __call__(self, histories: list[np.ndarray], feats: np.ndarray | None = None) -> np.ndarray:
        feats = self.features(histories) if feats is None else feats
        if self.head is None:
            return feats[:, : self.item_vecs.shape[1]] @ self.item_vecs.T / self.tau
        return self.head.score(feats, self.item_vecs) / self.tau


# -------------------------------------------------------------------------------------
# one cycle
# -------------------------------------------------------------------------------------

@dataclass
class CycleConfig:
    holdout_share: float = 0.2
    margin: float = 0.01
    epochs: int = 4
    lr: float = 1e-3
    batch_size: int = 256
    max_prefix: int = 20
    extra_per_user: int = 2
    teacher_prefixes: int = 1024
    alpha: float = 1.0
    temperature: float = 2.0
    seed: int = 0
    max_seconds: float = 600.0
    device: str = "auto"
    """Where the candidate trains (:func:`trainer.training.train_student`; ``auto``: cuda if visible)."""


@dataclass
class CycleResult:
    candidate: torch.nn.Module
    gate: GateResult
    item_ids: list[str]
    titles: list[str]
    text_vecs: np.ndarray
    metrics: dict[str, Any]
    seconds: float
    head: Any = None
    tau: float = 1.0


@dataclass
class ItemTable:
    ids: list[str]
    titles: list[str]
    text_vecs: np.ndarray
    id_index: np.ndarray
    row_of: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.row_of = {i: r for r, i in enumerate(self.ids)}


def item_table(ck: Checkpoint, new_items: dict[str, tuple[np.ndarray, str]]) -> ItemTable:
    """The checkpoint's rows, then new items (text only, no id embedding)."""
    extra = [i for i in new_items if i not in ck.index_of]
    ids = list(ck.item_ids) + extra
    titles = list(ck.item_titles) + [new_items[i][1] for i in extra]
    vecs = np.vstack([ck.item_text_vecs] + [new_items[i][0][None, :] for i in extra]).astype(np.float32)
    id_index = np.where(np.arange(len(ids)) < ck.config.n_items, np.arange(len(ids)), -1)
    return ItemTable(ids, titles, vecs, id_index.astype(np.int64))


def _seq(events: Sequence[tuple[str, int]], row_of: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    rows = [(row_of[i], t) for i, t in events if i in row_of]
    return (np.array([r for r, _ in rows], dtype=np.int64), np.array([t for _, t in rows], dtype=np.int64))


def redistill(ck: Checkpoint, buffer: EventBuffer, *, new_items: dict[str, tuple[np.ndarray, str]],
              scorer: Scorer | None, config: CycleConfig, texts: Sequence[str] | None = None) -> CycleResult:
    """Warm-start from ``ck.model``, distil on the buffer, gate on its latest slice."""
    cfg = config
    t0 = time.perf_counter()
    table = item_table(ck, new_items)
    train_s, holdout = buffer.split(cfg.holdout_share)
    seqs = [s for s in (_seq(ev, table.row_of) for ev in train_s.values()) if len(s[0]) >= 2]
    if not seqs:
        raise ValueError("buffer has no training session with two known events")
    hist, truths = [], []
    for h, t in zip(holdout.histories, holdout.truths, strict=True):
        hs = _seq(h, table.row_of)
        tr = np.array([table.row_of[i] for i in t if i in table.row_of], dtype=np.int64)
        if len(hs[0]) and len(tr):
            hist.append((hs[0][-ck.config.max_len:], hs[1][-ck.config.max_len:]))
            truths.append(tr)
    positions = prefix_positions(seqs, max_prefix=cfg.max_prefix, extra_per_user=cfg.extra_per_user,
                                 seed=cfg.seed)
    ex = build_examples(seqs, positions, ck.config.max_len)
    tc = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, patience=2, seed=cfg.seed,
                     max_prefix=cfg.max_prefix, extra_per_user=cfg.extra_per_user, id_dropout=0.25,
                     max_seconds=cfg.max_seconds, device=cfg.device)
    teacher_logits = None
    info: dict[str, Any] = {}
    if scorer is not None and cfg.teacher_prefixes > 0 and cfg.alpha > 0:
        rng = np.random.default_rng(cfg.seed)
        pick = np.sort(rng.choice(len(positions), size=min(cfg.teacher_prefixes, len(positions)),
                                  replace=False))
        tpos = [positions[i] for i in pick]
        th = [seqs[u][0][:t] for u, t in tpos]
        feats = None
        if isinstance(scorer, TeacherScorer):
            feats = scorer.features(th)
            if scorer.head is None:
                scorer.fit_head(th, [seqs[u][0][t:t + 10] for u, t in tpos], feats)
            teacher_logits = torch.as_tensor(scorer(th, feats), dtype=torch.float32)
        else:
            teacher_logits = torch.as_tensor(scorer(th), dtype=torch.float32)
        where = {p: i for i, p in enumerate(tpos)}
        ex.kd_row = torch.as_tensor([where.get(p, -1) for p in positions], dtype=torch.long)
        tc.teacher, tc.alpha, tc.temperature = "model", cfg.alpha, cfg.temperature
        info["teacher_prefixes"] = len(tpos)
    scfg = ck.config
    candidate, curve = train_student(
        ex, text_vecs=table.text_vecs, id_index=table.id_index, catalogue=np.ones(len(table.ids), bool),
        student_config=scfg, config=tc, teacher_logits=teacher_logits, progress=False,
        desc="re-distil", init=ck.model)
    current = ck.model.cpu().eval()
    g = gate(candidate, current, text_vecs=table.text_vecs, id_index=table.id_index,
             histories=hist, truths=truths, margin=cfg.margin)
    if teacher_logits is not None and hist:
        info["topk_agreement@10"] = topk_agreement(candidate, scorer, table, hist)
    best = min(curve, key=lambda r: r["loss"])
    popular = [i for i, _ in Counter(e.item for e in buffer.events()).most_common(200)
               if i in table.row_of]
    metrics = {**g.as_dict(), "distill_loss": round(best["kd"], 5), "ce_loss": round(best["ce"], 5),
               "epochs": len(curve), "buffer_events": len(buffer), "train_users": len(seqs),
               "new_items": len(table.ids) - len(ck.item_ids), "parent_version": ck.version,
               "popular_items": popular, **info}
    head = getattr(scorer, "head", None)
    return CycleResult(candidate, g, table.ids, table.titles, table.text_vecs, metrics,
                       time.perf_counter() - t0, head=head, tau=getattr(scorer, "tau", 1.0))


def topk_agreement(student: torch.nn.Module, scorer: Any, table: ItemTable,
                   histories: list[tuple[np.ndarray, np.ndarray]], k: int = 10, limit: int = 256) -> float:
    """Mean share of the teacher's top-``k`` in the student's top-``k`` (revealed items excluded)."""
    hs = histories[:limit]
    s = student_scores(student, torch.as_tensor(table.text_vecs), torch.as_tensor(table.id_index), hs)
    t = np.asarray(scorer([h[0] for h in hs]), dtype=np.float64)
    agree = []
    for b, h in enumerate(hs):
        s[b, h[0]] = -np.inf
        t[b, h[0]] = -np.inf
        agree.append(len(set(np.argsort(-s[b])[:k]) & set(np.argsort(-t[b])[:k])) / k)
    return round(float(np.mean(agree)), 5)


def publish_checkpoint(store_root: Path | str, result: CycleResult, *, teacher: dict[str, Any]) -> Path:
    """Write the promoted candidate (and the teacher head it was distilled from)."""
    path = save_checkpoint(store_root, model=result.candidate, item_ids=result.item_ids,
                           item_text_vecs=result.text_vecs, item_titles=result.titles,
                           metrics=result.metrics, teacher=teacher)
    if result.head is not None:
        save_teacher_head(store_root, int(path.name[1:]), result.head, result.tau)
    return path


# -------------------------------------------------------------------------------------
# metrics
# -------------------------------------------------------------------------------------

class TrainerMetrics:
    """Trainer metrics (names in docs/architecture.md), own registry."""

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = registry if registry is not None else CollectorRegistry()
        self.cycles = Counter("coldstream_trainer_cycles", "Re-distillation cycles by outcome",
                              ["outcome"], registry=r)
        self.cycle_seconds = Histogram("coldstream_trainer_cycle_seconds", "Duration of one cycle",
                                       buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600),
                                       registry=r)
        self.distill_loss = Gauge("coldstream_trainer_distill_loss", "KD loss of the last cycle", registry=r)
        self.topk_agreement = Gauge("coldstream_trainer_topk_agreement",
                                    "Teacher-student top-10 agreement on recent sessions", registry=r)
        self.model_age = Gauge("coldstream_trainer_model_age_seconds", "Age of the current model",
                               registry=r)
        self.buffer_events = Gauge("coldstream_trainer_buffer_events", "Events in the buffer", registry=r)
        self.new_items = Counter("coldstream_trainer_new_items", "New items embedded and published",
                                 registry=r)
        self.gate_ndcg = Gauge("coldstream_trainer_gate_ndcg", "Holdout NDCG@10 at the last gate",
                               ["model"], registry=r)
        # labelled series exist at 0 before the first cycle (alerts and dashboards see them)
        for outcome in ("promoted", "rejected", "failed"):
            self.cycles.labels(outcome)


# -------------------------------------------------------------------------------------
# the service
# -------------------------------------------------------------------------------------

class TrainerService:
    """Consumes the stream, embeds new items, runs cycles, publishes (see module doc)."""

    def __init__(self, settings: Any, *, teacher: Any = None, metrics: TrainerMetrics | None = None) -> None:
        from coldstream.core.topics import load_topics, topic_names

        self.s = settings
        self.names = topic_names(settings.topic_prefix, load_topics())
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

    # -- start-up --------------------------------------------------------------------------
    def load(self) -> None:
        path = latest_checkpoint(self.s.model_store)
        if path is None:
            raise FileNotFoundError(f"no checkpoint in {self.s.model_store}: run coldstream train first")
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
        log.warning("trainer: current model v%d (%d items), teacher %s, head %s", self.ck.version,
                    len(self.ck.item_ids), self.teacher.describe().get("name"),
                    "loaded" if self.head is not None else "to fit")

    # -- new items -------------------------------------------------------------------------
    def embed_items(self, items: dict[str, str]) -> list[tuple[str, bytes]]:
        """Teacher text vectors -> student item vectors under the current model (blocking)."""
        ck = self.ck
        ids = list(items)
        tv = self.teacher.encode([items[i] for i in ids])
        vecs = ck.item_vector_for_text(tv)
        out = []
        for iid, t, v in zip(ids, tv, np.atleast_2d(vecs), strict=True):
            self.new_items[iid] = (t, items[iid][:200])
            out.append((iid, json.dumps({"item_id": iid, "model_version": str(ck.version),
                                         "vector": [round(float(x), 6) for x in v]}).encode()))
        return out

    # -- one cycle (blocking, in a thread) -----------------------------------------------------
    def cycle(self, buffer: EventBuffer, new_items: dict[str, tuple[np.ndarray, str]],
              snapshot_at: float | None = None) -> tuple[CycleResult, Path | None]:
        """``snapshot_at``: wall time (epoch s) the buffer was copied; recorded in the
        checkpoint's metrics so evaluations can prove no later event was trained on."""
        ck = self.ck
        table = item_table(ck, new_items)
        texts = [self.texts.get(i, t) for i, t in zip(table.ids, table.titles, strict=True)]
        scorer = TeacherScorer(self.teacher, texts, table.text_vecs, self.head, self.tau)
        cfg = CycleConfig(holdout_share=self.s.holdout_share, margin=self.s.gate_margin,
                          epochs=self.s.cycle_epochs, teacher_prefixes=self.s.teacher_prefixes,
                          seed=self.s.seed + self.cycles, device=self.s.device)
        res = redistill(ck, buffer, new_items=new_items, scorer=scorer, config=cfg)
        if snapshot_at is not None:
            res.metrics["snapshot_at"] = round(snapshot_at, 3)
        if scorer.fitted:
            self.head, self.tau = scorer.head, scorer.tau
        path = None
        if res.gate.promote:
            path = publish_checkpoint(self.s.model_store, res, teacher={**ck.teacher, **self.teacher.describe(),
                                                                       "head": "teacher-heads/"})
        return res, path

    # -- the loop ----------------------------------------------------------------------------
    def _due(self) -> bool:
        s = self.s
        fresh = self.buffer.added - self.events_at_cycle
        if len(self.buffer) < s.min_buffer_events or fresh <= 0:
            return False
        return (s.cycle_events > 0 and fresh >= s.cycle_events) or \
            (s.cycle_seconds > 0 and time.monotonic() - self.last_cycle >= s.cycle_seconds)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        from coldstream.core.checkpoint import manifest_sha256
        from coldstream.core.events import Event, validate_event
        from coldstream.core.model_updates import make_update

        s = self.s
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.load)
        logical = {self.names[n]: n for n in ("clicks", "purchases", "items")}
        security = s.kafka_client_kwargs()
        consumer = AIOKafkaConsumer(*logical, bootstrap_servers=s.bootstrap, group_id=s.group_id,
                                    auto_offset_reset="earliest", enable_auto_commit=True,
                                    fetch_max_wait_ms=100, session_timeout_ms=10_000,
                                    heartbeat_interval_ms=2_000, **security)
        producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, acks="all", linger_ms=5, **security)
        await consumer.start()
        await producer.start()
        stop = stop or asyncio.Event()
        cycle_fut: asyncio.Future | None = None
        m = self.metrics
        log.warning("trainer: consuming %s as group %s", sorted(logical), s.group_id)
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                fresh_items: dict[str, str] = {}
                for tp, records in batch.items():
                    topic = logical.get(tp.topic)
                    for r in records:
                        if topic == "items":
                            self._on_item(r.key, r.value, fresh_items)
                            continue
                        ev = validate_event(r.value, topic, key=r.key, max_future_skew_s=86400 * 365 * 50)
                        if isinstance(ev, Event):
                            self.buffer.add(ev.user_id, ev.item_id, ev.type_code, ev.ts, ev.event_id)
                if fresh_items:
                    out = await loop.run_in_executor(None, self.embed_items, fresh_items)
                    futs = [await producer.send(self.names["item-vectors"], key=k.encode(), value=v)
                            for k, v in out]
                    await asyncio.gather(*futs)
                    m.new_items.inc(len(out))
                    log.warning("trainer: published %d new item vectors (model v%d)", len(out), self.ck.version)
                m.buffer_events.set(len(self.buffer))
                m.model_age.set(max(0.0, time.time() - float(self.ck.manifest.get("created_at", time.time()))))
                if cycle_fut is None and self._due():
                    self.events_at_cycle, self.last_cycle = self.buffer.added, time.monotonic()
                    snap = EventBuffer(self.buffer.capacity)
                    for e in self.buffer.events():
                        snap.add(e.user, e.item, e.etype, e.ts)
                    cycle_fut = loop.run_in_executor(None, self.cycle, snap, dict(self.new_items),
                                                     time.time())
                    log.warning("trainer: cycle %d started on %d events", self.cycles + 1, len(snap))
                if cycle_fut is not None and cycle_fut.done():
                    fut, cycle_fut = cycle_fut, None
                    self.cycles += 1
                    try:
                        res, path = fut.result()
                    except Exception:  # noqa: BLE001 - a failed cycle never stops the service
                        log.exception("trainer: cycle failed")
                        m.cycles.labels("failed").inc()
                        continue
                    m.cycle_seconds.observe(res.seconds)
                    m.distill_loss.set(res.metrics.get("distill_loss", 0.0))
                    if "topk_agreement@10" in res.metrics:
                        m.topk_agreement.set(res.metrics["topk_agreement@10"])
                    m.gate_ndcg.labels("candidate").set(res.gate.candidate_ndcg)
                    m.gate_ndcg.labels("current").set(res.gate.current_ndcg)
                    log.warning("trainer: cycle %d in %.1f s: %s", self.cycles, res.seconds, res.gate.as_dict())
                    if path is None:
                        m.cycles.labels("rejected").inc()
                        continue
                    new_ck = await loop.run_in_executor(None, lambda p=path: load_checkpoint(p, device="cpu"))
                    update = make_update(version=new_ck.version, checkpoint_dir=path,
                                         manifest_sha256=manifest_sha256(path),
                                         metrics={k: v for k, v in res.metrics.items() if k != "popular_items"},
                                         key=self.key or "")
                    if not self.key:
                        log.error("trainer: no COLDSTREAM_MODEL_HMAC_KEY: workers will refuse v%d", new_ck.version)
                    await producer.send_and_wait(self.names["model-updates"], value=update.to_json())
                    self.ck = new_ck
                    m.cycles.labels("promoted").inc()
                    log.warning("trainer: promoted and announced v%d (%s)", new_ck.version, path)
                    missing = {i: self.texts.get(i, t) for i, (_, t) in self.new_items.items()
                               if i not in new_ck.index_of}
                    if missing:  # items that arrived during the cycle: re-place under the new model
                        out = await loop.run_in_executor(None, self.embed_items, missing)
                        for k, v in out:
                            await producer.send(self.names["item-vectors"], key=k.encode(), value=v)
        finally:
            if cycle_fut is not None:
                await asyncio.wait([cycle_fut], timeout=5)
            await consumer.stop()
            await producer.stop()

    def _on_item(self, key: bytes | None, value: bytes | None, fresh: dict[str, str]) -> None:
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


def run(settings: Any) -> int:
    """Run the service until SIGINT/SIGTERM."""
    import signal

    torch.set_num_threads(max(1, settings.threads))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
