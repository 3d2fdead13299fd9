"""Child processes (workers, brokers' helpers) in their own process group, stopped with a deadline.

Faust workers can ignore SIGTERM for a long time; whoever starts one stops it with
:func:`stop_process`: SIGTERM to the whole group, wait up to the deadline, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO


def start_process(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                  log_path: Path | str | None = None, cwd: Path | str | None = None) -> subprocess.Popen:
    """Start ``argv`` in a new session (its own process group); output to ``log_path``."""
    out: IO[bytes] | int = subprocess.DEVNULL
    if log_path is not None:
        out = open(log_path, "ab")  # noqa: SIM115 - owned by the child from here on
    try:
        return subprocess.Popen(list(argv), env=dict(env) if env is not None else None, cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        if not isinstance(out, int):
            out.close()


def stop_process(proc: subprocess.Popen, *, deadline_s: float = 10.0) -> int:
    """SIGTERM the process group, wait ``deadline_s``, SIGKILL what is left. Returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(deadline_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers in the group, or the leader itself
    try:
        return proc.wait(5.0)
    except subprocess.TimeoutExpired:  # pragma: no cover - unkillable
        return -9


def worker_argv(**options: object) -> list[str]:
    """``python -m coldstream.cli worker --opt value ...`` for the current interpreter."""
    argv = [sys.executable, "-m", "coldstream", "worker"]
    for name, value in options.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if value is False:
            argv.append("--no-" + name.replace("_", "-"))
            continue
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def wait_ready(url: str, *, proc: subprocess.Popen | None = None, timeout_s: float = 60.0,
               log_path: Path | str | None = None) -> float:
    """Poll ``url`` (a worker's ``/ready``) until it answers 200; returns seconds waited."""
    t0 = time.monotonic()
    while True:
        if proc is not None and proc.poll() is not None:
            tail = Path(log_path).read_text(errors="replace")[-3000:] if log_path else ""
            raise RuntimeError(f"worker exited with {proc.returncode} before it was ready\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - 503 or not listening yet
            pass
        if time.monotonic() - t0 > timeout_s:
            tail = Path(log_path).read_text(errors="replace")[-3000:] if log_path else ""
            raise TimeoutError(f"{url} not ready after {timeout_s} s\n{tail}")
        time.sleep(0.2)
