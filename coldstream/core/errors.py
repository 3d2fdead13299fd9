"""One error root for coldstream, and the refusal shape shared by checkpoints and updates.

* :class:`ColdstreamError` -- the root; catch it to handle anything coldstream raises on
  purpose.
* :class:`Refused` -- something offered to us (a checkpoint, a ``model-updates`` record,
  an item vector) was refused. ``reason`` is a stable, metric-friendly code (a label value
  of ``coldstream_model_swap_failures_total{reason}``); ``file`` names the offending file
  when there is one.
* :class:`UsageError` -- a user mistake (a wrong path, a bad option value): the CLI prints
  it on one line, without a traceback, and exits with status 2.
* :class:`Unavailable` -- something the command needs is not there yet (the broker is
  unreachable, the topics are missing, the port is taken): one line, exit status 6.

Every class carries the ``exit_code`` that ``coldstream.cli`` exits with (docs/errors.md).
"""

from __future__ import annotations


class ColdstreamError(Exception):
    """Root of every error coldstream raises on purpose."""

    exit_code: int = 1
    """The status ``coldstream`` exits with when this error ends a command."""


class Refused(ColdstreamError):
    """An input was refused; ``reason`` is a stable code, ``file`` the offending file."""

    exit_code = 2

    def __init__(self, reason: str, message: str, file: str | None = None) -> None:
        self.reason = reason
        self.file = file
        self.message = message
        where = f" [{file}]" if file else ""
        super().__init__(f"{reason}{where}: {message}")


class UsageError(ColdstreamError):
    """A user mistake (wrong path, bad option value): printed without a traceback, exit 2."""

    exit_code = 2


class Unavailable(ColdstreamError):
    """What the command needs is not there (broker unreachable, topics missing, port in use):
    printed on one line, exit 6."""

    exit_code = 6
