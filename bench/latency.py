"""Latency measured as a ratio against a reference, interleaved in the same run.

On a small shared CPU the absolute milliseconds drift by tens of percent from minute to
minute; timing the candidate and its references alternately, with the order rotated each
round, makes their ratio far steadier than either number alone.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import torch


@dataclass(frozen=True)
class Timing:
    """Seconds per round for one contender."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


@dataclass(frozen=True)
class Ratio:
    """Per-round reference/candidate ratios (> 1 means the candidate is faster)."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def as_dict(self) -> dict:
        return {"median": self.median, "min": min(self.values), "max": max(self.values), "rounds": len(self.values)}

    def __str__(self) -> str:
        return f"{self.median:.2f}x (min {min(self.values):.2f}, max {max(self.values):.2f}, {len(self.values)} rounds)"


def interleaved_timings(
    contenders: Mapping[str, Callable[[], object]], repeats: int = 5, warmup: int = 1, threads: int | None = None
) -> dict[str, Timing]:
    """Run every contender once per round, rotating the order; warm-up rounds are discarded."""
    if threads:
        torch.set_num_threads(threads)
    names = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(warmup + repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            contenders[name]()
            elapsed = time.perf_counter() - started
            if round_index >= warmup:
                samples[name].append(elapsed)
    return {name: Timing(tuple(vals)) for name, vals in samples.items()}


def ratio(reference: Timing, candidate: Timing) -> Ratio:
    """Round-by-round speedup of ``candidate`` over ``reference``."""
    return Ratio(tuple(r / c for r, c in zip(reference.samples, candidate.samples)))
