"""The broker child process: what :class:`~devtools.brokers.TansuBroker` and
:class:`~devtools.brokers.KafkaBroker` share.

The process itself is started and stopped by the one supervisor of the dev tooling
(:mod:`devtools.processes`: own process group, output appended to the broker's log, stop
with a deadline then SIGKILL). This base adds the broker's life cycle: ``start()`` /
``stop()`` / ``kill()`` / ``close()``, the context manager, and the removal of the
temporary files a broker object created -- also at interpreter exit for brokers still
running then.
"""

from __future__ import annotations

import atexit
import contextlib
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from devtools.brokers.probe import BrokerError
from devtools.processes import kill_process, start_process, stop_process

__all__ = ["BrokerProcess"]

# A strong set: a running broker whose object was dropped is still found, stopped and its
# temporary files removed at exit.
_live: set[BrokerProcess] = set()


@atexit.register
def _kill_live_brokers() -> None:
    for broker in list(_live):
        with contextlib.suppress(Exception):
            broker.kill()
            broker.remove_owned_files()


class BrokerProcess:
    """A broker's process: spawned with output to a log file, stopped with a deadline."""

    _proc: subprocess.Popen[bytes] | None = None
    startup_s: float | None = None

    def _spawn(self, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None) -> None:
        try:
            self._proc = start_process(argv, log_path=log_path, env=env)
        except OSError as e:
            raise BrokerError(f"could not run {argv[0]}: {e}") from e
        _live.add(self)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL. Returns the exit code (None if
        nothing was running). Safe to call twice."""
        proc = self._forget()
        return stop_process(proc, deadline_s=timeout_s) if proc is not None else None

    def kill(self) -> int | None:
        """SIGKILL now, no clean shutdown (for fault tests). Returns the exit code."""
        proc = self._forget()
        return kill_process(proc) if proc is not None else None

    def _forget(self) -> subprocess.Popen[bytes] | None:
        proc, self._proc = self._proc, None
        _live.discard(self)
        return proc

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> Self:  # pragma: no cover - overridden
        raise NotImplementedError

    def remove_owned_files(self) -> None:  # pragma: no cover - overridden
        """Remove the temporary files this object created (never given paths)."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop, then remove the temporary files this object created (not given paths)."""
        self.stop()
        self.remove_owned_files()
