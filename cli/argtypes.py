"""Argument types shared by the command lines, so a bad value reads the same everywhere."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable


def positive_int_list(what: str, example: str) -> Callable[[str], list[int]]:
    """An argparse ``type`` for comma-separated positive integers (thread counts, batch sizes, rows)."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(t) for t in text.split(",")]
        except ValueError:
            values = []
        if not values or min(values) < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: give positive {what}, e.g. {example}")
        return values

    return parse


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


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one ``error:`` line, as every other input mistake is."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")
