"""Options declared once: a setting's flag, help text and default live on its dataclass field.

The settings and recipe dataclasses (``SearchSettings``, the training recipes, ``LoadOptions``)
declare each option with :func:`option`, as optimum-benchmark's configs and ``HfArgumentParser``
do. ``dynlen.cli.options`` generates the command line from those fields, and a check that refuses
a value names the flag through :func:`flag`, so help, default and the name in an error message
come from one place. A field declared with ``cli=False`` is a setting of the Python API only.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

KEY = "dynlen.option"


@dataclass(frozen=True)
class Option:
    """What the command line needs to offer one field: its help, flag and argparse details."""

    help: str
    flag: str | None = None  # default: ``--`` + the field name with dashes
    cli: bool = True  # offered on the command line
    argparse: dict = field(default_factory=dict)  # choices, type, metavar, action, ...


def option(
    default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None, cli: bool = True, **argparse: Any
) -> Any:
    """A dataclass field whose default, help and flag are declared here, once (no default: a required field)."""
    return field(default=default, metadata={KEY: Option(help, flag, cli, argparse)})


def same_option(cls: type, name: str, default: Any) -> Any:
    """The option ``name`` of ``cls`` with another default: a subclass's own default, the declaration kept."""
    for f, spec in declared(cls):
        if f.name == name:
            return field(default=default, metadata={KEY: spec})
    raise KeyError(f"{cls.__name__} declares no option {name!r}")


def declared(cls: type, cli_only: bool = False) -> Iterator[tuple[dataclasses.Field, Option]]:
    """The fields of ``cls`` declared with :func:`option`, in order, with their declarations."""
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(KEY)
        if spec is not None and (spec.cli or not cli_only):
            yield f, spec


def flag(cls: type, name: str) -> str:
    """What an error about the field ``name`` of ``cls`` names: its command-line flag, or the name of a setting of the Python API only."""
    for f, spec in declared(cls):
        if f.name == name:
            return (spec.flag or "--" + name.replace("_", "-")) if spec.cli else name
    raise KeyError(f"{cls.__name__} declares no option {name!r}")


# --- range-checked argparse types, declared on the fields that need them ---------------------------
def int_at_least(minimum: int, meaning: str = "") -> Callable[[str], int]:
    """An argparse ``type``: a whole number no smaller than ``minimum`` (a count, a size, a step)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of at least {minimum}{meaning}")
        return value

    return parse


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number above 0 (a learning rate, an epoch count)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number above 0, e.g. 0.0001 or 2")
    return value


def threads(text: str) -> int:
    """An argparse ``type``: torch CPU threads, 1 up to this machine's CPU count (more only oversubscribes)."""
    cpus = os.cpu_count() or 1
    value = int_at_least(1)(text)
    if value > cpus:
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {cpus} CPUs; give 1 to {cpus} threads")
    return value
