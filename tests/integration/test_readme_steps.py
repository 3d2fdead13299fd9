"""The README's own steps, as written: every ``bash`` block of its "Quick start", "Send your
own event" and "Bring your own data" sections runs in one shell, in a fresh folder holding
only a link to the project's ``.venv``, on the embedded Tansu broker. The only line left out
is the install (``bash scripts/setup.sh``): the test runs inside the venv it makes.

What it shows: ``quickstart`` on an export with a byte-order mark, ISO-8601 times, ``view``
events, extra columns and events on deleted items gives a recommendation in its first run
and counts the drops; the worker starts on Tansu with the exports `coldstream broker` printed;
``send --wait`` gets a recommendation for the user it sent an event for; ``evaluate --smoke``
says it is a smoke run."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from devtools.brokers import free_port

REPO = Path(__file__).resolve().parents[2]
SECTIONS = ("Quick start", "Send your own event", "Bring your own data")
INSTALL = "bash scripts/setup.sh"

pytestmark = [pytest.mark.tansu, pytest.mark.slow]


def readme_script() -> str:
    """The bash blocks of :data:`SECTIONS`, in README order, without the install line."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    parts = re.split(r"^## ", text, flags=re.M)
    lines: list[str] = []
    for title in SECTIONS:
        body = next(p for p in parts if p.startswith(title))
        for block in re.findall(r"^```bash\n(.*?)^```", body, re.M | re.S):
            lines += [ln for ln in block.splitlines() if ln.strip() != INSTALL]
    return "\n".join(lines) + "\n"


def test_the_sections_have_their_commands() -> None:
    script = readme_script()
    for needed in ("quickstart --events", "broker --background", "worker &", "send --user"):
        assert needed in script, needed


def test_the_readme_steps_run_as_written(tmp_path: Path) -> None:
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    script = readme_script()
    (tmp_path / "steps.sh").write_text("set -euo pipefail\n" + script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLDSTREAM_")}
    env.update(
        HF_HUB_OFFLINE="1",
        COLDSTREAM_TRAINER_PROGRESS="false",
        COLDSTREAM_WEB_PORT=str(free_port()),  # the README's :6066 may be taken here
    )
    t0 = time.monotonic()
    log = tmp_path / "steps.log"
    with open(log, "w") as sink:  # a file, not a pipe: `worker &` outlives the script
        proc = subprocess.Popen(
            ["bash", "steps.sh"],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=900)
        finally:
            pid_file = tmp_path / ".coldstream" / "broker.pid"
            broker = int(pid_file.read_text()) if pid_file.is_file() else None
            for pgid in (proc.pid, broker):  # the script's group (the worker), the broker's
                if pgid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pgid, signal.SIGTERM)
            if proc.poll() is None:
                proc.kill()
    out = log.read_text(errors="replace")
    print(out)
    print(f"README steps: {time.monotonic() - t0:.0f} s")
    assert proc.returncode == 0, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    # quickstart: the adapters' notes, then a recommendation within the first run
    assert "ignored column(s) session_id" in out and "'view' read as click" in out
    assert re.search(r"dropped 20 of 5000 event\(s\) on items not in the catalogue", out)
    first = re.search(r"first recommendation ([\d.]+) s after the start", out)
    assert first, out[-4000:]
    print(f"quickstart: time to first recommendation {first.group(1)} s")
    # the worker on Tansu: one line, no crash; send gets the user's recommendation
    assert "coldstream worker: model v1; web http://127.0.0.1:" in out  # started, no crash
    assert "user user-7 <- v1" in out, out[-4000:]
    # evaluate --smoke says what it was
    report = (tmp_path / "reports" / "mine.md").read_text()
    assert "SMOKE run" in report.splitlines()[0]
    assert "## Verdict" in report and "- **SMOKE run" in report
    assert "events:" in report and "rows read used" in report
