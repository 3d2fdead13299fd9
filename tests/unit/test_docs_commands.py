"""Every command a reader is told to type (the ``bash`` blocks of README.md and docs/*.md) is
a command that exists as written:

* ``coldstream ...``: parsed by the real parser (the subcommand and every flag exist, every
  value has the right type; an UPPER-CASE placeholder such as ``VERSION`` stands for 1);
* ``make X``: the Makefile has the target; ``python -m M``: the module is there;
* any repository path the line reads exists (not what it writes, nor kubectl resources).

Commands that do real work run for real elsewhere: ``send``/``tail``/``topics``/``worker``
errors in tests/integration/test_cli_broker.py, ``train``/``evaluate --events``
in tests/unit/trainer/test_byo_cli.py, the error table in tests/unit/test_cli_errors.py,
``demo`` in tests/integration/test_tansu_smoke.py, the Python blocks in test_readme.py.
``docker``, ``kubectl`` and ``kustomize`` cannot run here: their files are validated instead
(tests/deploy)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from coldstream.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PATH_ROOTS = ("deploy/", "kafka/", "docs/", "scripts/", "reports/", "tests/", ".ci/")


def _commands() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for block in re.findall(r"^```(?:bash|sh)\n(.*?)^```", text, re.M | re.S):
            joined = block.replace("\\\n", " ")
            for line in joined.splitlines():
                line = (
                    line.split(" # ")[0].split("#", 1)[0] if line.lstrip().startswith("#") else line
                )
                line = re.sub(r"\s+#\s.*$", "", line).strip()
                if line:
                    out.append((doc.name, line))
    return out


COMMANDS = _commands()


def _argv(line: str) -> list[str]:
    words = shlex.split(line.replace("&&", ";").split(";")[0].rstrip("&").strip())
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        words = words[1:]
    if words and words[0].endswith("/coldstream"):
        words[0] = "coldstream"
    return words


def test_the_docs_have_commands() -> None:
    assert len([c for c in COMMANDS if _argv(c[1])[:1] == ["coldstream"]]) >= 8


@pytest.mark.parametrize(("doc", "line"), COMMANDS, ids=[f"{d}:{ln[:50]}" for d, ln in COMMANDS])
def test_each_command_exists_as_written(doc: str, line: str) -> None:
    argv = _argv(line)
    if not argv:
        return
    if argv[0] == "coldstream":
        args = [("1" if re.fullmatch(r"[A-Z][A-Z_]+", a) else a) for a in argv[1:]]
        try:
            build_parser().parse_args(args)
        except SystemExit as e:
            pytest.fail(f"{doc}: `{line}` does not parse (exit {e.code})")
    elif argv[0] == "make":
        targets = re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), re.M)
        assert set(argv[1:]) <= set(targets), f"{doc}: `{line}`"
    elif len(argv) > 2 and argv[1] == "-m" and argv[0].endswith("python"):
        assert importlib.util.find_spec(argv[2]) is not None, f"{doc}: `{line}`"
    if argv[0] == "kubectl":  # deploy/NAME there is a Kubernetes resource, not a path
        return
    outputs = {argv[i + 1] for i, w in enumerate(argv[:-1]) if w in ("--out", "-o")}
    for word in argv:
        if word in outputs:  # written by the command, not read
            continue
        for token in word.split("="):
            if token.startswith(PATH_ROOTS) and "*" not in token and "<" not in token:
                assert (REPO / token.rstrip("/")).exists(), f"{doc}: `{line}` names {token}"


def test_the_check_can_fail() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["send", "--no-such-flag"])
    assert _argv("FOO=1 .venv/bin/coldstream send --user a  ") == [
        "coldstream",
        "send",
        "--user",
        "a",
    ]
