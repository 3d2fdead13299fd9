"""Serving-side subcommands of ``coldstream`` (registered by :mod:`stream_app.cli`)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # noqa: ARG001 - filled in by the serving work
    """Add ``demo``, ``broker``, ``worker``, ``replay`` and ``bench`` subparsers."""
