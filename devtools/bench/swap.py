"""Hot-swap benchmark: p99 latency steady vs during a swap at a fixed event rate, swap
duration, and one trainer cycle on the MovieLens-100K buffer (CPU).

    coldstream bench swap [--rate 1000] [--seconds 20] [--out reports/bench-swap.json]

Starts its own Apache Kafka (or uses $KAFKA_BOOTSTRAP_SERVERS) and one worker subprocess
(1 thread). Latency = a recommendation's ``latency_ms`` (input record timestamp ->
publish). "Swap" window = from the ``model-updates`` send to 1 s after the first new-version
output. ``swap_seconds`` = verify + load + index build + swap, in process
(``ModelSwapper.handle_sync``), and ``swap_e2e_seconds`` = update sent -> first new-version
output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from coldstream.core.errors import ExitCode

__all__ = ["add_arguments", "run"]


async def stream(
    bootstrap: str,
    topics: dict[str, str],
    *,
    rate: float,
    seconds: float,
    n_items: int,
    update_at: float,
    update: bytes,
) -> tuple[int, float]:
    """Click events at ``rate`` for ``seconds``; ``update_at`` seconds in, the model update
    goes to ``model-updates``. Returns the events sent and when the update was acknowledged."""
    from devtools.kafka_io import new_event, produce

    def events() -> Iterator[tuple[str, bytes, bytes]]:
        for i in range(int(rate * seconds)):
            user = f"u{i % 5000}"
            _, v = new_event(user, str(1 + (i * 7919) % n_items))
            yield topics["clicks"], user.encode(), v

    async def send_update() -> float:
        await asyncio.sleep(update_at)
        await produce(
            bootstrap,
            [(topics["model-updates"], None, update)],
            linger_ms=5,
            acks=1,
            request_timeout_ms=40_000,
        )
        return time.time()

    updater = asyncio.create_task(send_update())
    try:
        done = await produce(
            bootstrap,
            events(),
            rate=rate,
            min_sleep_s=0.002,
            settle_every=5000,
            linger_ms=5,
            acks=1,
            request_timeout_ms=40_000,
        )
        return done.sent, await updater
    finally:
        updater.cancel()


def latency_part(args, work: Path) -> dict:
    from coldstream.core.checkpoint import manifest_sha256
    from coldstream.core.model_updates import make_update
    from coldstream.core.topics import create_topics, topic_names
    from devtools.brokers import kafka_bootstrap_for
    from devtools.checkpoints import dev_signer, make_checkpoint, verify_env
    from devtools.kafka_io import read_until
    from devtools.processes import WorkerProcess

    with kafka_bootstrap_for(work) as bootstrap:
        prefix = f"bench-swap-{int(time.time())}-"
        asyncio.run(create_topics(bootstrap, replication_factor=1, prefix=prefix))
        topics = topic_names(prefix)
        store = work / "store"
        n_items = 1682
        signer = dev_signer()
        make_checkpoint(store, n_items=n_items, dim=64, text_dim=384, seed=1, signer=signer)
        os.environ.update(verify_env(signer))  # inherited by the worker
        with WorkerProcess(
            log_path=work / "worker.log",
            bootstrap=bootstrap,
            topic_prefix=prefix,
            app_id=prefix + "app",
            model_store=store,
            threads=1,
            log_level="warning",
        ):
            v2 = make_checkpoint(
                store, n_items=n_items, dim=64, text_dim=384, seed=2, signer=signer, point=False
            )
            upd = make_update(
                version=2,
                seq=2,
                checkpoint_dir=v2,
                manifest_sha256=manifest_sha256(v2),
                metrics={},
                signer=signer,
            ).to_json()
            sent, upd_at = asyncio.run(
                stream(
                    bootstrap,
                    topics,
                    rate=args.rate,
                    seconds=args.seconds,
                    n_items=n_items,
                    update_at=args.seconds / 2,
                    update=upd,
                )
            )
            out = asyncio.run(
                read_until(
                    bootstrap, [topics["recommendations"]], count=sent, timeout_s=90, idle_s=1.0
                )
            )
        vals = [json.loads(r.value) for r in out]
        first_new = min(v["produced_at"] for v in vals if v["model_version"] == "2")
        t_start = min(v["produced_at"] for v in vals)
        steady = [v["latency_ms"] for v in vals if t_start + 2.0 <= v["produced_at"] < upd_at]
        during = [v["latency_ms"] for v in vals if upd_at <= v["produced_at"] <= first_new + 1.0]
        versions = [v["model_version"] for v in vals]
        return {
            "rate_eps": args.rate,
            "events": sent,
            "outputs": len(vals),
            "outputs_v1": versions.count("1"),
            "outputs_v2": versions.count("2"),
            "steady_p50_ms": round(float(np.percentile(steady, 50)), 2),
            "steady_p99_ms": round(float(np.percentile(steady, 99)), 2),
            "swap_p99_ms": round(float(np.percentile(during, 99)), 2),
            "swap_window_outputs": len(during),
            "swap_e2e_seconds": round(first_new - upd_at, 3),
        }


def swap_seconds(work: Path) -> float:
    from prometheus_client import CollectorRegistry

    from coldstream.core.checkpoint import manifest_sha256
    from coldstream.core.model_updates import make_update
    from devtools.checkpoints import dev_signer, make_checkpoint
    from stream_app.control import ModelSwapper
    from stream_app.metrics import Metrics
    from stream_app.recommender import Recommender

    store = work / "store-inproc"
    signer = dev_signer()
    v1 = make_checkpoint(store, n_items=1682, dim=64, text_dim=384, seed=1, signer=signer)
    v2 = make_checkpoint(store, n_items=1682, dim=64, text_dim=384, seed=2, signer=signer)
    rec = Recommender.from_checkpoint(v1, prefer_gpu_index=False)
    sw = ModelSwapper(
        rec,
        store_root=store,
        keys=signer.keyring,
        served_seq=1,
        metrics=Metrics(CollectorRegistry()),
        prefer_gpu_index=False,
    )
    res = sw.handle_sync(
        make_update(
            version=2,
            seq=2,
            checkpoint_dir=v2,
            manifest_sha256=manifest_sha256(v2),
            metrics={},
            signer=signer,
        ).to_json()
    )
    assert res.outcome == "ok", res
    return round(res.seconds, 4)


def cycle_part(work: Path) -> dict:
    """One re-distillation cycle on the whole MovieLens-100K stream as the buffer (CPU)."""
    import torch

    from coldstream.core.checkpoint import load_checkpoint, save_checkpoint
    from coldstream.core.student import Student, StudentConfig
    from trainer.data import load_movielens
    from trainer.service.buffer import EventBuffer
    from trainer.service.redistill import CycleConfig, cycle_train_config, item_table, redistill
    from trainer.teacher.encoder import Teacher
    from trainer.teacher.heads import TeacherScorer

    torch.set_num_threads(2)
    inter, items = load_movielens()
    teacher = Teacher(device="cpu")
    t0 = time.perf_counter()
    vecs = teacher.encode_items(items.texts)
    encode_s = time.perf_counter() - t0
    torch.manual_seed(0)
    model = Student(StudentConfig(n_items=len(items), text_dim=teacher.dim, dim=64, max_len=30))
    ck = load_checkpoint(
        save_checkpoint(
            work / "store-cycle",
            model=model,
            item_ids=items.ids,
            item_text_vecs=vecs,
            item_titles=items.titles,
        )
    )
    buf = EventBuffer(len(inter))
    for u, i, e, ts in zip(inter.user, inter.item, inter.event, inter.ts, strict=True):
        buf.add(inter.user_ids[u], items.ids[i], int(e), float(ts))
    table = item_table(ck, {})
    scorer = TeacherScorer(teacher, items.texts, table.text_vecs)  # table rows = items rows here
    config = CycleConfig(teacher_prefixes=1024, train=cycle_train_config(epochs=4))
    t0 = time.perf_counter()
    res = redistill(ck, buf, new_items={}, scorer=scorer, config=config)
    return {
        "trainer_cycle_seconds": round(time.perf_counter() - t0, 1),
        "trainer_cycle_buffer_events": len(buf),
        "trainer_cycle_gate": res.gate.as_dict(),
        "trainer_cycle_epochs": res.metrics["epochs"],
        "teacher_catalogue_encode_seconds": round(encode_s, 1),
    }


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--rate", type=float, default=1000.0, help="events per second")
    ap.add_argument(
        "--seconds",
        type=float,
        default=20.0,
        help="length of the stream; the update goes out halfway",
    )
    ap.add_argument(
        "--out", type=Path, default=Path("reports/bench-swap.json"), help="the JSON report"
    )
    ap.add_argument(
        "--skip-cycle", action="store_true", help="skip the trainer cycle on MovieLens-100K"
    )


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-swap-") as d:
        work = Path(d)
        report = {
            "machine": f"{os.cpu_count()} CPU cores (shared), no GPU",
            **latency_part(args, work),
        }
        report["swap_seconds"] = swap_seconds(work)
        if not args.skip_cycle:
            report.update(cycle_part(work))
    report["swap_p99_over_steady_p99"] = round(
        report["swap_p99_ms"] / max(report["steady_p99_ms"], 1e-9), 2
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return ExitCode.OK
