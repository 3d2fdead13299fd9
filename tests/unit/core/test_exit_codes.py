"""Exit codes as a type (``coldstream.core.errors.ExitCode``): the documented values, the code
each error class carries, the table of docs/errors.md generated from them, and no literal
exit code left in the packages."""

from __future__ import annotations

import ast
import socket
from pathlib import Path

import pytest

from coldstream.core import errors
from coldstream.core.errors import (
    BrokerError,
    ColdstreamError,
    DataFileError,
    ExitCode,
    NoModelError,
    Refused,
    TopicsError,
    Unavailable,
    UsageError,
    exit_code_table,
)
from tests.cli_errors import DOC, documented_exit_codes

REPO = Path(__file__).resolve().parents[3]
PACKAGES = ("coldstream", "stream_app", "trainer", "devtools")

DOCUMENTED = {
    "OK": 0,
    "FAILURE": 1,
    "BAD_INPUT": 2,
    "DLQ_BREAKER": 3,
    "DRAIN_TIMEOUT": 4,
    "NOT_DELIVERED": 5,
    "UNAVAILABLE": 6,
    "INTERRUPTED": 130,
    "BROKEN_PIPE": 141,
}


def test_the_enum_holds_exactly_the_documented_codes() -> None:
    assert {c.name: c.value for c in ExitCode} == DOCUMENTED
    assert all(isinstance(c, int) for c in ExitCode)
    assert ExitCode.BAD_INPUT == 2 and f"{ExitCode.NOT_DELIVERED}" == "5"  # as messages show it
    for code in ExitCode:  # every member has its own docstring: its meaning
        assert code.__doc__ and code.__doc__ == code.meaning and code.__doc__ != ExitCode.__doc__


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (ColdstreamError, ExitCode.FAILURE),
        (UsageError, ExitCode.BAD_INPUT),
        (Refused, ExitCode.BAD_INPUT),
        (DataFileError, ExitCode.BAD_INPUT),
        (NoModelError, ExitCode.BAD_INPUT),
        (Unavailable, ExitCode.UNAVAILABLE),
        (BrokerError, ExitCode.UNAVAILABLE),
        (TopicsError, ExitCode.UNAVAILABLE),
    ],
)
def test_each_error_class_carries_its_exit_code(cls: type[ColdstreamError], code: ExitCode) -> None:
    assert cls.exit_code is code
    assert type(cls.exit_code) is ExitCode


def test_the_classes_elsewhere_carry_the_code_of_their_base() -> None:
    from coldstream.core.checkpoint import CheckpointError
    from coldstream.core.pointer import NoServableModel, PointerError
    from stream_app import worker
    from trainer.data import files

    assert issubclass(NoServableModel, NoModelError)
    assert NoServableModel.exit_code is PointerError.exit_code is ExitCode.BAD_INPUT
    assert CheckpointError.exit_code is ExitCode.BAD_INPUT
    assert worker.NoModelError is NoModelError  # the worker raises the kernel's class
    assert files.DataFileError is DataFileError  # and so do the data-file readers
    assert issubclass(DataFileError, ValueError)  # still a ValueError for their callers
    with pytest.raises(DataFileError, match="not found"):
        files.load_catalogue(REPO / "no-such-catalogue.csv")


def test_every_class_of_errors_is_listed_once() -> None:
    names = [c.__name__ for c in errors.error_classes()]
    assert names[0] == "ColdstreamError" and len(names) == len(set(names))
    assert set(names) >= {"UsageError", "Refused", "Unavailable", "BrokerError", "TopicsError"}


def test_the_docs_table_is_the_generated_one() -> None:
    assert documented_exit_codes() == exit_code_table(), (
        f"{DOC.relative_to(REPO)} is out of date: .venv/bin/python -m tests.cli_errors --write"
    )
    table = exit_code_table()
    assert "| 2 | bad input" in table and "`UsageError`" in table and "`TopicsError`" in table
    assert len(table.splitlines()) == 2 + len(ExitCode)


# -- the new classes are raised where the problem is found ----------------------------------


def test_an_unreachable_broker_is_a_broker_error() -> None:
    from coldstream.core.preflight import check_broker

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BrokerError, match="no broker answers") as e:
        check_broker(f"127.0.0.1:{port}", ["t"])
    assert e.value.exit_code == 6


def test_missing_topics_are_a_topics_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from coldstream.core import preflight

    async def have(*_a: object, **_k: object) -> set[str]:
        return {"p-clicks"}

    monkeypatch.setattr(preflight, "tcp_unreachable", lambda *_a, **_k: None)
    monkeypatch.setattr(preflight, "broker_topics", have)
    assert preflight.check_broker("b:9092", ["p-clicks"]) == {"p-clicks"}
    with pytest.raises(TopicsError, match="topics missing on b:9092: p-items; create them"):
        preflight.check_broker("b:9092", ["p-clicks", "p-items"], prefix="p-")


def test_exactly_once_on_a_broker_without_transactions_is_the_documented_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/errors.md quotes this line under its table (Tansu needs a broker: integration)."""
    from coldstream.core import preflight
    from stream_app.settings import Settings
    from stream_app.worker import check_guarantee

    why = "UnknownError: [Error -1] UnknownError"
    monkeypatch.setattr(preflight, "transactions_unsupported", lambda *_a, **_k: why)
    s = Settings(bootstrap="127.0.0.1:1", processing_guarantee="exactly_once")
    with pytest.raises(UsageError) as e:
        check_guarantee(s)
    assert e.value.exit_code == ExitCode.BAD_INPUT
    line = f"coldstream worker: error: {e.value}"
    quoted = [
        ln.strip("`")
        for ln in DOC.read_text(encoding="utf-8").splitlines()
        if ln.startswith("`coldstream worker: error: COLDSTREAM_PROCESSING_GUARANTEE=exactly_once")
    ]
    assert quoted, "docs/errors.md lacks the exactly_once line"
    assert quoted[0].replace("<bootstrap>", "127.0.0.1:1").replace("<why>", why) == line


# -- no literal exit code in the packages ---------------------------------------------------


def _int_literal(node: ast.expr) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) is int


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return f"{_name(func.value)}.{func.attr}"
    return ""


def literal_exits(source: str, filename: str = "<source>") -> list[str]:
    """``file:line call`` of each ``sys.exit(<int>)``, ``SystemExit(<int>)``,
    ``os._exit(<int>)`` or ``<parser>.exit(<int>, ...)`` of ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        exits = name in ("SystemExit", "exit", "_exit") or name.endswith((".exit", "._exit"))
        args = [*node.args[:1], *(k.value for k in node.keywords if k.arg in ("code", "status"))]
        if exits and any(_int_literal(a) for a in args):
            found.append(f"{filename}:{node.lineno} {ast.unparse(node)[:80]}")
    return found


def test_no_literal_exit_code_in_the_packages() -> None:
    files = [f for pkg in PACKAGES for f in sorted((REPO / pkg).rglob("*.py"))]
    assert len(files) > 50
    found = [
        hit
        for f in files
        for hit in literal_exits(f.read_text(encoding="utf-8"), str(f.relative_to(REPO)))
    ]
    assert not found, f"use coldstream.core.errors.ExitCode, not a literal: {found}"


@pytest.mark.parametrize(
    "source",
    [
        "import sys\nsys.exit(3)",
        "raise SystemExit(2)",
        "import os\nos._exit(5)",
        "parser.exit(2, 'bad')",
        "self.exit(status=2)",
        "exit(-1)",
    ],
)
def test_the_scan_finds_a_literal(source: str) -> None:
    assert literal_exits(source)


@pytest.mark.parametrize(
    "source",
    [
        "import sys\nsys.exit(main())",
        "raise SystemExit('--x: give a value')",
        "import os\nos._exit(ExitCode.DRAIN_TIMEOUT)",
        "parser.exit(ExitCode.BAD_INPUT, 'bad')",
        "x.exit_now(3)",
    ],
)
def test_the_scan_leaves_the_rest(source: str) -> None:
    assert not literal_exits(source)
