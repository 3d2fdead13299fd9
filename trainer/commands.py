"""Training-side subcommands of ``coldstream`` (registered by :mod:`coldstream.cli`).

``train`` and ``evaluate`` live here; heavy imports (torch, transformers) happen inside
each subcommand so ``coldstream --help`` stays instant. Defaults come from
:class:`trainer.settings.TrainerSettings` (env ``COLDSTREAM_TRAINER_*``); options override.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``evaluate`` subparsers."""
    p = sub.add_parser(
        "train",
        help="train a student on MovieLens-100K and write a checkpoint to the model store",
        description="Train the student (teacher adaptation + distillation unless --quick) on "
        "MovieLens-100K and write a versioned, checksummed checkpoint.",
    )
    p.add_argument(
        "--model-store",
        "--out",
        dest="model_store",
        type=Path,
        default=None,
        help="model store root (env COLDSTREAM_MODEL_STORE, default model-store/: the "
        "store the worker serves)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="bootstrap mode: CE student only, no teacher adaptation (about 2 min on 2 CPUs)",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder with ml-100k.inter and ml-100k.item (default: the recbole package's)",
    )
    p.add_argument("--teacher", type=Path, default=None, help="local Hugging Face encoder folder")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None, help="most student epochs (early stopping)")
    p.add_argument("--version", type=int, default=None, help="checkpoint version (default: next)")
    p.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "evaluate",
        help="run the cold-start evaluation protocol and write JSON/Markdown/PNG reports",
        description="Popularity, ItemKNN, zero-shot and adapted teacher, and three students (CE, "
        "uniform-teacher control, KD) on one MovieLens-100K split; reveals k=1,3,5 "
        "events of each test user, and measures cold items. About 15-25 min on 2 CPUs.",
    )
    e.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report path (.json; .md and .png beside it; default reports/coldstart-ml100k.json)",
    )
    e.add_argument("--seed", type=int, default=None, help="split / training seed")
    e.add_argument("--teacher", type=Path, default=None, help="local Hugging Face encoder folder")
    e.add_argument("--threads", type=int, default=None)
    e.add_argument(
        "--smoke",
        action="store_true",
        help="tiny configuration (one epoch, one KD setting): checks the pipeline in ~1 min; "
        "its numbers mean nothing",
    )
    e.set_defaults(func=cmd_evaluate)

    t = sub.add_parser(
        "trainer",
        help="run the trainer service: new-item vectors, re-distillation, gate, publish",
        description="Consume clicks/purchases/items in the trainer's own group; embed new items "
        "(item-vectors); re-distil, gate and announce signed model-updates "
        "(trainer/service.py). Settings: python -m trainer.settings (the broker, topic, "
        "store and key variables are the worker's; COLDSTREAM_TRAINER_* the trainer's own).",
    )
    t.add_argument("--bootstrap", default=None, help="env COLDSTREAM_BOOTSTRAP")
    t.add_argument("--topic-prefix", default=None, help="env COLDSTREAM_TOPIC_PREFIX")
    t.add_argument("--group-id", default=None, help="env COLDSTREAM_TRAINER_GROUP_ID")
    t.add_argument("--model-store", type=Path, default=None, help="env COLDSTREAM_MODEL_STORE")
    t.add_argument(
        "--cycle-events", type=int, default=None, help="env COLDSTREAM_TRAINER_CYCLE_EVENTS"
    )
    t.add_argument(
        "--cycle-seconds", type=float, default=None, help="env COLDSTREAM_TRAINER_CYCLE_SECONDS"
    )
    t.add_argument(
        "--min-buffer-events",
        type=int,
        default=None,
        help="env COLDSTREAM_TRAINER_MIN_BUFFER_EVENTS",
    )
    t.add_argument(
        "--teacher-prefixes", type=int, default=None, help="env COLDSTREAM_TRAINER_TEACHER_PREFIXES"
    )
    t.add_argument(
        "--metrics-port", type=int, default=None, help="env COLDSTREAM_TRAINER_METRICS_PORT"
    )
    t.add_argument("--threads", type=int, default=None, help="env COLDSTREAM_TRAINER_THREADS")
    t.set_defaults(func=cmd_trainer)


def cmd_trainer(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from trainer.service import run
    from trainer.settings import get_settings

    over = {
        k: getattr(args, k)
        for k in (
            "bootstrap",
            "topic_prefix",
            "group_id",
            "model_store",
            "cycle_events",
            "cycle_seconds",
            "min_buffer_events",
            "teacher_prefixes",
            "metrics_port",
            "threads",
        )
    }
    return run(get_settings().with_overrides(**over))


def _check_dir(path: Path | None, what: str, needs: tuple[str, ...] = ()) -> None:
    from coldstream.core.errors import UsageError

    if path is None:
        return
    if not path.is_dir():
        raise UsageError(f"{what} {path} is not a directory")
    for n in needs:
        if not (path / n).is_file():
            raise UsageError(f"{what} {path} lacks {n}")


def cmd_train(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from coldstream.core.errors import UsageError
    from trainer.settings import get_settings

    s = get_settings()
    _check_dir(args.data, "data folder", ("ml-100k.inter", "ml-100k.item"))
    _check_dir(args.teacher or s.teacher_path, "teacher folder", ("config.json",))
    out = args.model_store or s.model_store
    if out.exists() and not out.is_dir():
        raise UsageError(f"model store root {out} exists and is not a directory")
    from trainer.data import load_movielens
    from trainer.fitting import FitConfig, fit

    t0 = time.perf_counter()
    inter, items = load_movielens(args.data)
    train = {"epochs": args.epochs} if args.epochs else {}
    cfg = FitConfig(
        quick=args.quick,
        teacher_path=str(args.teacher or s.teacher_path or "") or None,
        device=args.device or s.device,
        threads=s.threads,
        seed=s.seed if args.seed is None else args.seed,
        train=train,
        version=args.version,
    )
    path = fit(inter, items, cfg, store_root=out, progress=s.progress)
    print(f"checkpoint {path} ({time.perf_counter() - t0:.0f} s)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from coldstream.core.errors import UsageError
    from trainer.settings import get_settings

    s = get_settings()
    _check_dir(args.teacher or s.teacher_path, "teacher folder", ("config.json",))
    out = args.out or s.report
    if out.parent.exists() and not out.parent.is_dir():
        raise UsageError(f"report folder {out.parent} is not a directory")
    from trainer.evaluate import EvalConfig, run
    from trainer.reports import markdown_table

    cfg = EvalConfig(
        seed=s.seed if args.seed is None else args.seed,
        cold_share=s.cold_share,
        teacher_path=str(args.teacher or s.teacher_path or "") or None,
        threads=args.threads or s.threads,
        progress=s.progress,
        device="cpu" if s.device == "auto" else s.device,
    )
    if args.smoke:
        cfg.train = {"epochs": 1, "max_prefix": 10, "extra_per_user": 0}
        cfg.teacher_first, cfg.teacher_random_more, cfg.kd_grid, cfg.n_boot = (
            1,
            0,
            [(1.0, 2.0)],
            200,
        )
    t0 = time.perf_counter()
    report = run(cfg, out)
    print(markdown_table(report))
    stem = out.with_suffix("")
    print(
        f"\nreport: {stem}.json, {stem}.md, {stem}.png ({time.perf_counter() - t0:.0f} s)",
        file=sys.stderr,
    )
    return 0
