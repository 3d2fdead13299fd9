"""Every bad input of the error table (``tests/cli_errors.py``) that needs no broker: the real
CLI in a subprocess prints exactly the documented line on stderr, nothing else, no
traceback, and exits with the documented code; and ``docs/errors.md`` shows that table.
(The broker cases: ``tests/integration/test_cli_errors_broker.py``.)"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_errors import CASES, Case, documented_table, render_table, run_cli, shown

UNIT_CASES = [c for c in CASES if not c.needs]


@pytest.fixture
def ports() -> Iterator[dict[str, str]]:
    """``closed``: a port nothing listens on; ``busy``: one held (listening) during the test."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        yield {"closed": str(closed_port), "busy": str(busy.getsockname()[1])}
    finally:
        busy.close()


def _run(case: Case, tmp_path: Path, values: dict[str, str]):
    for name, text in case.files.items():
        (tmp_path / name).write_text(text)
    argv = [a.format(**values) for a in case.argv]
    env = {k: v.format(**values) for k, v in case.env.items()}
    return run_cli(argv, env, cwd=tmp_path)


@pytest.mark.parametrize("case", UNIT_CASES, ids=[c.name for c in UNIT_CASES])
def test_bad_input_is_one_line_with_its_exit_code(
    case: Case, tmp_path: Path, ports: dict[str, str]
) -> None:
    values = {**ports, "tmp": str(tmp_path)}
    res = _run(case, tmp_path, values)
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    assert res.stderr.strip().splitlines() == [case.message.format(**values)], res.stderr
    assert res.code == case.code, (res.code, res.stderr)


def test_the_table_in_docs_is_the_table_of_the_cases() -> None:
    assert documented_table() == render_table(), (
        "docs/errors.md is out of date: .venv/bin/python -m tests.cli_errors --write"
    )


def test_the_table_check_can_fail() -> None:
    changed = (*CASES[:-1], Case("x", "x", ("worker",), 9, "coldstream worker: error: {x}"))
    assert render_table(changed) != documented_table()
    assert shown("a {tmp}/b {closed}") == "a <tmp>/b <closed>"
