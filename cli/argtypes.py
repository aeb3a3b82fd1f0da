"""Argument types shared by the command lines, so a bad value reads the same everywhere."""

from __future__ import annotations

import argparse
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


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one ``error:`` line, as every other input mistake is."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")
