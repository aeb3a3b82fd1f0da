"""Budgets: one syntax for every command (``--budget`` and ``BUDGET=``).

* ``flops-speedup>=X``   -- FLOPs speedup over the same model's keep-all
* ``latency-speedup>=X`` -- measured latency speedup over the same model's keep-all
* ``gflops<=X``          -- GFLOPs per question
* ``latency-ms<=X``      -- milliseconds per feature at the measured batch size

Optuna treats a constraint value <= 0 as satisfied, so :meth:`Budget.violation` returns
how far a configuration is from the budget in that sign convention.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from dynlen.bench.measurement import Measurement
from dynlen.errors import UserError

_FORMS = {
    "flops-speedup": (">=", "flops_speedup_vs_keep_all"),
    "latency-speedup": (">=", "latency_speedup_vs_keep_all"),
    "gflops": ("<=", "gflops_per_question"),
    "latency-ms": ("<=", "latency_ms"),
}
SYNTAX = "flops-speedup>=X, latency-speedup>=X, gflops<=X or latency-ms<=X"


@dataclass(frozen=True)
class Budget:
    """A threshold on one cost measure of a :class:`~bench.measurement.Measurement`."""

    name: str
    threshold: float

    @property
    def op(self) -> str:
        return _FORMS[self.name][0]

    @property
    def field(self) -> str:
        return _FORMS[self.name][1]

    @property
    def needs_latency(self) -> bool:
        return self.name.startswith("latency")

    def value(self, scores: Measurement) -> float | None:
        return getattr(scores, self.field)

    def violation(self, scores: Measurement) -> float:
        """<= 0 when met; positive (and larger when further off) otherwise."""
        value = self.value(scores)
        if value is None:
            return float("inf")
        return self.threshold - value if self.op == ">=" else value - self.threshold

    def violation_of(self, value: float) -> float:
        """:meth:`violation` of a bare value of this budget's measure."""
        return self.threshold - value if self.op == ">=" else value - self.threshold

    def is_met(self, scores: Measurement) -> bool:
        return self.violation(scores) <= 1e-12

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.threshold:g}"


def parse_budget(text: str | None) -> Budget | None:
    """``None``/empty means no budget."""
    if text is None or not text.strip() or text.strip().lower() == "none":
        return None
    match = re.fullmatch(r"\s*([a-z-]+)\s*(>=|<=)\s*([0-9]*\.?[0-9]+)\s*", text)
    if not match or match.group(1) not in _FORMS:
        raise UserError(f"cannot read budget {text!r}; write one of {SYNTAX}, e.g. BUDGET='flops-speedup>=2'")
    name, op, number = match.group(1), match.group(2), float(match.group(3))
    if op != _FORMS[name][0]:
        raise UserError(f"budget {text!r}: {name} takes {_FORMS[name][0]} (e.g. {name}{_FORMS[name][0]}{number:g})")
    if number <= 0:
        raise UserError(f"budget {text!r}: the threshold must be positive")
    return Budget(name, number)


def check_reachable(budget: Budget, cheapest, where: str) -> None:
    """Refuse, before any trial runs, a FLOPs budget that even the cheapest configuration misses.

    ``cheapest`` is the FLOPs report (:class:`dynlen.engine.costs.FlopReport`) of the cheapest
    configuration the search space allows, counted on the split's real lengths: FLOPs need no
    model run, so an impossible budget costs nothing. Latency budgets can only be measured, and
    are left to the search (which says at the end when no trial met them).
    """
    if budget.needs_latency:
        return
    scores = Measurement.from_flops(cheapest)
    if budget.is_met(scores):
        return
    value = budget.value(scores)
    raise UserError(
        f"budget {budget} cannot be met: the cheapest configuration the search space allows reaches "
        f"{budget.name} {value:.3g} on the {where}; ask for {budget.name}{budget.op}{_round_toward(value, budget.op)} "
        "or less demanding"
    )


def _round_toward(value: float, op: str) -> str:
    """A printable threshold that the cheapest configuration still meets."""
    scaled = value * 100
    return f"{(math.floor(scaled) if op == '>=' else math.ceil(scaled)) / 100:g}"


# --- latency budgets judged with their spread ---------------------------------------------
MET, MISSED, UNSURE = "met", "missed", "within timing noise"


def keep_all_noise(keep_all: Measurement | None) -> float:
    """How far keep-all timed against itself strays from 1 (median or any round): the run's timing noise."""
    if keep_all is None or keep_all.latency_speedup_vs_keep_all is None:
        return 0.0
    ratios = (
        keep_all.latency_speedup_vs_keep_all,
        keep_all.latency_speedup_vs_keep_all_min,
        keep_all.latency_speedup_vs_keep_all_max,
    )
    return max(abs(r - 1.0) for r in ratios if r is not None)


def verdict(budget: Budget, scores: Measurement, noise: float = 0.0, reference: bool = False) -> str:
    """Whether ``scores`` meet ``budget``; a latency budget on its rounds' range widened by ``noise``.

    A point whose interval holds the budget's edge is :data:`UNSURE`: the run cannot tell it met
    the budget. ``reference``: keep-all, whose speedup over itself is exactly 1.
    """
    if not budget.needs_latency:
        return MET if budget.is_met(scores) else MISSED
    if budget.name == "latency-speedup" and reference:
        return MET if 1.0 >= budget.threshold else MISSED
    low, high = _latency_interval(budget, scores, noise)
    if low is None:
        return MISSED
    good, bad = (low, high) if budget.op == ">=" else (high, low)
    if budget.violation_of(good) <= 1e-12:
        return MET
    return MISSED if budget.violation_of(bad) > 1e-12 else UNSURE


def _latency_interval(budget: Budget, scores: Measurement, noise: float) -> tuple[float | None, float | None]:
    median = budget.value(scores)
    if median is None:
        return None, None
    field = budget.field
    low = getattr(scores, f"{field}_min", None) or median
    high = getattr(scores, f"{field}_max", None) or median
    return min(low, median) * (1 - noise), max(high, median) * (1 + noise)
