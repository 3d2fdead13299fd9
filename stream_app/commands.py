"""The serving subcommand of ``coldstream``: ``worker`` (registered by :mod:`coldstream.cli`).

Heavy imports (torch, faust) happen inside the command so that ``coldstream --help`` is
instant. Every flag is a field of :class:`stream_app.settings.Settings`: its help shows the
env var and the default, and a bad value (flag or env var) is one line naming both
(:func:`coldstream.core.usage.load_settings`).
"""

from __future__ import annotations

import argparse
from typing import Any

from coldstream.core.usage import HelpFormatter, add_setting_flags

WORKER_OPTIONS = (
    "bootstrap",
    "topic_prefix",
    "app_id",
    "model_store",
    "device",
    "web_port",
    "web_bind",
    "batch_size",
    "batch_window_ms",
    "k",
    "threads",
    "profile",
    "fetch_max_wait_ms",
    "fetch_min_bytes",
    "session_timeout_s",
    "log_level",
    "broker_wait_s",
    "fast_path",
    "idempotent_producer",
    "processing_guarantee",
    "allow_unsigned_checkpoints",
    "verify_keys_file",
    "max_uncommitted_batches",
    "max_uncommitted_events",
    "session_store",
    "data_dir",
    "standby_replicas",
    "session_ttl_s",
)

HELP = {
    "device": "torch device: auto (cuda when visible, else cpu), cpu, cuda, cuda:N",
    "web_port": "port of /metrics, /healthz, /ready, /recommend",
    "fast_path": "consume in micro-batches straight from the fetch loop "
    "(--no-fast-path: a stock Faust agent)",
}


def _settings_class() -> type:
    from stream_app.settings import Settings

    return Settings


SETTINGS = {"worker": _settings_class}
"""``coldstream settings worker`` (:mod:`coldstream.admin`)."""


def settings_from(args: argparse.Namespace) -> Any:
    """The worker's settings: environment, then the flags given; one-line errors."""
    from coldstream.core.usage import load_settings
    from stream_app.settings import Settings

    overrides = {name: getattr(args, name, None) for name in WORKER_OPTIONS}
    return load_settings(Settings, flags=WORKER_OPTIONS, **overrides)


def register(sub: Any) -> None:
    """Add the ``worker`` subparser."""
    from stream_app.settings import Settings

    p = sub.add_parser(
        "worker",
        help="run one serving worker (Faust)",
        description="Serve recommendations: consume clicks and purchases, answer each event on "
        "recommendations (or events-dlq). Checks the settings, the device, the web port, the "
        "broker and the topics before it loads the newest checkpoint of the model store. "
        "Every setting: coldstream settings worker.",
        formatter_class=HelpFormatter,
    )
    add_setting_flags(p, Settings, WORKER_OPTIONS, HELP)
    p.set_defaults(func=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    from stream_app import worker

    return int(worker.run(settings_from(args)))
