"""Settings errors name the env var and the flag; setting flags show env var and default."""

from __future__ import annotations

import argparse

import pytest

from coldstream.core.errors import UsageError
from coldstream.core.usage import HelpFormatter, add_setting_flags, flag_of, load_settings
from stream_app.settings import Settings
from trainer.settings import TrainerSettings


def test_flag_of() -> None:
    assert flag_of("batch_size") == "--batch-size" and flag_of("k") == "--k"


def test_env_value_is_named_by_its_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLDSTREAM_K", "abc")
    with pytest.raises(UsageError) as e:
        load_settings(Settings, flags=("k",))
    assert str(e.value).startswith("COLDSTREAM_K=abc: input should be a valid integer")
    assert str(e.value).endswith("(env COLDSTREAM_K, flag --k)")


def test_flag_value_is_named_by_its_flag_and_several_are_joined() -> None:
    with pytest.raises(UsageError) as e:
        load_settings(Settings, k="0", web_port="99999")
    msg = str(e.value)
    assert msg.startswith("--k 0: input should be greater than or equal to 1")
    assert "; --web-port 99999: input should be less than or equal to 65535" in msg
    assert "\n" not in msg


def test_the_trainer_prefix_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLDSTREAM_TRAINER_CYCLE_EVENTS", "-5")
    with pytest.raises(UsageError, match=r"^COLDSTREAM_TRAINER_CYCLE_EVENTS=-5: .*\(env "):
        load_settings(TrainerSettings)


def test_good_values_pass_and_flags_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLDSTREAM_K", "7")
    assert load_settings(Settings).k == 7
    assert load_settings(Settings, k="12", batch_size=None).k == 12


def test_setting_flags_show_default_and_env_and_keep_strings() -> None:
    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    add_setting_flags(p, Settings, ("k", "profile", "fast_path", "log_level"))
    text = " ".join(p.format_help().split())
    assert "Items per recommendation (default: 10; env COLDSTREAM_K)" in text
    assert "{dev,prod}" in text and "--no-fast-path" in text
    args = p.parse_args(["--k", "3", "--log-level", "INFO", "--no-fast-path"])
    assert args.k == "3" and args.log_level == "info" and args.fast_path is False
    assert p.parse_args([]).k is None  # not given: the environment decides
