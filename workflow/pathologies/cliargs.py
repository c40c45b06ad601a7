"""Command-line options shared by the modules that run models (train, SIS, evaluation)."""

from __future__ import annotations

import argparse
import json

from .errors import UserError


class CommandParser(argparse.ArgumentParser):
    """The argument parser of a ``python -m pathologies.<module>`` command: a mistake on its command line is
    one :class:`UserError` line naming the program and the option (no usage lines; ``--help`` shows them)."""

    def __init__(self, module: str | None = None, **kwargs) -> None:
        # argparse makes subcommand parsers of this class too, naming them with ``prog``
        super().__init__(**({"prog": f"python -m {module}"} if module else {}), **kwargs)

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


def add_compute_options(parser: argparse.ArgumentParser, *, device: str = "auto", progress: bool = True) -> None:
    """Add ``--device``, ``--threads`` and (with ``progress``) ``--no-progress`` to ``parser``."""
    parser.add_argument("--device", default=device, choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    if progress:
        parser.add_argument("--no-progress", action="store_true")


def positive_int(text: str) -> int:
    """argparse ``type`` of an option that needs an integer >= 1 (threads, shards)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def json_object(text: str, option: str = "--spec") -> dict:
    """Parse the JSON object given to ``option``; anything else is a UserError naming the option."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{option} is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise UserError(f"{option} must be a JSON object, got {type(value).__name__}")
    return value


def named_files(values: list[str], option: str, key: str, example: str) -> dict[str, str]:
    """``["<key>=<file>", ...]`` given to a repeated ``option`` -> {key: file}; each key once."""
    files: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise UserError(f"{option} {value!r} is not <{key}>=<file>, e.g. {example}")
        if name in files:
            raise UserError(f"{option} names {key} {name!r} twice; give one file per {key}")
        files[name] = path
    return files
