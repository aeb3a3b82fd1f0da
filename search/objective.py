"""Where a trial is scored: one sampled configuration measured on the search split.

Objectives: maximise F1, minimise cost (FLOPs or measured latency relative to keep-all). A budget
becomes an Optuna constraint, so trials that miss it stay in the study but never reach the
frontier. Each trial keeps its :class:`~bench.measurement.Measurement` in the study (user
attribute ``search_scores``, the measurement's record form), read back by :func:`completed_points`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import optuna

from bench.config import LengthConfig
from bench.measurement import Measurement
from bench.runner import QARunner
from search.budget import Budget
from search.records import TrialPoint
from search.settings import SearchSettings
from search.space import parse_selections, sample_config

if TYPE_CHECKING:
    from search.worker import Worker

COMPLETE = optuna.trial.TrialState.COMPLETE
RUNNING = optuna.trial.TrialState.RUNNING


def measure(
    runner: QARunner, settings: SearchSettings, config: LengthConfig, timed: bool, desc: str = "evaluating"
) -> tuple[Measurement, list[float]]:
    """EM/F1 and exact FLOPs of one configuration on the runner's split, latency vs keep-all when
    ``timed``; and each question's F1, for paired intervals."""
    result = runner.evaluate(config, desc=desc)
    measurement = result.measurement
    if timed:
        latency = runner.latency(
            config,
            sample=settings.latency_sample,
            batch_size=settings.latency_batch_size,
            repeats=settings.latency_repeats,
            with_bert_base=False,
        )
        measurement = measurement.with_latency(latency)
    return measurement, list(result.per_question_f1 or [])


class Objective:
    """Scores one sampled configuration on the search split; a configuration any worker already
    measured is read back from the study instead of measured again."""

    def __init__(self, settings: SearchSettings, runner: QARunner, budget: Budget | None, worker: Worker | None = None):
        self.settings = settings
        self.runner = runner
        self.budget = budget
        self.worker = worker
        self.on_start = None  # called once when the trial exists (releases the start lock)

    def measure(self, config: LengthConfig) -> Measurement:
        timed = self.settings.cost == "latency" or bool(self.budget and self.budget.needs_latency)
        return measure(self.runner, self.settings, config, timed)[0]

    def stored_scores(self, trial: optuna.Trial) -> tuple[int, dict] | None:
        """(trial number, search-split measurement record) of a trial with the same parameters,
        waiting for an earlier running one (another worker measuring the same point) to finish first."""
        study = trial.study
        while True:
            same = [
                t
                for t in study.get_trials(deepcopy=False, states=(COMPLETE, RUNNING))
                if t.number != trial.number and t.params == trial.params
            ]
            done = [t for t in same if t.state == COMPLETE and "search_scores" in t.user_attrs]
            if done:
                return done[0].number, done[0].user_attrs["search_scores"]
            if not any(t.state == RUNNING and t.number < trial.number for t in same):
                return None
            if self.worker is not None:
                self.worker.fail_stale()
            time.sleep(0.5)

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        if self.on_start is not None:
            self.on_start()
            self.on_start = None
        if self.worker is not None:
            trial.set_user_attr("worker", self.worker.id)
            self.worker.ran.append(trial.number)
        probes = self.runner.adaptive.probes
        config = sample_config(
            trial,
            self.runner.num_layers,
            selections=parse_selections(self.settings.significance),
            probed_layers=None if probes is None else probes.layer_ids,
        )
        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("label", config.label())
        stored = self.stored_scores(trial)
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
