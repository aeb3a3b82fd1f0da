"""Pick, for a budget, the configuration with the highest held-out F1 from a finished run."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from bench.errors import UserError
from search.budget import Budget
from search.records import TrialPoint, read_run


class NothingMeetsBudget(UserError):
    """No re-scored configuration of the run meets the budget."""


def choose(run_dir: Path, budget: Budget | None) -> tuple[TrialPoint, dict]:
    """The best held-out configuration meeting ``budget``, and the JSON record describing it."""
    info, points = read_run(run_dir)
    scored = [p for p in points if p.heldout is not None]
    if not scored:
        raise UserError(f"{run_dir} has no held-out scores; re-run `make pareto RUN={run_dir.name}`")
    meeting = [p for p in scored if budget is None or budget.is_met(p.heldout)]
    if not meeting:
        closest = min(scored, key=lambda p: budget.violation(p.heldout))
        raise NothingMeetsBudget(
            f"no configuration of {run_dir} meets {budget} on the held-out split; closest: {closest.label} "
            f"({budget.name} = {budget.value(closest.heldout):.3g}, F1 {closest.heldout.f1:.2f})"
        )
    best = max(meeting, key=lambda p: (p.heldout.f1, p.heldout.flops_speedup_vs_keep_all))
    record = {
        "config": best.config,
        "label": best.label,
        "model": info.model,
        "run": str(run_dir),
        "budget": str(budget) if budget else None,
        "heldout_split": info.heldout_split,
        "heldout": asdict(best.heldout),
        "trial": best.number,
    }
    return best, record


def write_choice(record: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
