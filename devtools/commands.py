"""Development subcommands of ``coldstream`` (registered by :mod:`coldstream.cli` when the
``dev`` extra is installed): ``broker``, ``demo``, ``replay``, ``send``, ``tail``, ``bench
serve|recommend|faults|inference|swap|soak`` and ``evaluate --stream``.

Every parser is built here, in one place; each command module exposes
``add_arguments(parser)`` and ``run(args)``. The command modules import nothing heavy at
module level (torch, faust, transformers are imported inside ``run``), so that building
the parsers keeps ``coldstream --help`` quick. Every option's help shows its default (an option
whose default is ``None`` says in its help what happens then).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from coldstream.core.errors import ExitCode, Unavailable, UsageError

__all__ = ["HelpFormatter", "register"]


class SubParsers(Protocol):
    """What ``parser.add_subparsers()`` returns (the parts of it used here)."""

    choices: dict[str, argparse.ArgumentParser]

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: ...)`` after every option's help, except where the default is ``None``:
    there the help text itself says what happens."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


# (name, module, help) of the commands under ``coldstream`` and ``coldstream bench``
COMMANDS = (
    (
        "quickstart",
        "devtools.quickstart",
        "your CSVs to a running recommender: train, embedded broker, worker, replay",
    ),
    ("demo", "devtools.demo", "embedded broker + model + worker + replay, with a live table"),
    ("replay", "devtools.replay", "replay MovieLens-100K or synthetic events into the topics"),
    ("send", "devtools.send", "send your own event(s), checked with the worker's rules first"),
    ("tail", "devtools.tail", "read recommendations or the DLQ, with item titles"),
)
BENCHMARKS = (
    (
        "serve",
        "devtools.bench.serve",
        "throughput and latency of the running pipeline vs a pass-through",
    ),
    (
        "recommend",
        "devtools.bench.recommend",
        "users/s of batched recommend on a large random index",
    ),
    (
        "search",
        "devtools.bench.search",
        "search with seen items excluded: old vs new, µs per user, recall@10 at 100k and 1M items",
    ),
    (
        "faults",
        "devtools.faults.command",
        "fault scenarios: kill -9, SIGTERM, rebalance, broker restart, "
        "bad input, breaker, burst, forget, hostile checkpoints",
    ),
    ("inference", "devtools.bench.inference", "per-user inference: student vs teacher"),
    ("swap", "devtools.bench.swap", "p99 latency during a hot swap; one trainer cycle"),
    ("soak", "devtools.bench.soak", "long steady stream through broker, worker and trainer"),
    ("sessions", "devtools.bench.sessions", "10M sessions in the store; recovery after kill -9"),
    ("delivery", "devtools.bench.delivery", "throughput and kill -9 duplicates per delivery mode"),
    ("eos", "devtools.bench.eos", "exactly_once vs at_least_once: flat-out events/s, p50/p99"),
    (
        "profile",
        "devtools.bench.profile",
        "CPU microseconds per event by stage (py-spy samples of a draining worker)",
    ),
    (
        "pod",
        "devtools.bench.pod",
        "one 2-core pod flat out: 1 process x 1 or 2 threads vs 2 processes",
    ),
    (
        "latency",
        "devtools.bench.latency",
        "fixed-rate latency per batch window and batches in flight, both guarantees",
    ),
    (
        "codecs",
        "devtools.bench.codecs",
        "per-event decode and encode: old vs new codecs, microseconds",
    ),
    (
        "blas",
        "devtools.bench.blas",
        "FAISS exact search per batch size: one scan per query vs one matrix product",
    ),
    (
        "encoder",
        "devtools.bench.encoder",
        "the student's user encoder on CPU per batch size: torch vs numpy, microseconds",
    ),
    (
        "rollout-sim",
        "devtools.bench.rollout_sim",
        "rollout judge by simulation: error rates, time to a decision (no broker)",
    ),
    (
        "rollout",
        "devtools.bench.rollout",
        "canaries judged on live traffic on Apache Kafka: bad rolled back, good promoted, "
        "neutral, shadow vs live",
    ),
    (
        "train-scale",
        "devtools.bench.train_scale",
        "training at catalogue scale: paths, a 1M-item fit, 100k-item cycles, sampled vs full",
    ),
)


def _add(sub: SubParsers, name: str, module: str, text: str) -> argparse.ArgumentParser:
    mod = importlib.import_module(module)
    p = sub.add_parser(
        name,
        help=text,
        description=(mod.__doc__ or text).strip().split("\n\n")[0],
        formatter_class=HelpFormatter,
    )
    mod.add_arguments(p)
    p.set_defaults(func=mod.run)
    return p


def register(sub: SubParsers) -> None:
    """Add ``broker``, ``demo``, ``replay``, ``send``, ``tail``, ``bench ...`` and the
    ``--stream`` mode of ``evaluate``."""
    p = sub.add_parser(
        "broker",
        help="run the embedded Tansu broker with the coldstream topics",
        description="Start the embedded Tansu broker (memory storage: a restart loses "
        "everything) on a loopback port, create the topics of kafka/topics.yaml and print the "
        "export lines that point the next commands at it (also written to --env-file). "
        "--background: start it detached and print only those lines, for "
        'eval "$(coldstream broker --background)".',
        formatter_class=HelpFormatter,
    )
    p.add_argument("--port", type=int, default=None, help="listen port (default: a free one)")
    p.add_argument("--topic-prefix", default="", help="prefix of the created topics")
    p.add_argument(
        "--env-file",
        type=Path,
        default=BROKER_ENV,
        help="where the export lines are written while the broker runs (removed at its stop)",
    )
    p.add_argument(
        "--background",
        action="store_true",
        help="start the broker detached (its pid in .coldstream/broker.pid, its log beside), "
        "print the export lines and return",
    )
    p.set_defaults(func=cmd_broker)

    for name, module, text in COMMANDS:
        _add(sub, name, module, text)

    bench = sub.add_parser(
        "bench",
        help="benchmarks: serve, recommend, faults, inference, swap, soak",
        formatter_class=HelpFormatter,
    )
    bsub: SubParsers = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    for name, module, text in BENCHMARKS:
        _add(bsub, name, module, text)

    if "evaluate" in sub.choices:  # the trainer's command, extended with the system-level mode
        _extend_evaluate(sub.choices["evaluate"])


def _extend_evaluate(e: argparse.ArgumentParser) -> None:
    g = e.add_argument_group(
        "--stream: prequential evaluation through the running system (devtools/prequential.py)",
        "Trains a bootstrap student on the first --cut-share of the timeline, starts a broker, a worker "
        "and the trainer service, replays the rest of MovieLens-100K in time order and scores the "
        "worker's recommendations for new users after their 1st, 2nd, 3rd and 5th event (truth: their "
        "next 10 events). Default report reports/prequential-ml100k.json; ~8-12 min on 2 CPUs.",
    )
    g.add_argument(
        "--stream",
        action="store_true",
        help="run the prequential stream evaluation (default: False, the offline protocol)",
    )
    g.add_argument(
        "--bootstrap",
        default=None,
        help="use this broker (default: start Apache Kafka from kafka/jars, else Tansu)",
    )
    g.add_argument(
        "--broker",
        choices=["auto", "kafka", "tansu"],
        default="auto",
        help="broker to start without --bootstrap (default: auto = kafka when its jars are there)",
    )
    g.add_argument(
        "--cut-share", type=float, default=None, help="past share of the timeline (default: 0.6)"
    )
    g.add_argument(
        "--max-events",
        type=int,
        default=None,
        help="stream events replayed after the cut (default: 15000; 0: all)",
    )
    g.add_argument("--rate", type=float, default=None, help="replay events/s (default: 100)")
    g.add_argument(
        "--cycle-events",
        type=int,
        default=None,
        help="trainer cycle every N events (default: 3000)",
    )
    g.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="bootstrap cache and run folders (default: .cache/prequential)",
    )
    offline = e.get_default("func")

    def dispatch(args: argparse.Namespace) -> int:
        return cmd_evaluate_stream(args) if args.stream else offline(args)

    e.set_defaults(func=dispatch)


BROKER_ENV = Path(".coldstream") / "broker.env"
"""Where ``coldstream broker`` writes its export lines (relative to the working directory)."""


def broker_exports(bootstrap: str, topic_prefix: str = "") -> list[str]:
    """The export lines that point the next commands at an embedded broker."""
    lines = [
        f"export COLDSTREAM_BOOTSTRAP={bootstrap}",
        "export COLDSTREAM_IDEMPOTENT_PRODUCER=false  # Tansu gives out no producer ids",
        "export COLDSTREAM_ALLOW_UNSIGNED_CHECKPOINTS=true  # dev: serve a model trained "
        "without keys",
        "export COLDSTREAM_FETCH_MAX_WAIT_MS=100  # idle worker ~2% of a core instead of ~10%",
    ]
    if topic_prefix:
        lines.append(f"export COLDSTREAM_TOPIC_PREFIX={topic_prefix}")
    return lines


def _broker_background(args: argparse.Namespace) -> int:
    """``coldstream broker --background``: the same command, detached; returns once its
    export lines are written, and prints them."""
    import subprocess

    env_file: Path = args.env_file
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.unlink(missing_ok=True)
    log = env_file.parent / "broker.log"
    argv = [sys.executable, "-m", "coldstream", "broker", "--env-file", str(env_file)]
    if args.port is not None:
        argv += ["--port", str(args.port)]
    if args.topic_prefix:
        argv += ["--topic-prefix", args.topic_prefix]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    (env_file.parent / "broker.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 60
    while not env_file.is_file():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            if proc.poll() is None:
                proc.kill()
            raise Unavailable(f"the broker did not start: {tail[0]} (log {log})")
        time.sleep(0.1)
    print(env_file.read_text(), end="")
    print(f"# broker pid {proc.pid}, log {log}; stop it: kill {proc.pid}", file=sys.stderr)
    return ExitCode.OK


def cmd_broker(args: argparse.Namespace) -> int:
    import asyncio
    import signal
    import threading

    from coldstream.core.preflight import check_port
    from coldstream.core.topics import create_topics
    from devtools.brokers import BrokerError, TansuBroker

    if args.port is not None:
        if not 1 <= args.port <= 65535:
            raise UsageError(f"--port {args.port}: must be in 1..65535")
        check_port("127.0.0.1", args.port, what="broker", flag="--port")
    if args.background:
        return _broker_background(args)
    broker = TansuBroker(port=args.port)
    try:
        broker.start()
    except BrokerError as e:
        raise Unavailable(f"the Tansu broker did not start: {str(e).splitlines()[0]}") from None
    env_file: Path = args.env_file
    try:
        asyncio.run(create_topics(broker.bootstrap, replication_factor=1, prefix=args.topic_prefix))
        exports = broker_exports(broker.bootstrap, args.topic_prefix)
        print(broker.bootstrap, flush=True)
        print(
            f"Tansu broker ready at {broker.bootstrap} (memory storage); Ctrl-C to stop. "
            f"For the next commands, in another shell (or: source {env_file}):",
            flush=True,
        )
        for line in exports:
            print(f"  {line}", flush=True)
        env_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = env_file.with_name(env_file.name + ".tmp")
        tmp.write_text("\n".join(exports) + "\n")
        tmp.replace(env_file)  # whole or absent: --background waits for it
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(1.0):
                if not broker.running:
                    print("broker exited", flush=True)
                    return ExitCode.FAILURE
        except KeyboardInterrupt:
            pass
    finally:
        env_file.unlink(missing_ok=True)
        broker.stop()
    return ExitCode.OK


def cmd_evaluate_stream(args: argparse.Namespace) -> int:
    """``coldstream evaluate --stream`` (:mod:`devtools.prequential`)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from coldstream.core.errors import UsageError
    from devtools.prequential import StreamEvalConfig, markdown, run
    from trainer.settings import get_settings

    s = get_settings()
    if args.teacher is not None and not (args.teacher / "config.json").is_file():
        raise UsageError(f"teacher folder {args.teacher} lacks config.json")

    cfg = StreamEvalConfig(
        seed=s.seed if args.seed is None else args.seed,
        bootstrap=args.bootstrap,
        broker=args.broker,
        threads=args.threads or s.threads,
        progress=s.progress,
        teacher_path=str(args.teacher or s.teacher_path or "") or None,
    )
    for name in ("cut_share", "max_events", "rate", "cycle_events"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    if args.work_dir is not None:
        cfg.work_dir = str(args.work_dir)
    if not 0.05 <= cfg.cut_share <= 0.95:
        raise UsageError("--cut-share must be between 0.05 and 0.95")
    if cfg.rate <= 0 or cfg.max_events < 0:
        raise UsageError("--rate must be > 0 and --max-events >= 0")
    out = args.out or Path("reports/prequential-ml100k.json")
    t0 = time.perf_counter()
    report = run(cfg, out)
    print(markdown(report))
    stem = out.with_suffix("")
    print(
        f"\nreport: {stem}.json, {stem}.md, {stem}.png ({time.perf_counter() - t0:.0f} s)",
        file=sys.stderr,
    )
    return ExitCode.OK
