"""The ``coldstream`` console script.

Subcommands are registered by two light modules, each owned by its package:
``trainer.commands`` (``train``, ``evaluate``, ``trainer``) and ``stream_app.commands``
(``demo``, ``broker``, ``worker``, ``replay``, ``bench``). Heavy imports (torch, faust,
transformers) happen inside each subcommand, so ``coldstream --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from stream_app import commands as serving_commands
    from trainer import commands as trainer_commands

    parser = argparse.ArgumentParser(
        prog="coldstream",
        description="Streaming cold-start recommender: a student distilled from a language model, "
                    "served on Kafka.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serving_commands.register(sub)
    trainer_commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UsageError as e:
        print(f"coldstream {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


class UsageError(Exception):
    """A user mistake (wrong path, bad option value): printed without a traceback, exit 2."""


if __name__ == "__main__":
    sys.exit(main())
