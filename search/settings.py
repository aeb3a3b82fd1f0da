"""What a search run depends on: :class:`SearchSettings`, checked before anything loads.

The part of the settings that changes the numbers (:meth:`SearchSettings.identity`) is stored in
the study, so a resume with other values is refused naming the option (see ``search.worker``).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
from sqlalchemy.engine import make_url

from dynlen.engine.probes import AUTO_SIGNIFICANCE, auto_significance
from dynlen.errors import UserError

COSTS = ("flops", "latency")
# Which command-line option each identity key comes from, for the refusal message.
OPTION = {
    "model": "--model",
    "model_sha": "--model (its files changed)",
    "data": "--data",
    "data_sha": "--data (the file's content changed)",
    "cost": "--cost",
    "budget": "--budget",
    "sampler": "the sampler",
    "seed": "--seed",
    "search_questions": "--search-questions",
    "heldout_questions": "--heldout-questions",
    "heldout_fraction": "--heldout-fraction",
    "split_seed": "--split-seed",
    "latency_sample": "--latency-sample",
    "latency_repeats": "--latency-repeats",
    "latency_batch_size": "--latency-batch-size",
    "significance": "--significance",
}


@dataclass(frozen=True)
class SearchSettings:
    """Everything a run depends on; the part that changes numbers is stored in the study."""

    model: str
    data: str
    run_dir: str
    trials: int = 100
    cost: str = "flops"
    budget: str | None = None
    sampler: str = "tpe"
    seed: int = 0
    search_questions: int | None = 500
    heldout_questions: int | None = 1000
    heldout_fraction: float = 0.5
    split_seed: int = 0
    storage: str | None = None
    batch_size: int = 32
    latency_sample: int = 16
    latency_repeats: int = 3
    latency_batch_size: int = 1
    threads: int | None = None
    max_rescore: int = 16
    study_name: str | None = None
    heartbeat: int = 30  # seconds between a trial's heartbeats on a server storage; stale after 3 missed
    # the policy, or a comma list searched as a categorical dimension; "auto": the look-ahead
    # probes' ranking with the question kept when the model has probes, attention received otherwise
    significance: str = AUTO_SIGNIFICANCE

    def resolved(self) -> SearchSettings:
        """These settings with ``auto`` significance replaced by the policy it means for this model."""
        if self.significance != AUTO_SIGNIFICANCE:
            return self
        chosen, note = auto_significance(self.model)
        print(f"significance auto -> {chosen} ({note})")
        return dataclasses.replace(self, significance=chosen)

    def check(self) -> None:
        """Refuse, in one line, settings no run can use."""
        if self.cost not in COSTS:
            raise UserError(f"unknown cost {self.cost!r}; choose flops or latency")
        if self.sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(sorted(SAMPLERS))}")
        if self.trials < 1:
            raise UserError("TRIALS must be at least 1")
        if self.heartbeat < 1:
            raise UserError("--heartbeat must be at least 1 second")
        if self.max_rescore < 0:
            raise UserError(f"--max-rescore must be 0 or more (0: the baselines only); got {self.max_rescore}")

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.run_dir).resolve() / 'study.db'}"

    @property
    def default_storage(self) -> bool:
        return self.storage is None

    @property
    def name(self) -> str:
        """The study's name: ``--study-name``, else the run folder's name, so one server holds many runs."""
        return self.study_name or Path(self.run_dir).resolve().name

    def identity(self, data_sha: str | None = None, model_sha: str | None = None) -> dict:
        """The settings that change the numbers: a resumed study must have been made with the same."""
        keys = [k for k in OPTION if k not in ("model_sha", "data_sha")]
        out = {k: getattr(self, k) for k in keys}
        if data_sha is not None:
            out["data_sha"] = data_sha
        if model_sha is not None:
            out["model_sha"] = model_sha
        return out

    def public(self) -> dict:
        """The settings as written to run.json: a server password never reaches the run folder."""
        out = asdict(self)
        if self.storage:
            try:
                out["storage"] = make_url(self.storage).render_as_string(hide_password=True)
            except Exception:  # noqa: BLE001 - an unparsable URL was refused earlier; never print it raw
                out["storage"] = "<hidden>"
        return out


def cost_name(cost: str) -> str:
    """The second objective's name (``flops_vs_keep_all`` or ``latency_vs_keep_all``)."""
    return f"{cost}_vs_keep_all"


SamplerFactory = Callable[[int, bool], optuna.samplers.BaseSampler]  # (seed, shared) -> sampler


def _tpe(seed: int, shared: bool) -> optuna.samplers.BaseSampler:
    """Multivariate TPE; it reads the budget from each trial's constraint (``Trial.set_constraint``).

    ``shared``: other workers run trials at the same time; TPE then treats their running trials
    as bad points (constant liar) so the workers spread out instead of piling on one region.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=10, constant_liar=shared)


# The search's samplers by name: TPE, the one measured best; a benchmark registers others to compare.
SAMPLERS: dict[str, SamplerFactory] = {"tpe": _tpe}


def register_sampler(name: str, factory: SamplerFactory) -> None:
    """Offer another sampler to ``SearchSettings.sampler`` (a benchmark's comparison); a name is taken once."""
    if name in SAMPLERS:
        raise ValueError(f"sampler {name!r} is already registered")
    SAMPLERS[name] = factory


def make_sampler(name: str, seed: int, shared: bool = False) -> optuna.samplers.BaseSampler:
    """The sampler ``name`` seeded with ``seed``; ``shared`` when other workers run trials on the same study."""
    if name not in SAMPLERS:
        raise UserError(f"unknown sampler {name!r}; choose one of {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name](seed, shared)
