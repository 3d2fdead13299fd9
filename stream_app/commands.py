"""Serving-side subcommands of ``coldstream`` (registered by :mod:`stream_app.cli`).

``broker``, ``worker``, ``replay``, ``demo``, ``bench serve``, ``bench recommend``. Heavy
imports happen inside each command so that ``coldstream --help`` stays instant.
"""

from __future__ import annotations

import argparse


def _settings(args: argparse.Namespace):  # noqa: ANN202 - lazy import
    from stream_app.settings import Settings

    overrides = {name: getattr(args, name, None) for name in
                 ("bootstrap", "topic_prefix", "app_id", "model_store", "device", "web_port",
                  "batch_size", "batch_window_ms", "k", "log_level", "threads", "profile",
                  "fetch_max_wait_ms", "session_timeout_s", "web_bind", "fast_path")}
    return Settings().with_overrides(**overrides)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", help="broker bootstrap servers (env COLDSTREAM_BOOTSTRAP)")
    p.add_argument("--topic-prefix", help="topic name prefix (env COLDSTREAM_TOPIC_PREFIX)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``demo``, ``broker``, ``worker``, ``replay`` and ``bench`` subparsers."""
    p = sub.add_parser("broker", help="run the embedded Tansu broker with the coldstream topics")
    p.add_argument("--port", type=int, default=None, help="listen port (default: a free one)")
    p.add_argument("--topic-prefix", default="", help="prefix of the created topics")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("worker", help="run one serving worker (Faust)")
    _add_common(p)
    p.add_argument("--app-id", help="consumer group / changelog prefix (env COLDSTREAM_APP_ID)")
    p.add_argument("--model-store", help="model store root (env COLDSTREAM_MODEL_STORE)")
    p.add_argument("--device", help="auto, cpu, cuda (env COLDSTREAM_DEVICE)")
    p.add_argument("--web-port", type=int, help="web port (env COLDSTREAM_WEB_PORT)")
    p.add_argument("--web-bind", help="web bind address (env COLDSTREAM_WEB_BIND)")
    p.add_argument("--batch-size", type=int, help="micro-batch size (env COLDSTREAM_BATCH_SIZE)")
    p.add_argument("--batch-window-ms", type=float, help="micro-batch window (env COLDSTREAM_BATCH_WINDOW_MS)")
    p.add_argument("--k", type=int, help="items per recommendation (env COLDSTREAM_K)")
    p.add_argument("--threads", type=int, help="torch/FAISS threads (env COLDSTREAM_THREADS)")
    p.add_argument("--profile", choices=["dev", "prod"], help="timeouts profile (env COLDSTREAM_PROFILE)")
    p.add_argument("--fetch-max-wait-ms", type=int, help="consumer fetch wait (env COLDSTREAM_FETCH_MAX_WAIT_MS)")
    p.add_argument("--session-timeout-s", type=float, help="group session timeout (env COLDSTREAM_SESSION_TIMEOUT_S)")
    p.add_argument("--log-level", help="log level (env COLDSTREAM_LOG_LEVEL)")
    p.add_argument("--fast-path", dest="fast_path", action="store_true", default=None,
                   help="consume in micro-batches straight from the fetch loop (default; env COLDSTREAM_FAST_PATH)")
    p.add_argument("--no-fast-path", dest="fast_path", action="store_false", default=None,
                   help="consume through a stock Faust agent (env COLDSTREAM_FAST_PATH=false)")
    p.set_defaults(func=cmd_worker)

    from stream_app import bench, demo

    demo.register(sub)
    bench.register(sub)
    from stream_app import faults

    faults.register(sub.choices["bench"])  # coldstream bench faults


def cmd_worker(args: argparse.Namespace) -> int:
    from stream_app import worker

    return worker.run(_settings(args))


def cmd_broker(args: argparse.Namespace) -> int:
    import asyncio
    import signal
    import threading

    from stream_app.brokers import TansuBroker
    from stream_app.topics import create_topics

    broker = TansuBroker(port=args.port)
    broker.start()
    try:
        asyncio.run(create_topics(broker.bootstrap, replication_factor=1, prefix=args.topic_prefix))
        print(broker.bootstrap, flush=True)
        print(f"Tansu broker ready at {broker.bootstrap} (memory storage); Ctrl-C to stop",
              flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(0.5):
                if not broker.running:
                    print("broker exited", flush=True)
                    return 1
        except KeyboardInterrupt:
            pass
    finally:
        broker.stop()
    return 0
