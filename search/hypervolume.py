"""2-D hypervolume of a (maximise F1, minimise relative cost) front, to compare samplers.

The reference point is (F1 = ``f1_floor``, cost = ``cost_ceiling``): a front that reaches higher
F1 at lower cost covers more area. Exact for two objectives: sort by cost, sum rectangles.
"""

from __future__ import annotations

from collections.abc import Iterable


def hypervolume(points: Iterable[tuple[float, float]], f1_floor: float, cost_ceiling: float = 1.0) -> float:
    """``points`` are (f1, cost) pairs; dominated points and points outside the box add nothing."""
    inside = sorted((c, f) for f, c in points if f > f1_floor and c < cost_ceiling)
    area, best_f1 = 0.0, f1_floor
    for i, (cost, f1) in enumerate(inside):
        best_f1 = max(best_f1, f1)
        next_cost = inside[i + 1][0] if i + 1 < len(inside) else cost_ceiling
        area += (next_cost - cost) * (best_f1 - f1_floor)
    return area
