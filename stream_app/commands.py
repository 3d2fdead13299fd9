"""The serving subcommand of ``coldstream``: ``worker`` (registered by :mod:`coldstream.cli`).

Heavy imports (torch, faust) happen inside the command so that ``coldstream --help`` is instant.
"""

from __future__ import annotations

import argparse

WORKER_OPTIONS = (
    "bootstrap",
    "topic_prefix",
    "app_id",
    "model_store",
    "device",
    "web_port",
    "batch_size",
    "batch_window_ms",
    "k",
    "log_level",
    "threads",
    "profile",
    "fetch_max_wait_ms",
    "session_timeout_s",
    "web_bind",
    "fast_path",
)


def _settings(args: argparse.Namespace):  # noqa: ANN202 - lazy import
    from stream_app.settings import Settings

    overrides = {name: getattr(args, name, None) for name in WORKER_OPTIONS}
    return Settings().with_overrides(**overrides)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``worker`` subparser."""
    p = sub.add_parser("worker", help="run one serving worker (Faust)")
    p.add_argument("--bootstrap", help="broker bootstrap servers (env COLDSTREAM_BOOTSTRAP)")
    p.add_argument("--topic-prefix", help="topic name prefix (env COLDSTREAM_TOPIC_PREFIX)")
    p.add_argument("--app-id", help="consumer group / changelog prefix (env COLDSTREAM_APP_ID)")
    p.add_argument("--model-store", help="model store root (env COLDSTREAM_MODEL_STORE)")
    p.add_argument("--device", help="auto, cpu, cuda (env COLDSTREAM_DEVICE)")
    p.add_argument("--web-port", type=int, help="web port (env COLDSTREAM_WEB_PORT)")
    p.add_argument("--web-bind", help="web bind address (env COLDSTREAM_WEB_BIND)")
    p.add_argument("--batch-size", type=int, help="micro-batch size (env COLDSTREAM_BATCH_SIZE)")
    p.add_argument(
        "--batch-window-ms", type=float, help="micro-batch window (env COLDSTREAM_BATCH_WINDOW_MS)"
    )
    p.add_argument("--k", type=int, help="items per recommendation (env COLDSTREAM_K)")
    p.add_argument("--threads", type=int, help="torch/FAISS threads (env COLDSTREAM_THREADS)")
    p.add_argument(
        "--profile", choices=["dev", "prod"], help="timeouts profile (env COLDSTREAM_PROFILE)"
    )
    p.add_argument(
        "--fetch-max-wait-ms",
        type=int,
        help="consumer fetch wait (env COLDSTREAM_FETCH_MAX_WAIT_MS)",
    )
    p.add_argument(
        "--session-timeout-s",
        type=float,
        help="group session timeout (env COLDSTREAM_SESSION_TIMEOUT_S)",
    )
    p.add_argument("--log-level", help="log level (env COLDSTREAM_LOG_LEVEL)")
    p.add_argument(
        "--fast-path",
        dest="fast_path",
        action="store_true",
        default=None,
        help="consume in micro-batches straight from the fetch loop (default; env COLDSTREAM_FAST_PATH)",
    )
    p.add_argument(
        "--no-fast-path",
        dest="fast_path",
        action="store_false",
        default=None,
        help="consume through a stock Faust agent (env COLDSTREAM_FAST_PATH=false)",
    )
    p.set_defaults(func=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    from stream_app import worker

    return worker.run(_settings(args))
