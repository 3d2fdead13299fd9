"""The one child-process supervisor of the dev tooling, and the serving worker built on it.

Every long-lived child that devtools or the tests start (brokers, serving workers, the
trainer service, Prometheus) goes through :func:`start_process`:

* its own process group (a new session), so that a stop reaches the whole group and a
  Ctrl-C in the terminal reaches only the parent, which then stops its children;
* stdout and stderr appended to a log file (or discarded);
* from the main thread on Linux, ``PR_SET_PDEATHSIG``: the child gets SIGTERM when the
  parent dies hard; and at interpreter exit every child still running is SIGKILLed.

:func:`stop_process` stops by PID: SIGTERM to the group, wait up to the deadline, then
SIGKILL to the group (stragglers included), and reaps. :func:`kill_process` is SIGKILL now.

:class:`WorkerProcess` is a ``coldstream worker`` subprocess: started with its working
directory in its own log folder (Faust's ``<app_id>-data`` folder lands there, never in the
caller's directory), ready when ``/ready?partitions=1`` answers 200 (it serves the API and owns
input partitions).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from devtools.waiting import log_tail, wait_until

__all__ = [
    "WorkerProcess",
    "kill_process",
    "rss_mb",
    "start_process",
    "stop_process",
    "wait_for_log",
    "wait_ready",
    "worker_argv",
]

REAP_TIMEOUT_S = 10.0
"""How long a SIGKILLed child may take to be reaped."""

_live: set[subprocess.Popen[bytes]] = set()
_live_lock = threading.Lock()


@atexit.register
def _kill_live_children() -> None:
    """Children die with us: whatever is still running at interpreter exit is SIGKILLed."""
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        with contextlib.suppress(Exception):
            kill_process(proc)


@functools.cache
def _pdeathsig_preexec() -> Callable[[], None] | None:
    """The ``preexec_fn`` that asks for SIGTERM when the parent dies (``PR_SET_PDEATHSIG``).
    ``prctl`` is looked up here, in the parent: between fork and exec the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    sigterm = int(signal.SIGTERM)

    def preexec() -> None:
        prctl(1, sigterm)  # PR_SET_PDEATHSIG

    return preexec


def start_process(
    argv: Sequence[str],
    *,
    log_path: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group, output appended to ``log_path`` (created
    with its folder; ``None``: discarded). Raises ``OSError`` when it cannot be run."""
    out: IO[bytes] | int = subprocess.DEVNULL
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "ab")  # noqa: SIM115 - the child holds its own copy
    # PR_SET_PDEATHSIG fires when the *thread* that forked exits: only from the main thread
    preexec = (
        _pdeathsig_preexec() if threading.current_thread() is threading.main_thread() else None
    )
    try:
        proc = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,
        )  # noqa: PLW1509
    finally:
        if not isinstance(out, int):
            out.close()
    with _live_lock:
        _live.add(proc)
    return proc


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.returncode is not None:  # reaped: its pid (= group id) may belong to another now
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _reap(proc: subprocess.Popen[bytes]) -> int:
    try:
        rc = proc.wait(REAP_TIMEOUT_S)
    except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
        rc = -signal.SIGKILL
    with _live_lock:
        _live.discard(proc)
    return rc


def stop_process(proc: subprocess.Popen[bytes], *, deadline_s: float = 10.0) -> int:
    """SIGTERM the process group, wait up to ``deadline_s``, SIGKILL what is left of the
    group, reap. Returns the exit code (``-9`` when it had to be killed). Safe to repeat."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(deadline_s)
    # stragglers in the group (the leader has exited), or the leader itself
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return _reap(proc)


def kill_process(proc: subprocess.Popen[bytes]) -> int:
    """SIGKILL the process group now (no clean shutdown), reap. Returns the exit code."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGKILL)
    return _reap(proc)


def _exited(
    proc: subprocess.Popen[bytes] | None, name: str, log_path: Path | str | None, doing: str
) -> None:
    if proc is not None and proc.poll() is not None:
        raise RuntimeError(f"{name} exited with {proc.returncode} {doing}" + log_tail(log_path))


def wait_for_log(
    log_path: Path | str,
    pattern: str,
    *,
    proc: subprocess.Popen[bytes] | None,
    timeout_s: float,
    interval_s: float = 0.3,
    name: str = "process",
) -> re.Match[str]:
    """Wait until ``pattern`` (a regular expression) appears in ``log_path``; returns the match.
    ``RuntimeError`` (with the log's tail) as soon as ``proc`` exits; ``TimeoutError`` after
    ``timeout_s``."""
    path = Path(log_path)

    def search() -> re.Match[str] | None:
        return re.search(pattern, path.read_text(errors="replace")) if path.exists() else None

    return wait_until(
        search,
        timeout_s,
        f"{pattern!r} in {path}",
        interval_s=interval_s,
        abort=lambda: _exited(proc, name, path, f"before {pattern!r} was logged"),
        detail=lambda: log_tail(path),
    )


def wait_ready(
    url: str,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    timeout_s: float = 60.0,
    log_path: Path | str | None = None,
) -> float:
    """Poll ``url`` (a worker's ``/ready``) every 0.2 s until it answers 200; returns the
    seconds waited. ``RuntimeError`` when ``proc`` exits first, ``TimeoutError`` after
    ``timeout_s``; both carry the log's tail."""
    import time

    t0 = time.monotonic()

    def answered_200() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return bool(r.status == 200)
        except Exception:  # noqa: BLE001 - 503 or not listening yet
            return False

    wait_until(
        answered_200,
        timeout_s,
        f"{url} to answer 200",
        interval_s=0.2,
        abort=lambda: _exited(proc, "worker", log_path, "before it was ready"),
        detail=lambda: log_tail(log_path),
    )
    return time.monotonic() - t0


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB (``/proc``), ``None`` when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def worker_argv(**options: object) -> list[str]:
    """``python -m coldstream worker --opt value ...`` for the current interpreter
    (``None``: left out; ``True``: ``--opt``; ``False``: ``--no-opt``)."""
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


class WorkerProcess:
    """A serving worker subprocess for tests, benchmarks and the demo.

    ``with WorkerProcess(log_path=..., bootstrap=..., topic_prefix=..., model_store=...) as w:
    w.url(...)``. ``options`` are ``coldstream worker`` options (``web_port`` defaults to a
    free port, ``web_bind`` to 127.0.0.1). The worker runs in ``cwd`` (default: the log's
    folder), so its Faust data folder never lands in the caller's directory; ``model_store``
    is passed as an absolute path. ``env`` replaces the inherited environment. Always stopped
    with a deadline (:func:`stop_process`)."""

    def __init__(
        self,
        *,
        log_path: Path | str,
        ready_timeout_s: float = 90.0,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        **options: object,
    ) -> None:
        from devtools.brokers.probe import free_port

        self.options: dict[str, object] = dict(options)
        self.options.setdefault("web_port", free_port())
        self.options.setdefault("web_bind", "127.0.0.1")
        if self.options.get("model_store") is not None:
            self.options["model_store"] = str(Path(str(self.options["model_store"])).absolute())
        self.log_path = Path(log_path).absolute()
        self.cwd = Path(cwd).absolute() if cwd is not None else self.log_path.parent
        self.env = dict(env) if env is not None else None
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_s: float | None = None

    @property
    def port(self) -> int:
        return int(str(self.options["web_port"]))

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the worker without waiting for ``/ready``."""
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.proc = start_process(
            worker_argv(**self.options), log_path=self.log_path, env=self.env, cwd=self.cwd
        )
        return self.proc

    def start(self) -> WorkerProcess:
        """Start and wait until ``/ready?partitions=1`` answers 200: the worker serves the API
        and owns input partitions (stopped again if it does not)."""
        proc = self.spawn()
        try:
            self.ready_s = wait_ready(
                self.url("/ready?partitions=1"),
                proc=proc,
                timeout_s=self.ready_timeout_s,
                log_path=self.log_path,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, deadline_s: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        rc = stop_process(self.proc, deadline_s=deadline_s)
        self.proc = None
        return rc

    def get_json(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def get_text(self, path: str) -> str:
        with urllib.request.urlopen(self.url(path), timeout=10) as r:
            return str(r.read().decode())

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
