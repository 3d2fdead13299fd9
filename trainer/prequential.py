"""Prequential cold-start evaluation through the running system (``coldstream evaluate --stream``).

Protocol (every choice is also written into the report's ``protocol``):

* **Timeline.** MovieLens-100K sorted stably by (timestamp, file order). The first
  ``cut_share`` of the interactions (by time) is the *past*: the bootstrap student is
  trained on it and on nothing else (``coldstream train --quick`` recipe: CE student on
  the teacher's item text vectors). The rest is the *stream*; its first ``max_events``
  are replayed in time order at ``rate`` events/s into ``clicks`` / ``purchases``.
* **System.** A broker (Apache Kafka from ``kafka/jars`` when present, else embedded
  Tansu, or ``--bootstrap``), one serving worker subprocess and one trainer-service
  subprocess (``coldstream trainer``) share a fresh model store seeded with the bootstrap
  checkpoint (v1). The trainer re-distils from the stream every ``cycle_events`` events,
  gates and announces; the worker hot-swaps. Every process started here is stopped by PID
  (process group) with a deadline.
* **Scored users.** Users with no event in the past: true cold-start users. For such a
  user, the recommendation the worker published for their k-th stream event (k = 1, 2, 3,
  5) is joined (``event_id``) to the **ground truth: that user's next 10 events in the
  dataset timeline** (items of events k+1 .. k+10; fewer when the user has fewer; the
  truth may lie beyond the replayed part). NDCG@10, binary relevance
  (:func:`trainer.metrics.ndcg_at_k`).
* **No training on what is scored.** The bootstrap never sees a scored user. A
  re-distilled version ``v`` copied the trainer's buffer at wall time ``snapshot_at``
  (in its checkpoint metrics); a recommendation served by ``v`` is scored only if the
  user's first truth event was *sent* after that snapshot (otherwise it is counted in
  ``excluded_possible_leak`` and left out).
* **Reference.** Stream popularity: the 10 most frequent items of all events before
  the scored event (past + stream so far), the user's seen items excluded -- computed
  here from the same data, not served.

The scoring functions are pure (:func:`stream_positions`, :func:`truth_after`,
:func:`score_recommendations`, :func:`aggregate`, :func:`popularity_reference`) and
unit-tested on hand-made data (``tests/unit/test_prequential.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import secrets
import shutil
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.metrics import ndcg_at_k

log = logging.getLogger(__name__)

KS = (1, 2, 3, 5)
N_NEXT = 10


# -------------------------------------------------------------------------------------
# pure scoring
# -------------------------------------------------------------------------------------

def stream_positions(users: Sequence[str]) -> list[int]:
    """For each stream event, the 1-based count of its user's events so far (``k``)."""
    seen: Counter[str] = Counter()
    out = []
    for u in users:
        seen[u] += 1
        out.append(seen[u])
    return out


def truth_after(user_items: Sequence[str], k: int, n_next: int = N_NEXT) -> list[str]:
    """The items of the user's events ``k+1 .. k+n_next`` (``user_items`` in time order)."""
    return list(user_items[k:k + n_next])


@dataclass(frozen=True)
class Scored:
    """One scored recommendation."""

    user: str
    k: int
    position: int
    """Stream position (0-based) of the user's k-th event, the trigger."""
    version: str
    ndcg: float
    fallback: str | None = None


def score_recommendations(
    *,
    users: Sequence[str],
    event_ids: Sequence[str],
    future: dict[str, Sequence[str]],
    recs: dict[str, dict[str, Any]],
    scored_users: set[str],
    sent_at: Sequence[float] | None = None,
    snapshot_at: dict[str, float] | None = None,
    ks: Sequence[int] = KS,
    n_next: int = N_NEXT,
    k_rec: int = 10,
) -> tuple[list[Scored], dict[str, int]]:
    """Join recommendations to the truth.

    ``users[p]`` / ``event_ids[p]``: the replayed stream, position ``p``. ``future[u]``: the
    items of all of ``u``'s stream events in time order (the dataset's, replayed or not).
    ``recs[event_id]``: the published record (``items``, ``model_version``, ``fallback``).
    ``sent_at[p]``: wall time event ``p`` was sent; ``snapshot_at[version]``: wall time the
    trainer copied its buffer for that version (absent: never trained on the stream).
    Returns the scored rows and counts (``missing`` recommendation, ``no_truth``,
    ``excluded_possible_leak``)."""
    snapshot_at = snapshot_at or {}
    want = set(ks)
    pos_of: dict[tuple[str, int], int] = {}
    for p, (u, k) in enumerate(zip(users, stream_positions(users), strict=True)):
        if u in scored_users and k in want:
            pos_of[(u, k)] = p
    # where (stream position) each user's j-th event was sent, for the leak guard
    first_pos: dict[str, list[int]] = defaultdict(list)
    for p, u in enumerate(users):
        if u in scored_users:
            first_pos[u].append(p)
    counts = Counter({"missing": 0, "no_truth": 0, "excluded_possible_leak": 0})
    rows: list[Scored] = []
    for (u, k), p in sorted(pos_of.items(), key=lambda x: x[1]):
        truth = truth_after(future.get(u, ()), k, n_next)
        if not truth:
            counts["no_truth"] += 1
            continue
        rec = recs.get(event_ids[p])
        if rec is None:
            counts["missing"] += 1
            continue
        version = str(rec.get("model_version"))
        snap = snapshot_at.get(version)
        if snap is not None:
            # the user's first truth event, if it was replayed at all (never replayed: never
            # trained on); sent before the version's buffer snapshot: it may be in its training data
            nxt = first_pos[u][k] if len(first_pos[u]) > k else None
            if nxt is not None and (sent_at is None or sent_at[nxt] <= snap):
                counts["excluded_possible_leak"] += 1
                continue
        ranked = [str(i["item_id"]) for i in rec.get("items", [])][:k_rec]
        rows.append(Scored(u, k, p, version, ndcg_at_k(ranked, truth, k_rec), rec.get("fallback")))
    return rows, dict(counts)


def _mean(xs: Sequence[float]) -> float | None:
    return round(float(np.mean(xs)), 5) if len(xs) else None


def aggregate(rows: Sequence[Scored], *, n_stream: int, ks: Sequence[int] = KS, buckets: int = 8,
              key_of: dict[int, float] | None = None) -> dict[str, Any]:
    """``ndcg@10`` per ``after_k``, ``by_model_version`` and ``over_time`` (``buckets`` equal
    slices of the replayed stream by position; ``key_of[position]`` adds the dataset time)."""
    by_k: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        by_k[r.k].append(r.ndcg)
    out: dict[str, Any] = {
        "ndcg@10": {f"after_{k}": _mean(by_k[k]) for k in ks},
        "n_users": {f"after_{k}": len(by_k[k]) for k in ks},
    }
    versions: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        versions[r.version][r.k].append(r.ndcg)
    out["by_model_version"] = {
        v: {"ndcg@10": {f"after_{k}": _mean(d[k]) for k in ks},
            "n": {f"after_{k}": len(d[k]) for k in ks},
            "all": _mean([x for k in ks for x in d[k]])}
        for v, d in sorted(versions.items(), key=lambda kv: _version_key(kv[0]))}
    size = max(1, -(-n_stream // buckets))
    over = []
    for b in range(buckets):
        lo, hi = b * size, min(n_stream, (b + 1) * size)
        if lo >= hi:
            break
        sel = [r for r in rows if lo <= r.position < hi]
        vs = Counter(r.version for r in sel)
        row = {"bucket": b, "positions": [lo, hi - 1], "n": len(sel), "ndcg@10": _mean([r.ndcg for r in sel]),
               "ndcg@10_by_k": {f"after_{k}": _mean([r.ndcg for r in sel if r.k == k]) for k in ks},
               "versions": dict(sorted(vs.items(), key=lambda kv: _version_key(kv[0])))}
        if key_of is not None:
            row["dataset_time"] = [key_of.get(lo), key_of.get(hi - 1)]
        over.append(row)
    out["over_time"] = over
    return out


def popularity_reference(*, past_items: Sequence[str], stream_items: Sequence[str], users: Sequence[str],
                         rows: Sequence[Scored], future: dict[str, Sequence[str]], k_rec: int = 10,
                         n_next: int = N_NEXT) -> dict[int, list[float]]:
    """NDCG@10 of "the most frequent items before this event" for each scored row (same
    users, same truth): counts over the past and the stream up to and including the
    trigger; the user's stream items so far excluded; ties broken by first appearance."""
    counts: Counter[str] = Counter(past_items)
    want = defaultdict(list)
    for r in rows:
        want[r.position].append(r)
    seen: dict[str, list[str]] = defaultdict(list)
    out: dict[int, list[float]] = defaultdict(list)
    for p, (u, it) in enumerate(zip(users, stream_items, strict=True)):
        counts[it] += 1
        seen[u].append(it)
        for r in want.get(p, ()):
            excl = set(seen[u])
            top = [i for i, _ in counts.most_common(k_rec + len(excl)) if i not in excl][:k_rec]
            out[r.k].append(ndcg_at_k(top, truth_after(future[u], r.k, n_next), k_rec))
    return out


def _version_key(v: str) -> tuple[int, str]:
    try:
        return int(v), v
    except ValueError:
        return 1 << 30, v


# -------------------------------------------------------------------------------------
# the run
# -------------------------------------------------------------------------------------

@dataclass
class StreamEvalConfig:
    cut_share: float = 0.6
    """Share of the interactions (by time) that is the past: bootstrap training data."""
    max_events: int = 15_000
    """Stream events replayed (the first ones after the cut; 0: all)."""
    rate: float = 100.0
    """Replay rate, events per second."""
    cycle_events: int = 3000
    """Trainer: re-distil after this many new events."""
    cycle_epochs: int = 2
    teacher_prefixes: int = 256
    min_buffer_events: int = 1500
    bootstrap: str | None = None
    """An existing broker; default: start Apache Kafka (jars present) or Tansu."""
    broker: str = "auto"
    """``auto``, ``kafka`` or ``tansu`` (when no ``bootstrap`` is given)."""
    work_dir: str = ".cache/prequential"
    """Bootstrap checkpoint cache and per-run folders (store, logs)."""
    seed: int = 0
    threads: int = 2
    """Torch threads of the bootstrap training here; worker and trainer use 1 each."""
    bootstrap_epochs: int = 8
    teacher_path: str | None = None
    drain_s: float = 90.0
    """After the replay, wait at most this long for the outstanding recommendations."""
    progress: bool = True
    buckets: int = 8


def _subset(inter, sl: slice):
    from trainer.data import Interactions
    return Interactions(user=inter.user[sl], item=inter.item[sl], ts=inter.ts[sl], event=inter.event[sl],
                        user_ids=inter.user_ids)


def bootstrap_checkpoint(cfg: StreamEvalConfig, inter, items, cut: int) -> tuple[Path, float]:
    """The bootstrap student trained on ``inter[:cut]`` only (cached by cut and seed)."""
    from trainer.store import latest_checkpoint
    from trainer.training import FitConfig, fit

    cache = Path(cfg.work_dir) / f"bootstrap-cut{cut}-seed{cfg.seed}-e{cfg.bootstrap_epochs}"
    path = latest_checkpoint(cache)
    if path is not None:
        return path, 0.0
    t0 = time.perf_counter()
    fc = FitConfig(quick=True, teacher_path=cfg.teacher_path, device="cpu", threads=cfg.threads, seed=cfg.seed,
                   train={"epochs": cfg.bootstrap_epochs, "max_seconds": 240.0, "device": "cpu"}, version=1)
    path = fit(_subset(inter, slice(0, cut)), items, fc, store_root=cache, progress=cfg.progress)
    return path, time.perf_counter() - t0


def _start_broker(cfg: StreamEvalConfig, run_dir: Path):
    from stream_app.brokers import BrokerError, KafkaBroker, TansuBroker, find_kafka_jars

    kind = cfg.broker
    if kind == "auto":
        try:
            find_kafka_jars()
            kind = "kafka"
        except BrokerError:
            kind = "tansu"
    broker = KafkaBroker(run_dir / "kafka") if kind == "kafka" else TansuBroker(log_path=run_dir / "tansu.log")
    broker.start()
    return broker, kind


async def _replay_and_collect(bootstrap: str, names: dict[str, str], events: list, *, rate: float,
                              n_expected: int, drain_s: float, progress: bool
                              ) -> tuple[dict[str, dict], list[dict], list[float], float]:
    """Replay ``events`` (ReplayEvent, in order; event id ``<run>-<position>``) and read
    ``recommendations`` / ``model-updates`` until every event is answered or ``drain_s``."""
    from aiokafka import AIOKafkaConsumer

    from stream_app.replay import replay

    run_id = uuid.uuid4().hex[:8]
    sent_at = [0.0] * len(events)
    recs: dict[str, dict] = {}
    updates: list[dict] = []
    consumer = AIOKafkaConsumer(names["recommendations"], names["model-updates"], names["events-dlq"],
                                bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    prefix = run_id + "-"
    dlq = 0

    def on_sent(eid: str, _ev: Any, t: float) -> None:
        sent_at[int(eid.rsplit("-", 1)[1])] = t

    async def collect(stop: asyncio.Event) -> None:
        nonlocal dlq
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, records in batch.items():
                for r in records:
                    if tp.topic == names["model-updates"]:
                        updates.append({**json.loads(r.value), "received_at": time.time()})
                        continue
                    if tp.topic == names["events-dlq"]:
                        dlq += 1
                        continue
                    v = json.loads(r.value)
                    if str(v.get("event_id", "")).startswith(prefix):
                        v["received_at"] = time.time()
                        recs[v["event_id"]] = v

    stop = asyncio.Event()
    task = asyncio.create_task(collect(stop))
    t0 = time.perf_counter()
    try:
        sent = await replay(bootstrap, names, iter(events), rate=rate, total=len(events), progress=progress,
                            run_id=run_id, on_sent=on_sent)
        deadline = time.monotonic() + drain_s
        while len(recs) + dlq < min(sent, n_expected) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # a last model-updates record, if any
    finally:
        stop.set()
        await asyncio.wait([task], timeout=5)
        await consumer.stop()
    recs = {eid.split("-", 1)[1]: v for eid, v in recs.items()}  # key: position as str
    return recs, updates, sent_at, time.perf_counter() - t0


def run(cfg: StreamEvalConfig, out: Path | str) -> dict[str, Any]:
    """Run the whole prequential evaluation and write ``out`` (.json, .md, .png)."""
    import torch

    from stream_app.brokers import free_port
    from stream_app.procs import start_process, stop_process
    from stream_app.replay import ReplayEvent
    from stream_app.testing import WorkerProcess
    from stream_app.topics import create_topics, load_topics, topic_names
    from trainer.data import load_movielens, tie_share

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(out)
    torch.set_num_threads(max(1, cfg.threads))
    inter, items = load_movielens()
    n = len(inter)
    cut = int(round(cfg.cut_share * n))
    ck_path, timings["bootstrap_train_s"] = bootstrap_checkpoint(cfg, inter, items, cut)
    torch.set_num_threads(1)
    stop_at = n if not cfg.max_events else min(n, cut + cfg.max_events)

    uid = [inter.user_ids[int(u)] for u in inter.user]
    iid = [items.ids[int(i)] for i in inter.item]
    past_users = set(uid[:cut])
    stream_users, stream_items = uid[cut:stop_at], iid[cut:stop_at]
    future: dict[str, list[str]] = defaultdict(list)
    for u, i in zip(uid[cut:], iid[cut:], strict=True):
        future[u].append(i)
    scored_users = {u for u in set(stream_users) if u not in past_users}
    events = [ReplayEvent(uid[p], iid[p], int(inter.event[p]), float(inter.ts[p])) for p in range(cut, stop_at)]

    run_dir = Path(cfg.work_dir) / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    store = run_dir / "store"
    store.mkdir(parents=True)
    shutil.copytree(ck_path, store / ck_path.name)
    key = os.environ.get("COLDSTREAM_MODEL_HMAC_KEY") or secrets.token_hex(16)
    os.environ["COLDSTREAM_MODEL_HMAC_KEY"] = key  # inherited by the worker and the trainer
    prefix = f"preq-{uuid.uuid4().hex[:8]}-"
    broker = worker = trainer = None
    broker_kind = "external"
    try:
        t = time.perf_counter()
        bootstrap = cfg.bootstrap
        if bootstrap is None:
            broker, broker_kind = _start_broker(cfg, run_dir)
            bootstrap = broker.bootstrap
        asyncio.run(create_topics(bootstrap, load_topics(), replication_factor=1, prefix=prefix))
        names = topic_names(prefix)
        timings["broker_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        worker = WorkerProcess(log_path=run_dir / "worker.log", bootstrap=bootstrap, topic_prefix=prefix,
                               app_id=prefix + "app", model_store=store, threads=1, log_level="warning")
        worker.start()
        env = {**os.environ, "COLDSTREAM_TRAINER_CYCLE_EPOCHS": str(cfg.cycle_epochs),
               "COLDSTREAM_TRAINER_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}
        if cfg.teacher_path:
            env["COLDSTREAM_TRAINER_TEACHER_PATH"] = cfg.teacher_path
        trainer = start_process(
            [sys.executable, "-m", "stream_app.cli", "trainer", "--bootstrap", bootstrap, "--topic-prefix", prefix,
             "--group-id", prefix + "trainer", "--store-root", str(store), "--cycle-events", str(cfg.cycle_events),
             "--cycle-seconds", "0", "--min-buffer-events", str(cfg.min_buffer_events),
             "--teacher-prefixes", str(cfg.teacher_prefixes), "--metrics-port", str(free_port()),
             "--threads", "1"], env=env, log_path=run_dir / "trainer.log")
        _wait_for(run_dir / "trainer.log", "trainer: consuming", trainer, 180)
        timings["processes_ready_s"] = round(time.perf_counter() - t, 1)
        recs, updates, sent_at, timings["replay_s"] = asyncio.run(_replay_and_collect(
            bootstrap, names, events, rate=cfg.rate, n_expected=len(events), drain_s=cfg.drain_s,
            progress=cfg.progress))
        metrics_text = worker.get_text("/metrics")
    finally:
        t = time.perf_counter()
        rcs = {}
        if trainer is not None:
            rcs["trainer"] = stop_process(trainer, deadline_s=15)
        if worker is not None:
            rcs["worker"] = worker.stop(deadline_s=15)
        if broker is not None:
            broker.stop()
        timings["stop_s"] = round(time.perf_counter() - t, 1)

    event_ids = [str(p) for p in range(len(events))]
    snapshot_at = {str(u["version"]): float(u["metrics"]["snapshot_at"]) for u in updates
                   if "snapshot_at" in (u.get("metrics") or {})}
    rows, counts = score_recommendations(users=stream_users, event_ids=event_ids, future=future, recs=recs,
                                         scored_users=scored_users, sent_at=sent_at, snapshot_at=snapshot_at)
    key_of = {p: float(inter.ts[cut + p]) for p in range(len(events))}
    agg = aggregate(rows, n_stream=len(events), buckets=cfg.buckets, key_of=key_of)
    pop = popularity_reference(past_items=iid[:cut], stream_items=stream_items, users=stream_users, rows=rows,
                               future=future)
    served = Counter(str(v.get("model_version")) for v in recs.values())
    first_seen: dict[str, int] = {}
    for pos, v in sorted(((int(p), v) for p, v in recs.items()), key=lambda x: x[0]):
        first_seen.setdefault(str(v.get("model_version")), pos)
    for v, d in agg["by_model_version"].items():
        d["outputs"] = served.get(v, 0)
        d["first_stream_position"] = first_seen.get(v)
        upd = next((u for u in updates if str(u.get("version")) == v), None)
        if upd is not None:
            m = upd.get("metrics") or {}
            d["gate"] = {k: m.get(k) for k in ("candidate_ndcg@10", "current_ndcg@10", "holdout_users",
                                              "buffer_events", "parent_version", "distill_loss",
                                              "topk_agreement@10")}
        elif v == "1":
            d["gate"] = "bootstrap checkpoint (trained on the past only)"
    total_s = round(time.perf_counter() - t_start, 1)
    timings["total_s"] = total_s
    swaps = [line for line in metrics_text.splitlines() if line.startswith("coldstream_model_swaps_total")]
    report = {
        **agg,
        "reference_popularity": {"ndcg@10": {f"after_{k}": _mean(pop.get(k, [])) for k in KS}},
        "counts": {"stream_events_replayed": len(events), "recommendations_joined": len(recs),
                   "scored_users": len(scored_users), "scored_recommendations": len(rows), **counts,
                   "model_updates": len(updates), "worker_swaps": swaps},
        "protocol": {
            "dataset": "MovieLens-100K (recbole package files)",
            "order": "stable sort by (timestamp, file order); "
                     f"{tie_share(inter):.0%} of interactions share a timestamp with another of the same "
                     "user, so 'the next 10' is partly arbitrary within ties",
            "past": {"share": cfg.cut_share, "interactions": cut, "until_ts": int(inter.ts[cut - 1]),
                     "use": "the bootstrap student (v1) is trained on these interactions only "
                            "(quick recipe: CE student on the MiniLM teacher's item text vectors; 10% of "
                            "past users for early stopping)"},
            "stream": {"first_ts": int(inter.ts[cut]), "replayed": len(events),
                       "cap": "max_events" if stop_at < n else "none", "of": n - cut,
                       "rate_eps": cfg.rate},
            "scored_users": "users with no event in the past (true cold start), at their k-th stream "
                            "event, k in (1, 2, 3, 5)",
            "ground_truth": "the items of the user's next 10 events in the dataset timeline (events "
                            "k+1..k+10; fewer if the user has fewer), whether replayed or not",
            "metric": "NDCG@10, binary relevance, of the top-10 the worker published for that event "
                      "(joined by event_id); the worker excludes the user's seen items",
            "leak_guard": "a recommendation served by a re-distilled version is scored only if the "
                          "user's first truth event was sent after that version's buffer snapshot "
                          "(snapshot_at in its model-updates record)",
            "reference_popularity": "most frequent items of all events before and including the trigger "
                                    "(past + stream), seen items excluded; same users and truth",
            "system": {"broker": broker_kind, "worker": "one subprocess, 1 thread, hot swap on",
                       "trainer": f"coldstream trainer subprocess, 1 thread, cycle every {cfg.cycle_events} "
                                  f"events, {cfg.cycle_epochs} epochs, {cfg.teacher_prefixes} teacher "
                                  f"prefixes, min buffer {cfg.min_buffer_events}, gate margin default"},
            "config": asdict(cfg) | {"bootstrap": "given" if cfg.bootstrap else None},
            "caveats": "replay compresses months into minutes: which version serves an event depends on "
                       "the trainer's wall-clock cycle time on this machine; popularity windows are wall "
                       "clock; one run, one seed: differences of a few 0.01 are within noise",
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), no GPU",
        },
        "timings_s": timings,
        "exit_codes": rcs,
        "run_dir": str(run_dir),
    }
    write_report(report, out)
    return report


def _wait_for(path: Path, needle: str, proc, timeout_s: float) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}\n{text[-3000:]}")
        time.sleep(0.3)
    raise TimeoutError(f"{needle!r} not in {path} after {timeout_s} s")


# -------------------------------------------------------------------------------------
# report
# -------------------------------------------------------------------------------------

def markdown(report: dict[str, Any]) -> str:
    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.4f}"

    ks = [f"after_{k}" for k in KS]
    lines = ["# Prequential cold-start quality through the running system (MovieLens-100K)", "",
             "NDCG@10 of the recommendation the worker published after a new user's k-th event, "
             "truth = their next 10 events. See `protocol` in the JSON for every choice.", "",
             "| | " + " | ".join(k.replace("_", " ") for k in ks) + " |",
             "|---|" + "---|" * len(ks),
             "| system (all versions) | " + " | ".join(f(report["ndcg@10"][k]) for k in ks) + " |",
             "| users | " + " | ".join(str(report["n_users"][k]) for k in ks) + " |",
             "| stream popularity (reference) | "
             + " | ".join(f(report["reference_popularity"]["ndcg@10"][k]) for k in ks) + " |", "",
             "## By model version", "",
             "| version | " + " | ".join(ks) + " | all | outputs | first position | gate (cand / curr) |",
             "|---|" + "---|" * (len(ks) + 4)]
    for v, d in report["by_model_version"].items():
        g = d.get("gate")
        gate = (f"{g.get('candidate_ndcg@10')} / {g.get('current_ndcg@10')}" if isinstance(g, dict) else
                (g or "-"))
        lines.append(f"| {v} | " + " | ".join(f"{f(d['ndcg@10'][k])} (n={d['n'][k]})" for k in ks)
                     + f" | {f(d['all'])} | {d.get('outputs', 0)} | {d.get('first_stream_position')} | {gate} |")
    lines += ["", "## Over time (equal slices of the replayed stream)", "",
              "| slice | positions | n | NDCG@10 | versions serving scored events |", "|---|---|---|---|---|"]
    for r in report["over_time"]:
        lines.append(f"| {r['bucket']} | {r['positions'][0]}-{r['positions'][1]} | {r['n']} | {f(r['ndcg@10'])} | "
                     + ", ".join(f"v{v}: {c}" for v, c in r["versions"].items()) + " |")
    c, p = report["counts"], report["protocol"]
    lines += ["", f"Replayed {c['stream_events_replayed']} of {p['stream']['of']} stream events at "
              f"{p['stream']['rate_eps']:.0f} ev/s; {c['scored_users']} cold-start users; "
              f"{c['scored_recommendations']} scored recommendations; missing {c['missing']}, "
              f"excluded (possible leak) {c['excluded_possible_leak']}; {c['model_updates']} model updates; "
              f"broker {p['system']['broker']}; total {report['timings_s']['total_s']:.0f} s.", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
    ks = [f"after_{k}" for k in KS]
    x = np.arange(len(ks))
    sys_v = [report["ndcg@10"][k] or 0 for k in ks]
    pop_v = [report["reference_popularity"]["ndcg@10"][k] or 0 for k in ks]
    a.bar(x - 0.2, sys_v, 0.4, label="system (worker output)")
    a.bar(x + 0.2, pop_v, 0.4, label="stream popularity (reference)")
    for v, d in report["by_model_version"].items():
        a.plot(x, [d["ndcg@10"][k] if d["ndcg@10"][k] is not None else np.nan for k in ks], "o--", ms=4,
               label=f"model v{v}")
    a.set_xticks(x, [k.replace("_", " ") + " ev" for k in ks])
    a.set_ylabel("NDCG@10 (next 10 events)")
    a.set_title("New users: quality after k events")
    a.legend(fontsize=7)
    ot = report["over_time"]
    mid = [(r["positions"][0] + r["positions"][1]) / 2 for r in ot]
    b.plot(mid, [r["ndcg@10"] if r["ndcg@10"] is not None else np.nan for r in ot], "o-", label="NDCG@10 (k=1,2,3,5)")
    for v, d in report["by_model_version"].items():
        if d.get("first_stream_position"):
            b.axvline(d["first_stream_position"], color="grey", ls=":", lw=1)
            b.text(d["first_stream_position"], b.get_ylim()[1] * 0.95 if b.get_ylim()[1] else 0.1, f" v{v}",
                   fontsize=8, color="grey")
    b.set_xlabel("stream position (replayed events)")
    b.set_ylabel("NDCG@10")
    b.set_title("Over time (dotted: first output of each version)")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = out.with_suffix("")
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    plot(report, stem.with_suffix(".png"))


__all__ = ["KS", "Scored", "StreamEvalConfig", "aggregate", "popularity_reference", "run",
           "score_recommendations", "stream_positions", "truth_after", "write_report"]
