"""What every ``coldstream`` command shares with its user: help that shows defaults, and
settings errors that name the env var and the flag.

* :class:`HelpFormatter` -- ``(default: ...)`` after every option's help (an option whose
  default is ``None`` says in its help what happens then).
* :func:`load_settings` -- the process's settings from the environment plus the command's
  flags; a bad value becomes one :class:`~coldstream.core.errors.UsageError` line such as
  ``--k 0: input should be greater than or equal to 1 (flag --k, env COLDSTREAM_K)``.
* :func:`flag_of` -- the flag of a settings field (``batch_size`` -> ``--batch-size``);
  :func:`add_setting_flags` adds flags for settings fields, their help saying the env var and
  the default (the settings object stays the one place that validates values).
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar

from pydantic import ValidationError

from coldstream.core.errors import UsageError
from coldstream.core.settings import SharedSettings

__all__ = ["HelpFormatter", "add_setting_flags", "flag_of", "load_settings", "settings_error"]

S = TypeVar("S", bound=SharedSettings)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: ...)`` after every option's help, except where the default is ``None``
    or ``SUPPRESS`` (there the help text itself says what happens)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def flag_of(field: str) -> str:
    """The command-line flag of a settings field: ``batch_size`` -> ``--batch-size``."""
    return "--" + field.replace("_", "-")


def _choices(annotation: Any) -> list[str] | None:
    """The values of a ``Literal[...]`` (or ``Literal[...] | None``) annotation."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                return _choices(arg)
    if typing.get_origin(annotation) is Literal:
        return [str(a) for a in typing.get_args(annotation)]
    return None


def add_setting_flags(
    parser: argparse.ArgumentParser | Any,
    cls: type[SharedSettings],
    names: Iterable[str],
    helps: Mapping[str, str] | None = None,
) -> None:
    """One ``--name`` flag per settings field (``dest`` = the field, default ``None`` =
    not given). The help is ``helps[name]`` or the field's docstring's first sentence,
    then ``(default: X; env VAR)``. Values stay strings for the settings object to parse,
    so a bad one gets the same message from a flag as from the env var; ``Literal``
    fields get argparse ``choices``; ``bool`` fields get ``--name`` / ``--no-name``."""
    helps = helps or {}
    for name in names:
        f = cls.model_fields[name]
        text = helps.get(name) or (f.description or name).split(". ")[0].rstrip(".")
        text = text.replace("``", "")
        default = "unset" if f.default is None else ("''" if f.default == "" else f.default)
        if isinstance(default, bool):
            default = str(default).lower()
        tail = f"(default: {default}; env {cls.env_var(name)})"
        doc = f"{text} {tail}".replace("%", "%%")
        if f.annotation is bool:
            parser.add_argument(
                flag_of(name), dest=name, action="store_true", default=None, help=doc
            )
            parser.add_argument(
                "--no-" + name.replace("_", "-"),
                dest=name,
                action="store_false",
                default=None,
                help=f"the opposite of {flag_of(name)}",
            )
            continue
        choices = _choices(f.annotation)
        lower = choices is not None and all(c == c.lower() for c in choices)
        extra: dict[str, Any] = {"type": str.lower} if lower else {}
        parser.add_argument(
            flag_of(name),
            dest=name,
            default=None,
            choices=choices,
            metavar=None if choices else name.upper(),
            help=doc,
            **extra,
        )


def _shown(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def settings_error(
    cls: type[SharedSettings], error: ValidationError, flags: Iterable[str] = ()
) -> str:
    """One line for a settings ``ValidationError``: which value (env var or flag), what is
    wrong with it, and both names of the setting. ``flags``: the fields this command has a
    flag for."""
    with_flag = set(flags)
    by_env = {cls.env_var(name): name for name in cls.model_fields}
    parts = []
    for err in error.errors():
        loc = [str(x) for x in err.get("loc", ())]
        msg = str(err.get("msg", "invalid value"))
        msg = msg.removeprefix("Value error, ")
        msg = msg[:1].lower() + msg[1:]
        if not loc:  # a model validator (several fields together)
            parts.append(msg)
            continue
        where = loc[0]
        field = by_env.get(where, where)
        env = cls.env_var(field) if field in cls.model_fields else where
        names = f"env {env}" + (f", flag {flag_of(field)}" if field in with_flag else "")
        value = _shown(err.get("input"))
        given = f"{env}={value}" if where in by_env else f"{flag_of(field)} {value}"
        parts.append(f"{given}: {msg} ({names})")
    return "; ".join(parts)


def load_settings(cls: type[S], *, flags: Iterable[str] = (), **overrides: Any) -> S:
    """``cls()`` read from the environment, then the flags given (``None``: not given)
    applied; a bad value raises :class:`UsageError` naming the env var and the flag."""
    names = tuple(flags) or tuple(overrides)
    try:
        settings = cls()
    except ValidationError as e:
        raise UsageError(settings_error(cls, e, names)) from None
    try:
        out = settings.with_overrides(**overrides)
    except ValidationError as e:
        raise UsageError(settings_error(cls, e, names)) from None
    assert isinstance(out, cls)
    return out
