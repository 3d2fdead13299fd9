"""The error table of ``coldstream``: each bad input, the one line it gets and the exit code.

One list, :data:`CASES`, is the source of ``docs/errors.md`` (between its ``errors-table``
markers) and of the subprocess tests that run the real CLI on each case
(``tests/unit/test_cli_errors.py``; the cases that need a broker:
``tests/integration/test_cli_errors_broker.py``). When behaviour and table disagree, a test
fails; after a deliberate change, rewrite the table (and the exit-code table above it,
generated from ``coldstream.core.errors.ExitCode``) with::

    .venv/bin/python -m tests.cli_errors --write

A message is a template: ``{closed}`` is a port nothing listens on, ``{busy}`` one that is
taken, ``{tmp}`` the test's folder, ``{bootstrap}`` the broker, ``{prefix}`` the unique topic
prefix, ``{missing}`` the missing topics; the table shows them as ``<closed>`` and so on.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "errors.md"
BEGIN, END = "<!-- errors-table: begin -->", "<!-- errors-table: end -->"
EXIT_BEGIN, EXIT_END = "<!-- exit-codes: begin -->", "<!-- exit-codes: end -->"
"""The markers of the exit-code table (``coldstream.core.errors.exit_code_table``)."""


@dataclass(frozen=True)
class Case:
    """One bad input: the command line, the environment it adds, the exit code and the one
    error line (a template)."""

    name: str
    bad: str
    """The bad input, as the table says it."""
    argv: tuple[str, ...]
    code: int
    message: str
    env: Mapping[str, str] = field(default_factory=dict)
    needs: str = ""
    """``""``: nothing; ``kafka``: a broker (the integration test runs it)."""
    files: Mapping[str, str] = field(default_factory=dict)
    """Files written under ``{tmp}`` before the run (name -> text)."""


NO_KEYS = {"COLDSTREAM_ALLOW_UNSIGNED_CHECKPOINTS": "true", "COLDSTREAM_HOT_SWAP": "false"}
EVENTS_FUTURE = "user_id,item_id,ts\nu1,i1,4102444800\n"
CATALOGUE = "item_id,title\ni1,One\n"

CASES: tuple[Case, ...] = (
    Case(
        "env_not_an_integer",
        "`COLDSTREAM_K=abc`",
        ("worker",),
        2,
        "coldstream worker: error: COLDSTREAM_K=abc: input should be a valid integer, unable to "
        "parse string as an integer (env COLDSTREAM_K, flag --k)",
        env={"COLDSTREAM_K": "abc"},
    ),
    Case(
        "env_out_of_range",
        "`COLDSTREAM_BATCH_SIZE=-1`",
        ("worker",),
        2,
        "coldstream worker: error: COLDSTREAM_BATCH_SIZE=-1: input should be greater than or "
        "equal to 1 (env COLDSTREAM_BATCH_SIZE, flag --batch-size)",
        env={"COLDSTREAM_BATCH_SIZE": "-1"},
    ),
    Case(
        "flag_out_of_range",
        "`coldstream worker --k 0`",
        ("worker", "--k", "0"),
        2,
        "coldstream worker: error: --k 0: input should be greater than or equal to 1 "
        "(env COLDSTREAM_K, flag --k)",
    ),
    Case(
        "port_out_of_range",
        "`coldstream worker --web-port 99999`",
        ("worker", "--web-port", "99999"),
        2,
        "coldstream worker: error: --web-port 99999: input should be less than or equal to "
        "65535 (env COLDSTREAM_WEB_PORT, flag --web-port)",
    ),
    Case(
        "no_gpu",
        "`coldstream worker --device cuda` on a machine without a GPU",
        ("worker", "--device", "cuda", "--bootstrap", "127.0.0.1:{closed}"),
        2,
        "coldstream worker: error: device 'cuda': torch sees no CUDA GPU on this machine; use "
        "auto, cpu, cuda or cuda:N (env COLDSTREAM_DEVICE, flag --device)",
        env={"CUDA_VISIBLE_DEVICES": ""},
    ),
    Case(
        "log_level_flag",
        "`coldstream worker --log-level chatty`",
        ("worker", "--log-level", "chatty"),
        2,
        "coldstream worker: error: argument --log-level: invalid choice: 'chatty' (choose from "
        "'debug', 'info', 'warning', 'error', 'critical') (see: coldstream worker --help)",
    ),
    Case(
        "log_level_env",
        "`COLDSTREAM_LOG_LEVEL=chatty`",
        ("worker",),
        2,
        "coldstream worker: error: COLDSTREAM_LOG_LEVEL=chatty: input should be 'debug', "
        "'info', 'warning', 'error' or 'critical' (env COLDSTREAM_LOG_LEVEL, flag --log-level)",
        env={"COLDSTREAM_LOG_LEVEL": "chatty"},
    ),
    Case(
        "broker_unreachable",
        "no broker at the bootstrap address (worker)",
        ("worker", "--bootstrap", "127.0.0.1:{closed}"),
        6,
        "coldstream worker: error: no broker answers at 127.0.0.1:{closed}: 127.0.0.1:{closed} "
        "refused the connection; start one or point env COLDSTREAM_BOOTSTRAP / flag "
        "--bootstrap at it",
    ),
    Case(
        "broker_unreachable_trainer",
        "no broker at the bootstrap address (trainer)",
        ("trainer", "--bootstrap", "127.0.0.1:{closed}", "--metrics-port", "0"),
        6,
        "coldstream trainer: error: no broker answers at 127.0.0.1:{closed}: 127.0.0.1:{closed} "
        "refused the connection; start one or point env COLDSTREAM_BOOTSTRAP / flag "
        "--bootstrap at it",
    ),
    Case(
        "broker_unreachable_topics",
        "no broker at the bootstrap address (`topics create`)",
        ("topics", "create", "--bootstrap", "127.0.0.1:{closed}"),
        6,
        "coldstream topics: error: no broker answers at 127.0.0.1:{closed}: 127.0.0.1:{closed} "
        "refused the connection; start one or point env COLDSTREAM_BOOTSTRAP / flag "
        "--bootstrap at it",
    ),
    Case(
        "web_port_in_use",
        "the worker's web port is taken",
        ("worker", "--web-port", "{busy}"),
        6,
        "coldstream worker: error: web port {busy} on 127.0.0.1 is in use: stop what holds it or "
        "choose another port (env COLDSTREAM_WEB_PORT, flag --web-port)",
    ),
    Case(
        "metrics_port_in_use",
        "the trainer's metrics port is taken",
        ("trainer", "--metrics-port", "{busy}"),
        6,
        "coldstream trainer: error: metrics port {busy} on 0.0.0.0 is in use: stop what holds it "
        "or choose another port (env COLDSTREAM_TRAINER_METRICS_PORT, flag --metrics-port)",
    ),
    Case(
        "broker_port_in_use",
        "`coldstream broker --port` on a taken port",
        ("broker", "--port", "{busy}"),
        6,
        "coldstream broker: error: broker port {busy} on 127.0.0.1 is in use: stop what holds it "
        "or choose another port (flag --port)",
    ),
    Case(
        "trainer_setting",
        "`COLDSTREAM_TRAINER_GATE_MARGIN=-1`",
        ("trainer",),
        2,
        "coldstream trainer: error: COLDSTREAM_TRAINER_GATE_MARGIN=-1: input should be greater "
        "than or equal to 0 (env COLDSTREAM_TRAINER_GATE_MARGIN, flag --gate-margin)",
        env={"COLDSTREAM_TRAINER_GATE_MARGIN": "-1"},
    ),
    Case(
        "data_folder",
        "`coldstream train --data` a folder that is not there",
        ("train", "--data", "{tmp}/nope"),
        2,
        "coldstream train: error: data folder {tmp}/nope is not a directory",
    ),
    Case(
        "events_without_catalogue",
        "`coldstream train --events` without `--catalogue`",
        ("train", "--events", "{tmp}/events.csv"),
        2,
        "coldstream train: error: --events and --catalogue go together: give both files",
    ),
    Case(
        "events_in_the_future",
        "an events file with a `ts` in the future (epoch s or ms and ISO-8601 are read)",
        ("train", "--events", "{tmp}/events.csv", "--catalogue", "{tmp}/catalogue.csv"),
        2,
        "coldstream train: error: {tmp}/events.csv row 1: ts_future: ts=4102444800.0 is more "
        "than 3600 s ahead (flags --events / --catalogue)",
        files={"events.csv": EVENTS_FUTURE, "catalogue.csv": CATALOGUE},
    ),
    Case(
        "send_milliseconds",
        "`coldstream send --ts` in milliseconds",
        ("send", "--user", "u1", "--item", "1", "--ts", "1700000000000"),
        2,
        "coldstream send: error: flags: ts_future: ts=1700000000000.0 is more than 3600 s ahead "
        "(ts is seconds since the epoch, not milliseconds); nothing sent (the worker would put "
        "it on events-dlq)",
    ),
    Case(
        "topics_missing_worker",
        "a Kafka without the topics (worker)",
        ("worker", "--bootstrap", "{bootstrap}", "--topic-prefix", "{prefix}"),
        6,
        "coldstream worker: error: topics missing on {bootstrap}: {missing}; create them with: "
        "coldstream topics create --bootstrap {bootstrap} --topic-prefix {prefix}",
        needs="kafka",
    ),
    Case(
        "topics_missing_trainer",
        "a Kafka without the topics (trainer)",
        (
            "trainer",
            "--bootstrap",
            "{bootstrap}",
            "--topic-prefix",
            "{prefix}",
            "--metrics-port",
            "0",
        ),
        6,
        "coldstream trainer: error: topics missing on {bootstrap}: {missing_trainer}; create "
        "them with: coldstream topics create --bootstrap {bootstrap} --topic-prefix {prefix}",
        needs="kafka",
    ),
    Case(
        "corrupt_checkpoint",
        "the newest checkpoint's weights file was changed",
        (
            "worker",
            "--bootstrap",
            "{bootstrap}",
            "--topic-prefix",
            "{prefix}",
            "--model-store",
            "{tmp}/store",
        ),
        2,
        "coldstream worker: error: {corrupt}",
        env=NO_KEYS,
        needs="kafka",
    ),
)


def shown(template: str) -> str:
    """A message template as the table shows it: ``{x}`` -> ``<x>``."""
    return re.sub(r"\{(\w+)\}", r"<\1>", template)


def render_table(cases: tuple[Case, ...] = CASES) -> str:
    """The Markdown table of docs/errors.md."""
    lines = [
        "| bad input | what `coldstream` prints (one line, no traceback) | exit |",
        "|---|---|---|",
    ]
    for c in cases:
        msg = shown(c.message).replace("|", "\\|")
        lines.append(f"| {c.bad} | `{msg}` | {c.code} |")
    return "\n".join(lines)


def _between(doc: Path, begin: str, end: str) -> str:
    text = doc.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        raise AssertionError(f"{doc} lacks the {begin} ... {end} markers")
    return text.split(begin, 1)[1].split(end, 1)[0].strip()


def documented_table(doc: Path = DOC) -> str:
    """The error table of ``doc`` (between the ``errors-table`` markers)."""
    return _between(doc, BEGIN, END)


def documented_exit_codes(doc: Path = DOC) -> str:
    """The exit-code table of ``doc`` (between the ``exit-codes`` markers)."""
    return _between(doc, EXIT_BEGIN, EXIT_END)


def _replace(text: str, begin: str, end: str, body: str) -> str:
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def write_table(doc: Path = DOC) -> None:
    """Rewrite both generated tables of ``doc``: the exit codes and the error table."""
    from coldstream.core.errors import exit_code_table

    text = doc.read_text(encoding="utf-8")
    text = _replace(text, EXIT_BEGIN, EXIT_END, exit_code_table())
    doc.write_text(_replace(text, BEGIN, END, render_table()), encoding="utf-8")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def run_cli(argv: list[str], env: Mapping[str, str], cwd: Path, timeout_s: float = 120) -> Result:
    """The real console script, in a fresh process (no pytest, no imported state)."""
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("COLDSTREAM_") and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    full_env.update({"COLDSTREAM_TRAINER_PROGRESS": "false", "HF_HUB_OFFLINE": "1", **env})
    res = subprocess.run(
        [sys.executable, "-m", "coldstream", *argv],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    return Result(res.returncode, res.stdout, res.stderr)


def error_lines(stderr: str) -> list[str]:
    """The ``coldstream <command>: error: ...`` lines of an output."""
    return [ln for ln in stderr.splitlines() if re.match(r"^coldstream [\w-]+: error: ", ln)]


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:] == ["--write"]:
        write_table()
        print(f"wrote the table of {DOC.relative_to(REPO)}")
    else:
        print(render_table())
