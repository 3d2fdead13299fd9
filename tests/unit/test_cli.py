"""``coldstream train`` / ``evaluate``: help and path errors (no training here)."""

from __future__ import annotations

import pytest

from coldstream.cli import main


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
