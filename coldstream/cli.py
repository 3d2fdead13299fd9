"""The ``coldstream`` console script: the composition root.

The only module that imports every layer. Each package registers its own subcommands:

* :mod:`stream_app.commands` -- ``worker``;
* :mod:`trainer.commands` -- ``train``, ``evaluate``, ``trainer``;
* :mod:`devtools.commands` (the ``dev`` extra) -- ``broker``, ``demo``, ``replay``,
  ``send``, ``tail``, ``bench ...``, ``evaluate --stream``;
* :mod:`coldstream.admin` (every install) -- ``topics create|describe``, ``settings``.

Heavy imports (torch, faust, transformers) happen inside each subcommand, so ``coldstream
--help`` is instant. A :class:`~coldstream.core.errors.ColdstreamError` is printed on one
line, without a traceback, and exits with its ``exit_code`` (docs/errors.md); so is a bad
option (argparse's usage error, exit 2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from coldstream import __version__, admin
from coldstream.core.errors import ColdstreamError, ExitCode


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


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``coldstream worker: error: argument
    --k: ... (coldstream worker --help)``, exit 2 (subcommands inherit the class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.BAD_INPUT, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="coldstream",
        description="Streaming cold-start recommender: a student distilled from a language model, "
        "served on Kafka.",
    )
    parser.add_argument("--version", action="version", version=f"coldstream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = _command_modules()
    for module in modules:
        module.register(sub)
    admin.register(sub)
    settings: dict = {}
    for module in modules:  # each process's settings class, for `coldstream settings NAME`
        settings.update(getattr(module, "SETTINGS", {}))
    admin.register_settings(sub, settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # `coldstream tail | head`: the reader left; no traceback
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.BROKEN_PIPE
    except ColdstreamError as e:
        print(f"coldstream {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    return int(rc or ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
