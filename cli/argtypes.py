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


def dropout_or_none(text: str) -> float | None:
    """A dropout probability, or ``none`` for the model config's own (checked by the recipe)."""
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a probability such as 0 or 0.1, or 'none'") from None
