"""Which configurations of a run are worth reporting: the accuracy-speedup Pareto frontier.

Kept free of plotting and file formats so that ``search`` (choosing what to re-score on the
held-out split) and ``reports`` (drawing and tabulating it, importing it from here) agree on one
definition.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from dynlen.bench.measurement import Measurement
from dynlen.search.records import TrialPoint


def scores_on(point: TrialPoint, split: str) -> Measurement | None:
    """The point's scores on ``split``; only "search" and "heldout" exist in a run."""
    if split not in ("search", "heldout"):
        raise ValueError(f"split must be 'search' or 'heldout', got {split!r}")
    return point.search if split == "search" else point.heldout


def speed_of(point: TrialPoint, scores, speed_key: str) -> float | None:
    """``scores``' speedup, where keep-all is the reference: its latency against itself is 1 by
    definition (the ratio it measured is the timing's noise, never a speedup), and against BERT-base it
    is the measured keep-all/BERT-base ratio."""
    value = getattr(scores, speed_key)
    own = scores.latency_speedup_vs_keep_all
    if point.baseline == "keep-all" and value is not None and speed_key.startswith("latency_speedup") and own:
        return value / own
    return value


def coordinates(point: TrialPoint, speed_key: str, split: str) -> tuple[float, float] | None:
    """(speedup, F1) of the point, or None when either is missing or not a finite number.

    Latency fields are None when latency was not measured; such points cannot be placed on a
    latency axis, so they are left out rather than treated as zero.
    """
    scores = scores_on(point, split)
    if scores is None:
        return None
    speed = speed_of(point, scores, speed_key)
    if speed is None or scores.f1 is None:
        return None
    if not (math.isfinite(speed) and math.isfinite(scores.f1)):
        return None
    return float(speed), float(scores.f1)


def _placed(points: Iterable[TrialPoint], speed_key: str, split: str) -> list[tuple[float, float, TrialPoint]]:
    """Feasible points that have both coordinates, as (speedup, F1, point)."""
    placed = []
    for point in points:
        if not point.feasible:
            continue
        xy = coordinates(point, speed_key, split)
        if xy is not None:
            placed.append((xy[0], xy[1], point))
    return placed


def pareto_front(points: Iterable[TrialPoint], speed_key: str, split: str = "heldout") -> list[TrialPoint]:
    """Feasible points no other feasible point beats on both F1 and ``speed_key``; by speedup ascending.

    A point is dropped when another is at least as good on both axes and better on one. Points
    with identical coordinates do not dominate each other, but listing both adds nothing, so the
    lowest trial number is kept: the result depends only on the scores, never on input order.
    """
    placed = _placed(points, speed_key, split)
    placed.sort(key=lambda item: (-item[0], -item[1], item[2].number))
    front, best_f1 = [], -math.inf
    for _speed, f1, point in placed:
        if f1 > best_f1:
            front.append(point)
            best_f1 = f1
    front.reverse()
    return front


def best_within(
    points: Iterable[TrialPoint], speed_key: str, f1_floor: float, split: str = "heldout"
) -> TrialPoint | None:
    """The fastest feasible point whose F1 is at least ``f1_floor``; None when nothing reaches it.

    Equal speedups are broken by higher F1, then lower trial number, so the answer is stable.
    """
    qualifying = [item for item in _placed(points, speed_key, split) if item[1] >= f1_floor]
    if not qualifying:
        return None
    return min(qualifying, key=lambda item: (-item[0], -item[1], item[2].number))[2]


def most_accurate(points: Iterable[TrialPoint], speed_key: str, split: str = "heldout") -> TrialPoint | None:
    """The highest-F1 frontier point: what comes closest when no point reaches an F1 floor."""
    front = pareto_front(points, speed_key, split)
    return front[0] if front else None
