"""``coldstream bench serve --items 1682,100000,1000000``: the serving pipeline at several
catalogue sizes in **one run**: one broker, one machine, the same users and events.

For each size a random model (:func:`devtools.checkpoints.make_checkpoint`, dim 64, text
32, one topic per 1,000 items: :func:`devtools.checkpoints.scale_clusters`) is served by a
fresh worker (``COLDSTREAM_INDEX=--index``; ``auto``: exact below 10,000 items (COLDSTREAM_INDEX_EXACT_BELOW), IVF above)
and measured as ``coldstream bench serve`` measures one model:

* **flat out**: the ``--events`` backlog drained (events/s from the output timestamps);
* **fixed rate**: ``--rate`` ev/s for ``--seconds`` after ``--warmup-seconds`` (p50/p99 of
  send -> receipt of the recommendation);
* **recall@10 of what was served**: ``--recall-sample`` recommendations of the flat-out
  phase against exact inner-product search over the whole catalogue for the same user
  (the history the worker had: the user's backlog events up to that one, seen items
  excluded), computed here from the same checkpoint;
* **worker RSS** (``VmRSS`` after the fixed-rate phase, and the peak ``VmHWM``), start-up
  time (checkpoint load + index build), and the index the worker built (its
  ``coldstream_index_info`` / ``coldstream_index_recall``).

The same events at every size: users and purchase flags are drawn once; each event's item
is the same uniform draw mapped through the Zipf(1.1) rank distribution of that catalogue
(common random numbers), so the sizes differ by the catalogue only. Writes
``reports/bench-scale.json`` (one row per size, the load average, the date) and prints a
table; the floors of the scale issue are evaluated against the smallest size of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from coldstream.core.errors import ExitCode
from coldstream.core.records import event_payload

__all__ = [
    "EventPlan",
    "histories_at",
    "histogram",
    "index_metrics",
    "output_order",
    "phase_stats",
    "run_scale",
    "served_recall",
    "worker_rss_mb",
    "zipf_ranks",
]

ZIPF_A = 1.1
MAX_HISTORY = 50
"""The worker's default ``max_history``: the events a recommendation was made from."""


def zipf_ranks(u: np.ndarray, n_items: int, a: float = ZIPF_A) -> np.ndarray:
    """0-based item ranks for uniform draws ``u`` under P(rank r) ~ 1 / (r + 1)^a."""
    p = 1.0 / np.arange(1, n_items + 1, dtype=np.float64) ** a
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    return np.minimum(np.searchsorted(cdf, u, side="right"), n_items - 1)


class EventPlan:
    """``n`` events drawn once (users, uniform item draws, purchase flags) and laid on any
    catalogue: :meth:`events` gives the same events for every size."""

    def __init__(self, n: int, *, n_users: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.u = rng.random(n)
        self.users = rng.integers(0, n_users, n)
        self.purchase = rng.random(n) < 0.1

    def __len__(self) -> int:
        return int(self.u.shape[0])

    def items(self, n_items: int) -> list[str]:
        """Item ids (``"1"`` .. ``str(n_items)``, rank order) of every event."""
        return [str(r + 1) for r in zipf_ranks(self.u, n_items).tolist()]

    def events(self, n_items: int, run: str) -> list[tuple[str, bytes, bytes]]:
        """``(logical topic, key, value)``; event ``i`` has id ``f"{run}-{i}"``."""
        now = time.time()
        out = []
        for i, (user, item, buy) in enumerate(
            zip(self.users.tolist(), self.items(n_items), self.purchase.tolist(), strict=True)
        ):
            key = f"bu{user}"
            value = event_payload(key, item, event_id=f"{run}-{i}", ts=now)
            out.append(("purchases" if buy else "clicks", key.encode(), value))
        return out


def histories_at(
    plan: EventPlan,
    items: Sequence[str],
    wanted: Iterable[int],
    *,
    order: Sequence[int] | None = None,
    max_history: int = MAX_HISTORY,
) -> dict[int, list[tuple[str, int]]]:
    """The history (``(item_id, event_type)``, oldest first, at most ``max_history``) each
    user had when event ``i`` of ``wanted`` was answered, that event included. ``order``:
    the event indices in the order the worker processed them (the order of its outputs: a
    user's answers share a key, hence a partition; a user's clicks and purchases come from
    two topics, so that order is not the order they were sent in); default: as sent."""
    want = set(wanted)
    hist: dict[int, list[tuple[str, int]]] = {}
    out = {}
    users, buys = plan.users.tolist(), plan.purchase.tolist()
    for i in order if order is not None else range(len(plan)):
        h = hist.setdefault(users[i], [])
        h.append((items[i], int(buys[i])))
        if len(h) > max_history:
            del h[0]
        if i in want:
            out[i] = list(h)
    return out


def output_order(records: Sequence[Any], run: str) -> list[int]:
    """Event indices of run ``run`` in the order the worker answered them (by partition
    and offset of its outputs)."""
    prefix = run + "-"
    out = []
    for r in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        eid = json.loads(r.value).get("event_id", "")
        if eid.startswith(prefix):
            out.append(int(eid[len(prefix) :]))
    return out


def served_recall(
    ck: Any, histories: Sequence[Sequence[tuple[str, int]]], served: Sequence[Sequence[str]]
) -> float:
    """Recall@10 of ``served`` against exact inner-product search over every item of the
    checkpoint ``ck`` for the same histories (seen items excluded; users encoded by the
    checkpoint's own model): chunks of 64 users, memory O(64 x items)."""
    import torch

    users = torch.from_numpy(ck.embed_users(list(histories)))
    table = torch.from_numpy(ck.item_vectors)
    hits = total = 0
    for c0 in range(0, len(histories), 64):
        scores = users[c0 : c0 + 64] @ table.T
        for j, h in enumerate(histories[c0 : c0 + 64]):
            seen = [ck.index_of[i] for i, _ in h if i in ck.index_of]
            scores[j, seen] = -float("inf")
        top = torch.topk(scores, 10, dim=1).indices.tolist()
        for row, got in zip(top, served[c0 : c0 + 64], strict=True):
            truth = {ck.item_ids[r] for r in row}
            hits += len(truth & set(got))
            total += len(truth)
    return hits / total if total else float("nan")


def worker_rss_mb(pid: int) -> tuple[float | None, float | None]:
    """``(VmRSS, VmHWM)`` of process ``pid`` in MB (Linux ``/proc``; ``None`` elsewhere)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None, None
    vals = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            vals[name] = round(int(rest.split()[0]) / 1024, 1)
    return vals.get("VmRSS"), vals.get("VmHWM")


def index_metrics(metrics_text: str) -> dict[str, Any]:
    """The worker's ``coldstream_index_info`` labels and ``coldstream_index_recall``."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, Any] = {}
    for fam in text_string_to_metric_families(metrics_text):
        for s in fam.samples:
            if s.name == "coldstream_index_info":
                out.update(s.labels)
            elif s.name == "coldstream_index_recall":
                out["build_recall_at_10"] = round(s.value, 4)
    return out


def histogram(metrics_text: str, name: str) -> dict[str, Any]:
    """One histogram of an exposition (summed over label values): cumulative ``buckets``
    (upper bound -> count), ``sum`` and ``count``."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, Any] = {"buckets": {}, "sum": 0.0, "count": 0.0}
    for fam in text_string_to_metric_families(metrics_text):
        if fam.name != name:
            continue
        for smp in fam.samples:
            if smp.name == name + "_bucket":
                le = float(smp.labels["le"])
                out["buckets"][le] = out["buckets"].get(le, 0.0) + smp.value
            elif smp.name == name + "_sum":
                out["sum"] += smp.value
            elif smp.name == name + "_count":
                out["count"] += smp.value
    return out


def phase_stats(before: str, after: str, name: str, scale: float = 1000.0) -> dict[str, Any]:
    """What histogram ``name`` gained between two expositions: the mean and the upper bound
    of the bucket holding the 99th percentile (``scale``: seconds -> ms)."""
    a, b = histogram(before, name), histogram(after, name)
    n = b["count"] - a["count"]
    if n <= 0:
        return {"n": 0, "mean": None, "p99_at_most": None}
    cum = sorted((le, b["buckets"][le] - a["buckets"].get(le, 0.0)) for le in b["buckets"])
    p99 = next(le for le, c in cum if c >= 0.99 * n)
    return {
        "n": int(n),
        "mean": round((b["sum"] - a["sum"]) / n * scale, 3),
        "p99_at_most": round(p99 * scale, 3) if p99 != float("inf") else None,
    }


def _served(records: Sequence[Any], run: str) -> dict[int, list[str]]:
    """Event index -> served item ids, for model answers (no fallback) of run ``run``."""
    out = {}
    prefix = run + "-"
    for r in records:
        v = json.loads(r.value)
        eid = v.get("event_id", "")
        if v.get("fallback") is None and eid.startswith(prefix):
            out[int(eid[len(prefix) :])] = [it["item_id"] for it in v["items"]]
    return out


def _row_line(r: dict[str, Any]) -> str:
    return (
        f"{r['items']:,} items: {r['events_per_s']:,.0f} ev/s flat out, p50 {r['p50_ms']:.1f} ms "
        f"p99 {r['p99_ms']:.1f} ms at {r['fixed_rate_achieved_events_per_s']:,.0f} ev/s, "
        f"recall@10 {r['recall_at_10']:.3f}, RSS {r['worker_rss_mb']} MB"
    )


def run_scale(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from coldstream.core.checkpoint import latest_checkpoint, load_checkpoint
    from coldstream.core.topics import create_topics, topic_names
    from devtools.bench.pipeline import (
        fixed_rate,
        flat_out,
        passthrough,
        send_events,
        start_broker,
        wait_processed,
    )
    from devtools.checkpoints import scale_checkpoint, verify_env
    from devtools.processes import WorkerProcess

    sizes = [int(x) for x in args.items.split(",")]
    load_start = round(os.getloadavg()[0], 2)
    work = Path(tempfile.mkdtemp(prefix="coldstream-bench-scale-"))
    env = {**os.environ, **verify_env(), "COLDSTREAM_INDEX": args.index}
    backlog_plan = EventPlan(args.events, n_users=args.users, seed=1)
    fixed_plan = EventPlan(int(args.rate * args.seconds), n_users=args.users, seed=2)
    warm_plan = EventPlan(int(args.rate * args.warmup_seconds), n_users=args.users, seed=3)
    rows: list[dict[str, Any]] = []
    report: dict[str, Any] = {}
    broker = None
    worker = None

    def write() -> None:
        report.update(
            {
                "rows": rows,
                "floors": _floors(rows),
                "load_avg_1m_start": load_start,
                "load_avg_1m_end": round(os.getloadavg()[0], 2),
                "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
        )
        Path(args.scale_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.scale_out).write_text(json.dumps(report, indent=1) + "\n")

    try:
        broker, bootstrap, broker_name = start_broker(args, work)
        report.update(
            {
                "command": "coldstream bench serve " + " ".join(sys.argv[3:]),
                "broker": broker_name,
                "cores": os.cpu_count(),
                "machine": platform.platform(),
                "python": platform.python_version(),
                "worker_threads": args.threads,
                "batch_size": args.batch_size,
                "batch_window_ms": args.batch_window_ms,
                "users": args.users,
                "flat_out_events": len(backlog_plan),
                "fixed_rate_target_events_per_s": args.rate,
                "fixed_rate_seconds": args.seconds,
                "index_setting": args.index,
                "model": "random student (GRU, dim 64, text 32), item text in one topic per "
                "1,000 items (at least 16)",
                "latency_definition": "benchmark consumer receipt of the recommendation - "
                "producer send time",
                "recall_definition": "served top-10 vs exact inner-product top-10 over every "
                "item, seen items excluded, same user history and model",
            }
        )
        run = uuid.uuid4().hex[:6]
        # -- ceiling: bare pass-through, once, over the smallest catalogue's backlog ------
        prefix = f"scale-{run}-"
        pt_names = topic_names(prefix + "pt-")
        asyncio.run(create_topics(bootstrap, replication_factor=1, prefix=prefix + "pt-"))
        pt_events = [("clicks", k, v) for _, k, v in backlog_plan.events(min(sizes), run + "p")]
        asyncio.run(send_events(bootstrap, pt_names, pt_events))
        pt_rate = asyncio.run(
            passthrough(
                bootstrap,
                pt_names["clicks"],
                pt_names["recommendations"],
                len(pt_events),
                timeout_s=300,
            )
        )
        report["passthrough_events_per_s"] = round(pt_rate, 1)
        print(f"pass-through ceiling: {pt_rate:,.0f} events/s", flush=True)

        for n_items in sizes:
            load_size = round(os.getloadavg()[0], 2)
            store = work / f"store-{n_items}"
            t0 = time.perf_counter()
            scale_checkpoint(store, n_items)
            model_s = time.perf_counter() - t0
            names = topic_names(f"{prefix}{n_items}-")
            asyncio.run(
                create_topics(bootstrap, replication_factor=1, prefix=f"{prefix}{n_items}-")
            )
            tag = f"{run}{n_items}"
            backlog = backlog_plan.events(n_items, tag + "f")
            asyncio.run(send_events(bootstrap, names, backlog))
            worker = WorkerProcess(
                log_path=work / f"worker-{n_items}.log",
                env=env,
                bootstrap=bootstrap,
                topic_prefix=f"{prefix}{n_items}-",
                app_id=f"{prefix}{n_items}-app",
                model_store=store,
                threads=args.threads,
                batch_size=args.batch_size,
                batch_window_ms=args.batch_window_ms,
                log_level="warning",
                idempotent_producer=args.broker != "tansu",  # Tansu has none
                ready_timeout_s=1800,
            )
            worker.start()
            wait_processed(worker, len(backlog), timeout_s=1800)
            rate, out, n_dlq = flat_out(bootstrap, names, len(backlog))
            print(f"{n_items:,} items, flat out: {rate:,.0f} events/s ({n_dlq} DLQ)", flush=True)
            before = worker.get_text("/metrics")
            fr = fixed_rate(
                bootstrap,
                names,
                fixed_plan.events(n_items, tag + "r"),
                warm_plan.events(n_items, tag + "w"),
                rate=args.rate,
                seconds=args.seconds,
                run_of_fixed=tag + "r",
            )
            assert worker.proc is not None
            rss, peak = worker_rss_mb(worker.proc.pid)
            after = worker.get_text("/metrics")
            info = index_metrics(after)
            phase = {  # the worker's own view of the fixed-rate phase, per micro-batch
                "search_ms": phase_stats(before, after, "coldstream_search_seconds"),
                "encode_ms": phase_stats(before, after, "coldstream_inference_seconds"),
                "batch_events": phase_stats(before, after, "coldstream_batch_size", 1.0),
            }
            ready_s = worker.ready_s
            worker.stop(deadline_s=10)
            worker = None
            # -- recall of what was served, against exact search on the same users --------
            served = _served(out, tag + "f")
            rng = np.random.default_rng(0)
            picked = sorted(
                rng.choice(sorted(served), min(args.recall_sample, len(served)), replace=False)
            )
            hist = histories_at(
                backlog_plan,
                backlog_plan.items(n_items),
                picked,
                order=output_order(out, tag + "f"),
            )
            ck = load_checkpoint(latest_checkpoint(store), device="cpu")
            recall = served_recall(ck, [hist[i] for i in picked], [served[i] for i in picked])
            del ck
            gc.collect()
            pct = fr["pct"]
            rows.append(
                {
                    "items": n_items,
                    "events_per_s": round(rate, 1),
                    "p50_ms": round(pct.get(50, float("nan")), 2),
                    "p99_ms": round(pct.get(99, float("nan")), 2),
                    "recall_at_10": round(recall, 4),
                    "worker_rss_mb": rss,
                    "worker_peak_rss_mb": peak,
                    "p95_ms": round(pct.get(95, float("nan")), 2),
                    "fixed_rate_achieved_events_per_s": round(fr["achieved"], 1),
                    "fixed_rate_answered": int(len(fr["lat"])),
                    "fixed_rate_events": fr["n"],
                    "worker_p99_ms": round(float(np.percentile(fr["wlat"], 99)), 2)
                    if len(fr["wlat"])
                    else None,
                    "flat_out_outputs": len(out),
                    "flat_out_dlq": n_dlq,
                    "recall_users": len(picked),
                    "index": info.get("kind"),
                    "nlist": int(info.get("nlist", 0) or 0),
                    "nprobe": int(info.get("nprobe", 0) or 0),
                    "codes": info.get("codes") or None,
                    "build_recall_at_10": info.get("build_recall_at_10"),
                    "worker_ready_s": round(ready_s, 1) if ready_s is not None else None,
                    "model_write_s": round(model_s, 1),
                    "load_avg_1m": load_size,
                    "fixed_rate_worker_batches": phase,
                }
            )
            print(_row_line(rows[-1]), flush=True)
            write()
    finally:
        if worker is not None:
            worker.stop(deadline_s=10)
        if broker is not None:
            broker.stop()
    write()
    t = Table(title=f"bench serve at scale ({report.get('broker')}, load {load_start})")
    for col in (
        "items",
        "index",
        "nprobe",
        "ev/s flat out",
        "x smallest",
        "p50 ms",
        "p99 ms",
        "recall@10",
        "RSS MB",
        "ready s",
    ):
        t.add_column(col, justify="right")
    base = rows[0]["events_per_s"] if rows else float("nan")
    for r in rows:
        t.add_row(
            f"{r['items']:,}",
            str(r["index"]),
            str(r["nprobe"] or "-"),
            f"{r['events_per_s']:,.0f}",
            f"{r['events_per_s'] / base:.2f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['recall_at_10']:.3f}",
            str(r["worker_rss_mb"]),
            str(r["worker_ready_s"]),
        )
    Console().print(t)
    print(json.dumps(report["floors"], indent=1))
    return ExitCode.OK


def _floors(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The scale issue's floors for the largest size, against the smallest of the run."""
    if len(rows) < 2:
        return {}
    small, big = min(rows, key=lambda r: r["items"]), max(rows, key=lambda r: r["items"])
    frac = big["events_per_s"] / small["events_per_s"] if small["events_per_s"] else None
    return {
        "largest_items": big["items"],
        "smallest_items": small["items"],
        "throughput_fraction_of_smallest": round(frac, 3) if frac is not None else None,
        "throughput_at_least_30pct": frac is not None and frac >= 0.30,
        "throughput_goal_50pct": frac is not None and frac >= 0.50,
        "throughput_at_least_3000_ev_s": big["events_per_s"] >= 3000,
        "p99_at_most_100ms": big["p99_ms"] <= 100,
        "recall_at_least_0_95": big["recall_at_10"] >= 0.95,
    }
