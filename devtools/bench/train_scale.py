"""``coldstream bench train-scale``: training at catalogue scale, measured. Writes
``reports/bench-train-scale.json`` (each part its own section; parts run alone or together).

Parts (``--part``; ``all`` runs each in its own child process, so each peak RSS is its own):

* ``paths`` -- seconds per training batch of the full-softmax and the sampled path at
  ``--path-items`` catalogue sizes: the full path grows with the items, the sampled one does
  not (the ``auto`` threshold, :data:`trainer.student.training.FULL_SOFTMAX_MAX_ITEMS`).
* ``fit`` -- a train + distil run (:func:`trainer.student.fitting.fit`: item vectors through the
  on-disk cache, teacher head, the teacher's top-K in blocks, sampled-softmax student,
  checkpoint) on a synthetic world of ``--items`` items, ``--users`` users and ``--events``
  events, then NDCG@10 of the student and of popularity on held-out users; wall time and
  peak RSS per stage.
* ``cycle`` -- two re-distillation cycles of the trainer service
  (:meth:`trainer.service.loop.TrainerService.cycle`: item table with new items, teacher head and
  top-K, sampled student, gate, signed publish) on a ``--cycle-items`` catalogue and a full
  replay buffer; the second cycle encodes no item text.
* ``compare`` -- MovieLens-100K, the sampled / top-K path against the full path on the
  splits of ``--compare-seeds`` (:func:`trainer.evaluation.softmax_compare.compare_splits`), NDCG@10 at
  k = 1, 3, 5 and on cold items, pooled over the splits, with paired bootstrap intervals.

The teacher: ``--teacher minilm`` (the real encoder) or ``stand-in`` (default for ``fit`` and
``cycle``): a hashed bag-of-words encoder with MiniLM's width, used because MiniLM encodes
~30-300 short texts/s on 2 CPU cores, so 1M item texts take hours; ``fit`` measures
MiniLM's rate on a sample and the JSON states the stand-in and the projected encode time.
``compare`` always uses MiniLM. Costs: ``fit`` grows with events (examples) x epochs for the
student, teacher prefixes x items for the top-K, items for the vectors and the checkpoint;
``cycle`` with buffer events and items.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from coldstream.core.errors import ExitCode

__all__ = ["StandInEncoder", "add_arguments", "run"]

PARTS = ("paths", "fit", "cycle", "compare")


# ----------------------------------------------------------------------------- measuring


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Meter:
    """Wall time and RSS per stage: a thread samples ``VmRSS`` every 0.2 s; the process peak
    is ``VmHWM`` (what the kernel saw, between samples too)."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}
        self.current: str | None = None
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._sample, daemon=True)
        self._t.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            if self.current is not None:
                st = self.stages[self.current]
                st["peak_rss_mb"] = max(st["peak_rss_mb"], _status_kb("VmRSS") / 1024)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.stages[name] = {"peak_rss_mb": _status_kb("VmRSS") / 1024, "seconds": 0.0}
        self.current = name
        t0 = time.perf_counter()
        print(f"[train-scale] {name} ...", flush=True)
        try:
            yield
        finally:
            st = self.stages[name]
            st["seconds"] = round(time.perf_counter() - t0, 1)
            st["peak_rss_mb"] = round(max(st["peak_rss_mb"], _status_kb("VmRSS") / 1024), 1)
            self.current = None
            print(
                f"[train-scale] {name}: {st['seconds']} s, peak RSS {st['peak_rss_mb']} MB",
                flush=True,
            )

    def close(self) -> dict[str, Any]:
        self._stop.set()
        return {
            "stages": self.stages,
            "peak_rss_mb": round(_status_kb("VmHWM") / 1024, 1),
            "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }


def _machine() -> dict[str, Any]:
    import torch

    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


# ----------------------------------------------------------------------------- the stand-in


class StandInEncoder:
    """A cheap stand-in for the teacher's encoder: every word a fixed random unit vector
    (seeded by its CRC32), a text the L2-normalised mean of its words' vectors, ``dim``
    wide. Texts that share words are near each other, so synthetic topics are visible to the
    teacher head as they are to MiniLM. Item texts go through the same on-disk cache as the
    real teacher's (:class:`trainer.teacher.vector_cache.ItemVectorCache`)."""

    def __init__(self, dim: int = 384, item_cache: Path | str | None = None) -> None:
        self.dim = dim
        self.path = Path("stand-in-hashed-words")
        self.max_tokens = 128
        self.seconds = 0.0
        self.texts_encoded = 0
        self.adapter = None
        self.words: dict[str, int] = {}
        self.table = np.zeros((0, dim), dtype=np.float32)
        self.cache = None
        if item_cache is not None:
            from trainer.teacher.vector_cache import ItemVectorCache

            self.cache = ItemVectorCache(item_cache, f"stand-in-words-{dim}", dim)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "stand-in",
            "name": "hashed-words",
            "dim": self.dim,
            "note": "hashed bag-of-words, not MiniLM (devtools/bench/train_scale.py)",
        }

    def _ids(self, words: list[str]) -> list[int]:
        new = [w for w in dict.fromkeys(words) if w not in self.words]
        if new:
            vecs = np.stack(
                [
                    np.random.default_rng(zlib.crc32(w.encode())).standard_normal(self.dim)
                    for w in new
                ]
            ).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            for w in new:
                self.words[w] = len(self.words)
            self.table = np.vstack([self.table, vecs])
        return [self.words[w] for w in words]

    def encode(
        self, texts: Sequence[str], *, progress: bool = False, adapted: bool = True
    ) -> np.ndarray:
        t0 = time.perf_counter()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for s in range(0, len(texts), 20_000):
            toks = [re.findall(r"[a-z]+", t.lower()) or ["<empty>"] for t in texts[s : s + 20_000]]
            lens = np.fromiter((len(t) for t in toks), dtype=np.int64, count=len(toks))
            flat = np.asarray(self._ids([w for t in toks for w in t]), dtype=np.int64)
            sums = np.add.reduceat(self.table[flat], np.cumsum(lens) - lens, axis=0)
            out[s : s + len(toks)] = sums / np.linalg.norm(sums, axis=1, keepdims=True).clip(1e-9)
        self.seconds += time.perf_counter() - t0
        self.texts_encoded += len(texts)
        return out

    def item_vector_cache(self) -> Any:
        return self.cache

    def encode_items(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        if self.cache is None:
            return self.encode(list(texts))
        return self.cache.encode(list(texts), lambda miss: self.encode(miss))


def _teacher(kind: str, item_cache: Path) -> Any:
    if kind == "minilm":
        from trainer.teacher.encoder import Teacher

        return Teacher(batch_size=256, item_cache=item_cache)
    return StandInEncoder(item_cache=item_cache)


def minilm_rate(texts: Sequence[str], n: int) -> dict[str, Any]:
    """MiniLM's encode rate (texts/s) on ``n`` of ``texts`` (batch 256, this process's threads)."""
    from trainer.teacher.encoder import Teacher

    t = Teacher(batch_size=256)
    sample = list(texts[:n])
    t0 = time.perf_counter()
    t.encode(sample)
    rate = len(sample) / max(time.perf_counter() - t0, 1e-9)
    return {"texts": len(sample), "texts_per_s": round(rate, 1)}


# ----------------------------------------------------------------------------- the world


def synthetic_world(n_items: int, n_users: int, n_events: int, seed: int):
    """``(interactions, items)`` of the synthetic generator, built chunk by chunk into
    preallocated arrays (no list of chunks)."""
    from trainer.data import Interactions, Items
    from trainer.data.synthetic import SyntheticConfig, synthetic_events, synthetic_items

    cfg = SyntheticConfig(
        n_items=n_items, n_users=n_users, n_events=n_events, seed=seed, chunk_size=500_000
    )
    ids: list[str] = []
    titles: list[str] = []
    texts: list[str] = []
    for a, b, c in synthetic_items(cfg):
        ids += a
        titles += b
        texts += c
    cols = {k: np.empty(n_events, np.int64) for k in ("user", "item", "ts", "event")}
    at = 0
    for chunk in synthetic_events(cfg):
        n = len(chunk["user"])
        for k in cols:
            cols[k][at : at + n] = chunk[k]
        at += n
    inter = Interactions(user_ids=[f"u{i}" for i in range(n_users)], **cols)
    return inter, Items(ids=ids, titles=titles, texts=texts)


def split_test_users(inter, n_test: int, seed: int):
    """``(training interactions, test user rows)``: ``n_test`` random users with at least 6
    events are held out of training entirely."""
    from trainer.data import Interactions

    counts = np.bincount(inter.user, minlength=len(inter.user_ids))
    eligible = np.flatnonzero(counts >= 6)
    test = np.sort(
        np.random.default_rng(seed + 5).choice(eligible, min(n_test, len(eligible)), replace=False)
    )
    keep = ~np.isin(inter.user, test)
    train = Interactions(
        user=inter.user[keep],
        item=inter.item[keep],
        ts=inter.ts[keep],
        event=inter.event[keep],
        user_ids=inter.user_ids,
    )
    return train, test


def held_out_ndcg(ck, inter, items, test_users: np.ndarray, train) -> dict[str, Any]:
    """NDCG@10 of the checkpoint's student and of popularity on held-out users (reveal k =
    1, 3, 5, truth the next 10, every item a candidate), both through chunked top-K."""
    import torch

    from trainer.student.features import student_metrics, topk_rank_metrics, warm_sets

    seqs_all = inter.sequences()
    n = len(items)
    row = np.array([ck.index_of[i] for i in items.ids], dtype=np.int64)  # item -> checkpoint row
    seqs = {u: (row[seqs_all[u][0]], seqs_all[u][1]) for u in test_users if u in seqs_all}
    dense_seqs = [seqs.get(u, (np.zeros(0, np.int64),) * 2) for u in range(len(inter.user_ids))]
    cells = warm_sets(dense_seqs, test_users, np.zeros(n, bool))
    id_index = np.where(np.arange(n) < ck.config.n_items, np.arange(n), -1)
    text = torch.as_tensor(np.asarray(ck.item_text_vecs, dtype=np.float32))
    pop = np.bincount(row[train.item], minlength=n).astype(np.float64)
    order = np.argsort(-pop, kind="stable")
    out: dict[str, Any] = {}
    for name, es in cells.items():
        s = student_metrics(ck.model, text, id_index, es)["ndcg@10"]
        ranked = np.stack(
            [[i for i in order[:40] if i not in set(h[0].tolist())][:20] for h in es.histories]
        )
        p = topk_rank_metrics(ranked, es.gts)["ndcg@10"]
        out[name] = {
            "users": len(es.gts),
            "student": round(float(s.mean()), 4),
            "popularity": round(float(p.mean()), 4),
        }
    return out


# ----------------------------------------------------------------------------- the parts


def part_paths(args: argparse.Namespace, meter: Meter) -> dict[str, Any]:
    """Seconds per training batch (256) of each path, by catalogue size."""
    import torch

    from coldstream.core.student import StudentConfig
    from trainer.student.training import (
        TrainConfig,
        build_examples,
        prefix_positions,
        train_student,
    )

    rows = []
    rng = np.random.default_rng(args.seed)
    for n in [int(x) for x in args.path_items.split(",")]:
        text = rng.standard_normal((n, 384)).astype(np.float32)
        seqs = [(rng.integers(0, n, 21), np.zeros(21, np.int64)) for _ in range(120)]
        pos = prefix_positions(seqs, max_prefix=20, extra_per_user=0, seed=0)[: 256 * 8]
        ex = build_examples(seqs, pos, 20)
        ex.kd_row = torch.arange(len(pos))
        teacher = torch.randn(len(pos), n) if n <= 200_000 else None
        for mode in ("full", "sampled"):
            with meter.stage(f"paths {mode} {n}"):
                cfg = TrainConfig(
                    epochs=1,
                    softmax=mode,
                    teacher="model" if teacher is not None else "none",
                    alpha=1.0 if teacher is not None else 0.0,
                    temperature=2.0,
                    seed=args.seed,
                )
                _, curve = train_student(
                    ex,
                    text_vecs=text,
                    id_index=np.arange(n),
                    catalogue=np.ones(n, bool),
                    student_config=StudentConfig(n_items=n, text_dim=384, dim=64, max_len=20),
                    config=cfg,
                    teacher_logits=teacher,
                    progress=False,
                    device="cpu",
                )
            batches = -(-len(pos) // cfg.batch_size)
            rows.append(
                {
                    "items": n,
                    "path": mode,
                    "kd": teacher is not None,
                    "seconds_per_batch": round(curve[0]["train_seconds"] / batches, 4),
                    "note": "KD targets on every row (the heaviest batch)",
                    "peak_rss_mb": meter.stages[f"paths {mode} {n}"]["peak_rss_mb"],
                }
            )
            print(rows[-1], flush=True)
        del text, teacher
    return {"batch_size": 256, "history": 20, "rows": rows}


def part_fit(args: argparse.Namespace, meter: Meter) -> dict[str, Any]:
    from coldstream.core.checkpoint import load_checkpoint
    from trainer.student.fitting import FitConfig, fit

    work = Path(args.work_dir)
    with meter.stage("world (synthetic items and events)"):
        inter, items = synthetic_world(args.items, args.users, args.events, args.seed)
        train, test_users = split_test_users(inter, args.test_users, args.seed)
    probe = None
    if args.teacher == "stand-in" and args.minilm_sample > 0:
        with meter.stage("MiniLM rate probe"):
            probe = minilm_rate(items.texts, args.minilm_sample)
            uniq = len(set(items.texts))
            probe["unique_item_texts"] = uniq
            probe["projected_encode_seconds"] = round(uniq / probe["texts_per_s"])
    teacher = _teacher(args.teacher, work / "item-vectors")
    cfg = FitConfig(
        quick=False,
        threads=args.threads,
        seed=args.seed,
        device="cpu",
        item_cache=str(work / "item-vectors"),
        teacher_prefixes_max=args.teacher_prefixes,
        val_users_max=1_000,
        head_epochs=20,
        train={
            "epochs": args.epochs,
            "max_prefix": 20,
            "extra_per_user": 2,
            "batch_size": 512,
            "patience": 2,
            "max_seconds": args.max_train_seconds,
        },
    )
    store = work / "fit-store"
    with meter.stage("fit (vectors, teacher head, top-K, student, checkpoint)"):
        path = fit(
            train, items, cfg, store_root=store, progress=not args.no_progress, teacher=teacher
        )
    with meter.stage("load checkpoint and score held-out users"):
        ck = load_checkpoint(path)
        quality = held_out_ndcg(ck, inter, items, test_users, train)
    m = ck.metrics
    return {
        "world": {
            "items": args.items,
            "users": args.users,
            "events": args.events,
            "training_events": len(train),
            "held_out_users": len(test_users),
            "generator": "trainer.data.synthetic (Zipf popularity, sessions, drifting interests)",
        },
        "teacher": {
            **teacher.describe(),
            "stand_in": args.teacher == "stand-in",
            "why": None
            if args.teacher != "stand-in"
            else "the real MiniLM encode of every item text does not fit the 60-minute budget "
            "on 2 CPU cores (see minilm_rate); the pipeline, the cache and every shape are the "
            "real ones, only the text vectors come from the stand-in",
            "minilm_rate": probe,
            "texts_encoded": teacher.texts_encoded,
            "item_texts_encoded_into_the_cache": (
                teacher.item_vector_cache().encoded
                if teacher.item_vector_cache() is not None
                else None
            ),
        },
        "fit": {
            "softmax": m.get("softmax"),
            "epochs": m.get("epochs"),
            "epoch_train_seconds": m.get("epoch_train_seconds"),
            "stage_seconds": m.get("stage_seconds"),
            "val_ndcg@10_mean_k135": m.get("val_ndcg@10_mean_k135"),
            "val_curve": m.get("val_curve"),
            "teacher_prefixes": m.get("teacher_prefixes"),
            "teacher_head_items": m.get("teacher_head_items"),
            "teacher_head_val_ndcg10": m.get("teacher_head_val_ndcg10"),
            "train_seconds": m.get("train_seconds"),
            "checkpoint": str(path),
            "checkpoint_bytes": sum(f.stat().st_size for f in Path(path).iterdir()),
            "config": {
                "train": cfg.train,
                "student": cfg.student,
                "teacher_prefixes_max": cfg.teacher_prefixes_max,
                "val_users_max": cfg.val_users_max,
                "head_items": cfg.head_items,
                "head_val_users": cfg.head_val_users,
                "head_epochs": cfg.head_epochs,
                "negatives": 1024,
                "teacher_topk": 100,
            },
        },
        "held_out_ndcg@10": quality,
    }


def part_cycle(args: argparse.Namespace, meter: Meter) -> dict[str, Any]:
    import torch

    from coldstream.core.checkpoint import save_checkpoint
    from coldstream.core.signing import Signer
    from coldstream.core.student import Student, StudentConfig
    from trainer.data.synthetic import SyntheticConfig, synthetic_events, synthetic_items
    from trainer.service.buffer import EventBuffer
    from trainer.service.loop import TrainerService
    from trainer.settings import TrainerSettings

    work = Path(args.work_dir) / "cycle"
    # the bench's own scratch (keys, model store): a re-run starts from a fresh v1, and
    # Signer.write refuses to overwrite a key
    shutil.rmtree(work, ignore_errors=True)
    n, n_new = args.cycle_items, args.cycle_items // 10
    with meter.stage("cycle world (items, v1, buffer)"):
        cfg = SyntheticConfig(
            n_items=n, n_users=args.cycle_users, n_events=args.cycle_events, seed=args.seed
        )
        ids, titles, texts = [], [], []
        for a, b, c in synthetic_items(cfg):
            ids += a
            titles += b
            texts += c
        teacher = _teacher(args.teacher, Path(args.work_dir) / "item-vectors")
        vecs = teacher.encode_items(texts[: n - n_new])
        signer = Signer.generate()
        key_file, _ = signer.write(work / "keys")
        store = work / "store"
        torch.manual_seed(0)
        model = Student(StudentConfig(n_items=n - n_new, text_dim=teacher.dim, dim=64, max_len=30))
        save_checkpoint(
            store,
            model=model,
            item_ids=ids[: n - n_new],
            item_text_vecs=vecs,
            item_titles=titles[: n - n_new],
            metrics={"note": "random v1 (bench)"},
            teacher=teacher.describe(),
            signer=signer,
        )
        del vecs, model
        buffer = EventBuffer(args.cycle_events)
        for chunk in synthetic_events(cfg):
            for u, it, ev, ts in zip(
                chunk["user"].tolist(),
                chunk["item"].tolist(),
                chunk["event"].tolist(),
                chunk["ts"].tolist(),
                strict=True,
            ):
                buffer.add(f"su{u}", ids[it], ev, float(ts))
    settings = TrainerSettings(
        model_store=store,
        signing_key_file=key_file,
        threads=args.threads,
        device="cpu",
        item_vector_cache=Path(args.work_dir) / "item-vectors",
        buffer_events=args.cycle_events,
    )
    service = TrainerService(settings, teacher=teacher)
    with meter.stage("service load"):
        service.load()
    with meter.stage(f"embed {n_new} new items"):
        service.embed_items({ids[i]: texts[i] for i in range(n - n_new, n)})
    cycles = []
    for c in (1, 2):
        before = teacher.texts_encoded
        cache = teacher.item_vector_cache()
        items_before = cache.encoded if cache is not None else None
        with meter.stage(f"cycle {c}"):
            res, path = service.cycle(buffer.snapshot(), dict(service.new_items))
        if path is not None:
            from coldstream.core.checkpoint import load_checkpoint

            service.ck = load_checkpoint(path)
        service.cycles += 1
        cycles.append(
            {
                "cycle": c,
                "seconds": meter.stages[f"cycle {c}"]["seconds"],
                "peak_rss_mb": meter.stages[f"cycle {c}"]["peak_rss_mb"],
                "result_seconds": round(res.seconds, 1),
                "softmax": "sampled" if n > settings.full_softmax_max_items else "full",
                "gate": res.gate.as_dict(),
                "promoted_to": None if path is None else Path(path).name,
                "texts_encoded_by_the_teacher": teacher.texts_encoded - before,
                "item_texts_encoded": None if cache is None else cache.encoded - items_before,
                "train_users": res.metrics.get("train_users"),
                "teacher_prefixes": res.metrics.get("teacher_prefixes"),
                "distill_loss": res.metrics.get("distill_loss"),
                "topk_agreement@10": res.metrics.get("topk_agreement@10"),
                "epochs": res.metrics.get("epochs"),
            }
        )
        print(cycles[-1], flush=True)
    return {
        "items": n,
        "new_items": n_new,
        "buffer_events": len(buffer),
        "users": args.cycle_users,
        "teacher": {**teacher.describe(), "stand_in": args.teacher == "stand-in"},
        "settings": {
            "softmax": settings.softmax,
            "full_softmax_max_items": settings.full_softmax_max_items,
            "sampled_negatives": settings.sampled_negatives,
            "teacher_topk": settings.teacher_topk,
            "teacher_prefixes": settings.teacher_prefixes,
            "cycle_epochs": settings.cycle_epochs,
        },
        "cycles": cycles,
        "note": "cycle 1 fits the teacher head on the buffer (no saved head yet); cycle 2 "
        "reuses it, as every later cycle of the service does",
    }


def part_compare(args: argparse.Namespace, meter: Meter) -> dict[str, Any]:
    from trainer.evaluation.softmax_compare import CompareConfig, compare_splits, markdown

    cfg = CompareConfig(
        seed=args.seed,
        threads=args.threads,
        item_cache=str(Path(args.work_dir) / "item-vectors"),
        negatives=args.compare_negatives,
        teacher_topk=args.compare_topk,
        progress=not args.no_progress,
    )
    seeds = [int(x) for x in str(args.compare_seeds).split(",") if x.strip()]
    if not seeds:
        raise SystemExit("--compare-seeds: give at least one seed, e.g. 0,1,2,3,4")
    with meter.stage(f"compare (MovieLens-100K, full vs sampled, {len(seeds)} splits)"):
        report = compare_splits(cfg, seeds)
    print(markdown(report), flush=True)
    return report


# ----------------------------------------------------------------------------- the command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--part", choices=[*PARTS, "all"], default="fit", help="what to measure")
    p.add_argument("--items", type=int, default=1_000_000, help="fit: catalogue size")
    p.add_argument("--users", type=int, default=200_000, help="fit: users")
    p.add_argument("--events", type=int, default=2_000_000, help="fit: events")
    p.add_argument(
        "--teacher-prefixes", type=int, default=5_000, help="fit: prefixes the teacher scores"
    )
    p.add_argument("--test-users", type=int, default=2_000, help="fit: users held out for NDCG")
    p.add_argument("--epochs", type=int, default=2, help="fit: most student epochs")
    p.add_argument(
        "--max-train-seconds", type=float, default=2400.0, help="fit: the student's time budget"
    )
    p.add_argument(
        "--teacher",
        choices=["stand-in", "minilm"],
        default="stand-in",
        help="fit and cycle: the text encoder (compare always uses MiniLM)",
    )
    p.add_argument(
        "--minilm-sample", type=int, default=512, help="fit: texts to time MiniLM on (0: skip)"
    )
    p.add_argument("--path-items", default="10000,50000,200000", help="paths: catalogue sizes")
    p.add_argument("--cycle-items", type=int, default=100_000, help="cycle: catalogue size")
    p.add_argument("--cycle-events", type=int, default=100_000, help="cycle: buffer events")
    p.add_argument("--cycle-users", type=int, default=20_000, help="cycle: users")
    p.add_argument(
        "--compare-negatives", type=int, default=64, help="compare: uniform negatives per batch"
    )
    p.add_argument("--compare-topk", type=int, default=20, help="compare: teacher top-K")
    p.add_argument(
        "--compare-seeds",
        default="0,1,2,3,4",
        help="compare: the splits (one per seed), pooled (comma-separated)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--seed", type=int, default=0, help="seed of worlds, splits and training")
    p.add_argument(
        "--work-dir",
        default=".cache/bench-train-scale",
        help="model stores and the item-vector cache",
    )
    p.add_argument("--out", default="reports/bench-train-scale.json", help="the JSON report")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")


def _child_argv(args: argparse.Namespace, part: str) -> list[str]:
    argv = [sys.executable, "-m", "coldstream", "bench", "train-scale", "--part", part]
    for name, value in vars(args).items():
        if name in ("part", "func", "command", "bench_command") or value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv += [flag] if value else []
        else:
            argv += [flag, str(value)]
    return argv


def _write(out: Path, part: str, section: dict[str, Any]) -> None:
    report = json.loads(out.read_text()) if out.is_file() else {}
    report[part] = section
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str) + "\n")
    tmp.replace(out)


def _print_table(part: str, section: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    m = section["measured"]
    t = Table(
        title=f"train-scale {part}: {m['wall_seconds']} s, peak RSS {m['peak_rss_mb']:,.0f} MB"
    )
    for c in ("stage", "seconds", "peak RSS MB"):
        t.add_column(c, justify="right" if c != "stage" else "left")
    for name, st in m["stages"].items():
        t.add_row(name, f"{st['seconds']:,.1f}", f"{st['peak_rss_mb']:,.0f}")
    Console().print(t)


def run(args: argparse.Namespace) -> int:
    """``coldstream bench train-scale``."""
    import torch

    if args.part == "all":
        for part in PARTS:
            rc = subprocess.call(_child_argv(args, part))
            if rc:
                return rc
        return ExitCode.OK
    torch.set_num_threads(max(1, args.threads))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    meter = Meter()
    start = _machine()
    t0 = time.perf_counter()
    section = {
        "paths": part_paths,
        "fit": part_fit,
        "cycle": part_cycle,
        "compare": part_compare,
    }[args.part](args, meter)
    measured = meter.close()
    section["measured"] = {
        **measured,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "start": start,
        "end": _machine(),
        "command": " ".join(["coldstream", *sys.argv[1:]]),
    }
    _write(Path(args.out), args.part, section)
    _print_table(args.part, section)
    print(
        f"[train-scale] {args.part}: {section['measured']['wall_seconds']} s, peak RSS "
        f"{measured['peak_rss_mb']} MB -> {args.out}",
        flush=True,
    )
    return ExitCode.OK
