"""Where a trial is scored: one sampled configuration measured on the search split.

Objectives: maximise F1, minimise cost (FLOPs or measured latency relative to keep-all). A budget
becomes an Optuna constraint, so trials that miss it stay in the study but never reach the
frontier. Each trial keeps its :class:`~bench.measurement.Measurement` in the study (user
attribute ``search_scores``, the measurement's record form), read back by :func:`completed_points`.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna

from dynlen.bench.measurement import Measurement
from dynlen.bench.runner import QARunner, measure
from dynlen.engine.config import LengthConfig
from dynlen.search.budget import Budget
from dynlen.search.records import TrialPoint
from dynlen.search.settings import SearchSettings
from dynlen.search.space import sample_config, search_tails

# (trial number, search-split measurement record) of an earlier trial with the same parameters, or None
Reuse = Callable[[optuna.Trial], "tuple[int, dict] | None"]

COMPLETE = optuna.trial.TrialState.COMPLETE


class Objective:
    """Samples one configuration, measures it on the search split and records it on the trial.

    ``reuse`` (the worker's de-duplication) may hand back an earlier trial's scores for the same
    parameters instead of a fresh measurement; the objective knows nothing else of workers.
    """

    def __init__(self, settings: SearchSettings, runner: QARunner, budget: Budget | None, reuse: Reuse | None = None):
        self.settings = settings
        self.runner = runner
        self.budget = budget
        self.reuse = reuse

    def measure(self, config: LengthConfig) -> Measurement:
        timed = self.settings.cost == "latency" or bool(self.budget and self.budget.needs_latency)
        s = self.settings
        return measure(self.runner, config, timed, s.latency_sample, s.latency_batch_size, s.latency_repeats)[0]

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        probes = self.runner.adaptive.probes
        config = sample_config(
            trial,
            self.runner.num_layers,
            selections=search_tails(self.settings.significance, self.settings.precision),
            probed_layers=None if probes is None else probes.layer_ids,
        )
        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("label", config.label())
        stored = self.reuse(trial) if self.reuse is not None else None
        if stored is not None:
            trial.set_user_attr("copied_from", stored[0])
            scores = Measurement.from_record(stored[1], config)
        else:
            scores = self.measure(config)
            trial.set_user_attr("measured", True)
        trial.set_user_attr("search_scores", scores.to_record())
        violation = min(self.budget.violation(scores), 1e9) if self.budget else 0.0
        trial.set_user_attr("constraint", [violation])
        trial.set_constraint("budget", violation)
        speed = (
            scores.flops_speedup_vs_keep_all if self.settings.cost == "flops" else scores.latency_speedup_vs_keep_all
        )
        return scores.f1, 1.0 / speed


def completed_points(study: optuna.Study) -> list[TrialPoint]:
    """Every completed trial with its search-split measurement, as the run files hold them."""
    points = []
    for t in study.get_trials(deepcopy=False, states=(COMPLETE,)):
        if "search_scores" not in t.user_attrs:
            continue
        constraint = t.user_attrs.get("constraint", [0.0])
        config = t.user_attrs["config"]
        points.append(
            TrialPoint(
                number=t.number,
                config=config,
                label=t.user_attrs["label"],
                baseline=t.user_attrs.get("baseline"),
                feasible=all(c <= 1e-12 for c in constraint),
                search=Measurement.from_record(t.user_attrs["search_scores"], LengthConfig.from_dict(config)),
            )
        )
    return points
