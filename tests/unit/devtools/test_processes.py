"""``devtools.processes``: the one child-process supervisor (own process group, log file,
stop by PID with a deadline then SIGKILL, always reaped) and the worker built on it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools import processes
from devtools.processes import (
    WorkerProcess,
    kill_process,
    start_process,
    stop_process,
    wait_for_log,
    wait_ready,
    worker_argv,
)
from devtools.waiting import wait_until

REPO = Path(__file__).resolve().parents[3]


def _gone(pid: int) -> bool:
    """No such process, or only a zombie (a container's init may never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_child_runs_in_its_own_group_with_its_output_in_the_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "child.log"  # the folder is created
    proc = start_process(
        _py("import os; print('pgid', os.getpgid(0), flush=True)"), log_path=log, cwd=tmp_path
    )
    try:
        assert proc.wait(20) == 0
        assert os.getpgid(0) != proc.pid
        assert log.read_text().split() == ["pgid", str(proc.pid)]  # its own group, led by itself
    finally:
        stop_process(proc)
    assert proc not in processes._live


def test_stop_kills_a_child_that_ignores_sigterm_within_the_deadline_and_reaps_it(
    tmp_path: Path,
) -> None:
    log = tmp_path / "stubborn.log"
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)'])\n"
        "print('grandchild', g.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = start_process(_py(code), log_path=log)
    assert proc in processes._live
    m = wait_for_log(log, r"grandchild (\d+)", proc=proc, timeout_s=20, interval_s=0.05)
    grandchild = int(m.group(1))
    t0 = time.monotonic()
    rc = stop_process(proc, deadline_s=0.5)
    took = time.monotonic() - t0
    assert rc == -signal.SIGKILL and proc.returncode == -signal.SIGKILL  # reaped: the code is known
    assert 0.5 <= took < 5.0, took  # waited the deadline, no longer
    assert _gone(proc.pid)
    wait_until(lambda: _gone(grandchild), 5.0, "the grandchild (same group) to be killed too")
    assert proc not in processes._live
    assert stop_process(proc) == -signal.SIGKILL  # safe to repeat


def test_stop_lets_a_cooperative_child_exit_on_sigterm() -> None:
    proc = start_process(_py("import time; time.sleep(120)"))
    time.sleep(0.2)
    t0 = time.monotonic()
    assert stop_process(proc, deadline_s=20) == -signal.SIGTERM
    assert time.monotonic() - t0 < 5.0


def test_kill_is_sigkill_now() -> None:
    proc = start_process(
        _py("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)")
    )
    assert kill_process(proc) == -signal.SIGKILL
    assert _gone(proc.pid) and proc not in processes._live


def test_children_die_with_their_parent() -> None:
    """PR_SET_PDEATHSIG: a hard kill of the parent still takes its children down."""
    code = (
        "import sys, time\n"
        "from devtools.processes import start_process\n"
        "p = start_process([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen(_py(code), stdout=subprocess.PIPE, cwd=REPO)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not _gone(child)
        parent.kill()
        parent.wait(10)
        wait_until(lambda: _gone(child), 10.0, "the orphaned child to get SIGTERM and exit")
    finally:
        parent.kill()
        parent.wait(10)


def test_wait_for_log_fails_fast_with_the_tail_when_the_process_exits(tmp_path: Path) -> None:
    log = tmp_path / "t.log"
    proc = start_process(
        _py("print('starting up'); print('fatal: no broker', flush=True)"), log_path=log
    )
    t0 = time.monotonic()
    with pytest.raises(
        RuntimeError,
        match=r"(?s)trainer exited with 0 before 'consuming' was logged.*fatal: no broker",
    ):
        wait_for_log(log, "consuming", proc=proc, timeout_s=30, interval_s=0.05, name="trainer")
    assert time.monotonic() - t0 < 10
    stop_process(proc)


def test_wait_ready_fails_fast_when_the_worker_exits(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    proc = start_process(
        _py("print('Address already in use', flush=True); raise SystemExit(1)"), log_path=log
    )
    with pytest.raises(
        RuntimeError, match=r"(?s)worker exited with 1 before it was ready.*Address already in use"
    ):
        wait_ready("http://127.0.0.1:9/ready", proc=proc, timeout_s=30, log_path=log)
    stop_process(proc)


def test_worker_argv() -> None:
    argv = worker_argv(bootstrap="b:1", threads=1, fast_path=False, profile=None, verbose=True)
    assert argv[:4] == [sys.executable, "-m", "coldstream", "worker"]
    assert argv[4:] == ["--bootstrap", "b:1", "--threads", "1", "--no-fast-path", "--verbose"]


def test_worker_runs_in_its_log_folder_with_an_absolute_model_store(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    w = WorkerProcess(log_path=Path("run") / "worker.log", model_store="store", app_id="a")
    assert w.cwd == tmp_path / "run"  # Faust's "<app_id>-data" lands here, not in the caller's cwd
    assert w.log_path == tmp_path / "run" / "worker.log"
    assert w.options["model_store"] == str(tmp_path / "store")
    assert w.options["web_bind"] == "127.0.0.1" and isinstance(w.options["web_port"], int)
    assert w.url("/ready") == f"http://127.0.0.1:{w.port}/ready"
    assert (
        WorkerProcess(log_path=tmp_path / "x.log", cwd=tmp_path / "elsewhere").cwd
        == tmp_path / "elsewhere"
    )
    assert w.stop() is None  # never started
