"""Command-line options derived from a typed dataclass: flags, types, bounds and help from one place.

``worker`` (``WorkerConfig``) and ``study_admin create`` (``StudyDefinition``) both describe their
options as dataclass fields; this module turns them into ``argparse`` options from
``dataclasses.fields`` and their metadata alone (no source parsing), reads the environment variables
named there, and parses values with the same rules (one boolean parser for both CLIs). Field metadata
keys: ``help`` (required for an option), ``env`` (environment variable), ``flag`` (flag name if not
``--field-name``), ``bounds`` (inclusive ``(low, high)``), ``choices``, ``cli`` (``False`` hides a
field), ``default_help`` (how the default is described), ``repeatable`` (the flag may be given more than once:
its values come as a list).
"""

from __future__ import annotations

import argparse
import textwrap
import types
import typing
from collections.abc import Collection, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


def parse_number(kind: type, text: str) -> Any:
    """``text`` as an ``int`` or ``float`` written in ASCII digits (Python also reads other scripts' digits: ``５``)."""
    if not text.isascii():
        raise ValueError(f"{text!r} is not a number written in ASCII digits")
    return kind(text)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, naming the value and where the accepted ones are listed."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise ValueError(f"{text!r} is not a boolean (use true/false)")


@dataclass(frozen=True)
class Option:
    name: str
    flag: str
    kind: type
    default: Any
    help: str
    env: str | None = None
    bounds: tuple[float, float] | None = None
    choices: Collection[Any] | None = None
    """The values accepted, read when a value is checked (the algorithm registry itself for ``--algo``)."""
    default_help: str | None = None
    repeatable: bool = False

    def convert(self, raw: Any, source: str) -> Any:
        """``raw`` (text from a flag or variable, or a value) as this option's type, within its limits."""
        if isinstance(raw, str):
            try:
                if self.kind is bool:
                    value = parse_bool(raw)
                else:
                    value = parse_number(self.kind, raw) if self.kind in (int, float) else self.kind(raw)
            except ValueError:
                raise ValueError(f"{source}={raw!r} is not a valid {self.kind.__name__}") from None
        else:
            value = raw
        self.check(value, source)
        return value

    def check(self, value: Any, source: str | None = None) -> None:
        where = source or self.name
        if self.bounds is not None and value is not None:
            low, high = self.bounds
            if not low <= value <= high:
                raise ValueError(f"{where}={value!r} is outside the accepted range [{low}, {high}]")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{where}={value!r} is not one of {list(self.choices)}")

    def describe(self) -> str:
        parts = [self.help]
        if self.choices is not None:
            parts.append(f"one of {', '.join(map(str, self.choices))}")
        if self.bounds is not None:
            parts.append(f"{self.bounds[0]}-{self.bounds[1]}")
        default = self.default_help or (None if self.default in (None, MISSING) else str(self.default))
        if default:
            parts.append(f"default: {default}")
        if self.env:
            parts.append(f"env: {self.env}")
        return f"{parts[0]} [{'; '.join(parts[1:])}]" if len(parts) > 1 else parts[0]


def _value_type(hint: Any) -> type:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint if hint in (bool, int, float, str) else str


_OPTIONS: dict[type, list[Option]] = {}


def options_of(cls: type) -> list[Option]:
    """One :class:`Option` per field of the dataclass ``cls`` that the command line may set (computed once)."""
    if cls not in _OPTIONS:
        _OPTIONS[cls] = _options(cls)
    return _OPTIONS[cls]


def _options(cls: type) -> list[Option]:
    hints = typing.get_type_hints(cls)
    found = []
    for f in fields(cls):
        meta: Mapping[str, Any] = f.metadata
        if not meta.get("cli", True):
            continue
        if "help" not in meta:
            raise TypeError(f"{cls.__name__}.{f.name} is an option without help text (metadata 'help')")
        found.append(
            Option(
                name=f.name,
                flag=meta.get("flag", "--" + f.name.replace("_", "-")),
                kind=_value_type(hints[f.name]),
                default=f.default,
                help=meta["help"],
                env=meta.get("env"),
                bounds=meta.get("bounds"),
                choices=meta.get("choices"),
                default_help=meta.get("default_help"),
                repeatable=meta.get("repeatable", False),
            )
        )
    return found


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, wrapping help text at spaces only: ``env-steps`` never becomes ``env- steps``."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def add_options(parser: argparse.ArgumentParser, options: list[Option], *, required: tuple[str, ...] = ()) -> None:
    """Add each option; values stay ``None`` when not given, so callers can fall back to env and defaults."""
    for option in options:
        if option.kind is bool:
            parser.add_argument(option.flag, dest=option.name, action=argparse.BooleanOptionalAction,
                                default=None, help=option.describe())  # fmt: skip
            continue

        def convert(text: str, option: Option = option) -> Any:
            try:
                return option.convert(text, option.flag)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None

        parser.add_argument(option.flag, dest=option.name, type=convert, default=None,
                            required=option.name in required, metavar=option.name.upper(),
                            action="append" if option.repeatable else "store", help=option.describe())  # fmt: skip


def collect(
    args: argparse.Namespace, options: list[Option], environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Values given as flags, else from the options' environment variables; defaults are left out."""
    values: dict[str, Any] = {}
    for option in options:
        raw = getattr(args, option.name, None)
        if raw is not None:
            values[option.name] = raw
        elif environ is not None and option.env and environ.get(option.env):
            values[option.name] = option.convert(environ[option.env], option.env)
    return values
