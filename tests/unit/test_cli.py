"""``coldstream`` commands: help (every option shows its default), path errors (no training
here), the one-line usage error of a bad option, and ``coldstream settings``."""

from __future__ import annotations

import argparse

import pytest

from coldstream.cli import build_parser, main


@pytest.mark.parametrize(
    ("cmd", "option"),
    [
        ("train", "--model-store"),
        ("evaluate", "--out"),
        ("trainer", "--model-store"),
        ("worker", "--model-store"),
    ],
)
def test_help(cmd, option, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0 and option in capsys.readouterr().out


def test_wrong_paths_are_named_and_exit_non_zero(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope")]) == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--teacher", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "empty") in err and "config.json" in err


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _parsers() -> dict[str, argparse.ArgumentParser]:
    top = _subparsers(build_parser())
    topics = _subparsers(top["topics"])
    out = {
        n: top[n] for n in ("worker", "trainer", "train", "evaluate", "send", "tail", "settings")
    }
    out.update({f"topics {n}": p for n, p in topics.items()})
    return out


@pytest.mark.parametrize("name", sorted(_parsers()))
def test_every_option_says_its_default(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An option's help ends in ``(default: ...)``: the formatter adds it, or the help text
    says it in words (an option whose default is None)."""
    monkeypatch.setenv("COLUMNS", "10000")
    p = _parsers()[name]
    text = " ".join(p.format_help().split())
    missing = []
    for action in p._actions:
        if not action.option_strings or action.dest == "help" or action.help is None:
            continue
        if action.option_strings[0].startswith("--no-"):  # the other half of a --x switch
            continue
        help_text = " ".join(action.help.split()).replace("%%", "%")
        shown = f"{help_text} (default: " if action.default is not None else help_text
        if "(default: " not in shown or shown not in text:
            missing.append(action.option_strings[0])
    assert not missing, f"{name}: options without a default in --help: {missing}"


def test_worker_and_trainer_help_show_the_settings_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["trainer", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for flag, default in (("--cycle-events", "20000"), ("--gate-margin", "0.01")):
        assert flag in out and f"(default: {default}; env COLDSTREAM_TRAINER_" in out
    with pytest.raises(SystemExit):
        main(["worker", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 10; env COLDSTREAM_K)" in out and "(default: 6066; env " in out


def test_a_bad_option_is_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["worker", "--no-such-option"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert err.startswith("coldstream: error: unrecognized arguments: --no-such-option (see: ")
    with pytest.raises(SystemExit) as e:
        main(["worker", "--k"])
    err = capsys.readouterr().err
    assert err == (
        "coldstream worker: error: argument --k: expected one argument "
        "(see: coldstream worker --help)\n"
    )


@pytest.mark.parametrize(
    ("process", "env"), [("worker", "COLDSTREAM_K"), ("trainer", "COLDSTREAM_TRAINER_GATE_MARGIN")]
)
def test_settings_prints_each_process_table(process, env, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLDSTREAM_SASL_PASSWORD", "s3cret")
    assert main(["settings", process]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| env var | default | meaning |") and f"| `{env}` |" in out
    assert "`COLDSTREAM_BOOTSTRAP` | `127.0.0.1:9092`" in out
    assert main(["settings", process, "--values"]) == 0
    out = capsys.readouterr().out
    assert "| value here |" in out and "s3cret" not in out and "`***`" in out
