"""The one wait helper of the dev tooling: poll a condition until it holds or time runs out.

:func:`wait_until` replaces the ad-hoc ``while time.monotonic() < deadline: ... sleep``
loops of the brokers' readiness probe, the worker readiness check, the log watchers, the
fault scenarios, the benchmarks and the tests. A timeout is a :class:`TimeoutError` that
says what was awaited, for how long, and the last value (or error) seen; :func:`log_tail`
is the usual ``detail`` (the end of a child process's log).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

__all__ = ["log_tail", "wait_until"]


def wait_until(
    predicate: Callable[[], T],
    timeout_s: float,
    what: str,
    *,
    interval_s: float = 0.05,
    abort: Callable[[], None] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
    detail: Callable[[], str] | None = None,
) -> T:
    """Call ``predicate`` every ``interval_s`` until it returns a truthy value, and return it.

    ``abort`` is called before each try and raises to stop waiting (a child process that
    exited, say). Exceptions of the types in ``ignore`` raised by ``predicate`` count as
    "not yet" (a port not listening). After ``timeout_s`` (at least one try is made) a
    :class:`TimeoutError` says ``timed out after <timeout_s> s waiting for <what> (last:
    <value or error>)``, followed by ``detail()`` (a log tail, say) when given.
    """
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        if abort is not None:
            abort()
        try:
            value = predicate()
        except ignore as e:
            last = e
        else:
            if value:
                return value
            last = value
        if time.monotonic() > deadline:
            extra = detail() if detail is not None else ""
            raise TimeoutError(
                f"timed out after {timeout_s:g} s waiting for {what} (last: {last!r})" + extra
            )
        time.sleep(interval_s)


def log_tail(log_path: Path | str | None, lines: int = 40) -> str:
    """The end of a child's log for an error message: ``"\\n--- last N lines of PATH
    ---\\n..."`` (empty when there is no such file)."""
    if log_path is None or not Path(log_path).is_file():
        return ""
    text = Path(log_path).read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    return f"\n--- last {len(text)} lines of {log_path} ---\n" + "\n".join(text)
