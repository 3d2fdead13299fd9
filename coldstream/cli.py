"""The ``coldstream`` console script: the composition root.

The only module that imports every layer. Each package registers its own subcommands:

* :mod:`stream_app.commands` -- ``worker``;
* :mod:`trainer.commands` -- ``train``, ``evaluate``, ``trainer``;
* :mod:`devtools.commands` (the ``dev`` extra) -- ``broker``, ``demo``, ``replay``,
  ``bench ...``, ``evaluate --stream``.

Heavy imports (torch, faust, transformers) happen inside each subcommand, so ``coldstream
--help`` is instant. A :class:`~coldstream.core.errors.UsageError` is printed on one line
and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from coldstream import __version__
from coldstream.core.errors import UsageError


def _command_modules() -> list[ModuleType]:
    """The packages' command modules that are installed, in help order. An image installs
    only some packages (the worker image: serving; the trainer image: training); a missing
    one is skipped, and its commands are then "invalid choice"."""
    found: list[ModuleType] = []
    try:
        from stream_app import commands as serving

        found.append(serving)
    except ModuleNotFoundError as e:
        if e.name != "stream_app":
            raise
    try:
        from trainer import commands as training

        found.append(training)
    except ModuleNotFoundError as e:
        if e.name != "trainer":
            raise
    try:
        from devtools import commands as dev

        found.append(dev)
    except ModuleNotFoundError as e:
        if e.name != "devtools":
            raise
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coldstream",
        description="Streaming cold-start recommender: a student distilled from a language model, "
        "served on Kafka.",
    )
    parser.add_argument("--version", action="version", version=f"coldstream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _command_modules():
        module.register(sub)
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


if __name__ == "__main__":
    sys.exit(main())
