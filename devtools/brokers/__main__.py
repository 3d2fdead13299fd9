"""``python -m devtools.brokers tansu|kafka [--port N] [--log-dir DIR]``: run a local broker
until Ctrl-C (or SIGTERM)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from coldstream.core.errors import ExitCode
from devtools.brokers.kafka import KafkaBroker
from devtools.brokers.tansu import TansuBroker


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.brokers",
        description="Run a local broker until Ctrl-C.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("kind", choices=["tansu", "kafka"], help="which broker")
    parser.add_argument("--port", type=int, default=None, help="listen port (None: a free one)")
    parser.add_argument(
        "--log-dir",
        default=None,
        help="kafka: persistent log dir (None: a temporary one, removed at exit)",
    )
    args = parser.parse_args(argv)
    broker: TansuBroker | KafkaBroker
    if args.kind == "tansu":
        broker = TansuBroker(port=args.port)
    else:
        broker = KafkaBroker(args.log_dir, port=args.port)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with broker:
        print(
            f"{args.kind} ready at {broker.bootstrap} in {broker.startup_s:.2f} s "
            f"(log: {broker.log_path}); Ctrl-C to stop",
            flush=True,
        )
        stop.wait()
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
