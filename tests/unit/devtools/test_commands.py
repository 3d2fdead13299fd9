"""The dev subcommands: all built by ``devtools.commands``, every option's help shows its
default, and each command module is an ``add_arguments`` / ``run`` pair."""

from __future__ import annotations

import argparse
import importlib

import pytest

from coldstream.cli import build_parser
from devtools import commands


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _dev_parsers() -> dict[str, argparse.ArgumentParser]:
    top = _subparsers(build_parser())
    bench = _subparsers(top["bench"])
    return {
        "broker": top["broker"],
        "demo": top["demo"],
        "quickstart": top["quickstart"],
        "replay": top["replay"],
        "send": top["send"],
        "tail": top["tail"],
        **{f"bench {n}": b for n, b in bench.items()},
    }


def test_every_dev_command_is_there() -> None:
    assert sorted(_dev_parsers()) == [
        "bench blas",
        "bench codecs",
        "bench delivery",
        "bench encoder",
        "bench eos",
        "bench faults",
        "bench inference",
        "bench latency",
        "bench pod",
        "bench profile",
        "bench recommend",
        "bench rollout",
        "bench rollout-sim",
        "bench search",
        "bench serve",
        "bench sessions",
        "bench soak",
        "bench swap",
        "bench train-scale",
        "broker",
        "demo",
        "quickstart",
        "replay",
        "send",
        "tail",
    ]


@pytest.mark.parametrize("name", sorted(_dev_parsers()))
def test_every_option_help_shows_its_default(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "10000")  # no line wrapping (argparse also breaks at "-")
    p = _dev_parsers()[name]
    text = " ".join(p.format_help().split())
    for action in p._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS or action.dest == "help":
            continue
        assert action.help, f"{name} {action.option_strings[0]}: no help"
        if action.default is None:  # the help says in words what happens without the option
            assert "(default: " in action.help, (
                f"{name} {action.option_strings[0]}: help does not say the default: {action.help!r}"
            )
        else:
            shown = " ".join(f"{action.help} (default: {action.default})".split())
            assert shown in text, f"{name} {action.option_strings[0]}: {shown!r} not in the help"


@pytest.mark.parametrize(("name", "module", "_text"), [*commands.COMMANDS, *commands.BENCHMARKS])
def test_each_command_module_is_add_arguments_and_run(name: str, module: str, _text: str) -> None:
    mod = importlib.import_module(module)
    assert callable(mod.add_arguments) and callable(mod.run)
    assert not hasattr(mod, "register")  # registration lives in devtools.commands only
    p = _dev_parsers()[name if (name, module, _text) in commands.COMMANDS else f"bench {name}"]
    assert p.get_default("func") is mod.run


def test_evaluate_gets_the_stream_mode() -> None:
    evaluate = _subparsers(build_parser())["evaluate"]
    args = evaluate.parse_args(["--stream", "--rate", "50"])
    assert args.stream is True and args.rate == 50.0 and args.cut_share is None
    assert "--cut-share" in evaluate.format_help() and "(default: 0.6)" in evaluate.format_help()
