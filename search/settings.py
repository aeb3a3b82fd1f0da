"""What a search run depends on: :class:`SearchSettings`, checked before anything loads.

The part of the settings that changes the numbers (:meth:`SearchSettings.identity`) is stored in
the study, so a resume with other values is refused naming the option (see ``search.worker``).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import optuna
from sqlalchemy.engine import make_url

from dynlen.bench.model_io import DEFAULT_MODEL_DIR, LoadOptions
from dynlen.bench.squad import DEFAULT_DEV_SET
from dynlen.engine.precision import DEFAULT_PRECISION
from dynlen.engine.probes import AUTO_SIGNIFICANCE, auto_significance
from dynlen.engine.significance import SELECTION_HELP
from dynlen.errors import UserError
from dynlen.options import flag, int_at_least, option
from dynlen.search.budget import SYNTAX
from dynlen.search.space import parse_precisions

COSTS = ("flops", "latency")
SEARCH_DEVICE = "cpu"
# The settings that change the numbers: a resumed study must have been made with the same (the
# model's and the data file's content hashes join them in ``identity``).
IDENTITY = (
    "model",
    "data",
    "cost",
    "budget",
    "sampler",
    "seed",
    "search_questions",
    "heldout_questions",
    "heldout_fraction",
    "split_seed",
    "latency_sample",
    "latency_repeats",
    "latency_batch_size",
    "significance",
    "precision",
)
# How a refusal names what changed: the option, or what a content hash stands for.
CHANGED_CONTENT = {"model_sha": "--model (its files changed)", "data_sha": "--data (the file's content changed)"}


@dataclass(frozen=True)
class SearchSettings:
    """Everything a run depends on, each option declared once; the part that changes numbers is stored in the study."""

    model: str = option(DEFAULT_MODEL_DIR, "QA model folder or hub id")
    data: str = option(DEFAULT_DEV_SET, "SQuAD 1.1 JSON")
    run_dir: str = option("results/default", "run folder: study.db, run.json, trials.json, report", flag="--run")
    trials: int = option(100, "total completed trials wanted, baselines included", type=int_at_least(1))
    cost: str = option("flops", "second objective", choices=COSTS)
    budget: str | None = option(None, f"constraint: {SYNTAX} (relative to the model's keep-all) (default: none)")
    sampler: str = option("tpe", "the sampler: TPE (multivariate), the one measured best", cli=False)
    seed: int = option(0, "seed of the sampler", cli=False)
    search_questions: int | None = option(500, "questions of the search split used (0 = all)")
    heldout_questions: int | None = option(1000, "questions of the held-out split used for re-scoring (0 = all)")
    heldout_fraction: float = option(0.5, "share of questions (whole articles) held out", cli=False)
    split_seed: int = option(0, "seed of the article split", cli=False)
    storage: str | None = option(
        None,
        "Optuna storage URL, e.g. postgresql://user@host/db for many workers running the same command "
        "(default: SQLite in the run folder, one process)",
    )
    batch_size: int = option(32, "evaluation batch size", cli=False)
    latency_sample: int = option(16, "features timed per latency measurement", type=int_at_least(1))
    latency_repeats: int = option(3, "timed rounds per latency measurement", type=int_at_least(1))
    latency_batch_size: int = option(1, "batch size of latency timing", cli=False)
    max_rescore: int = option(
        16,
        "search-frontier points re-scored on held-out: first every one within 3 F1 of keep-all on the "
        "search split, then the rest evenly spread (baselines always are)",
    )
    study_name: str | None = option(
        None,
        "name of the study in the storage (default: the run folder's name, so one server holds many runs)",
        cli=False,
    )
    heartbeat: int = option(
        30,
        "seconds between a trial's heartbeats on a server storage; a trial silent for 3 beats (its worker "
        "was killed) is failed and retried",
        type=int_at_least(1),
    )
    significance: str = option(
        AUTO_SIGNIFICANCE,
        f"token selection: {SELECTION_HELP}; a comma list is searched as a dimension",
    )
    precision: str = option(
        DEFAULT_PRECISION,
        "precision of the products: fp32, bf16, fp16, int8, or auto (what this CPU multiplies natively); "
        "a comma list is searched with the selection as one dimension",
    )
    report: bool = option(True, "skip writing the report files", flag="--no-report", action="store_false")
    # How the model is loaded and where it runs: the CPU unless asked, as the committed runs measured.
    load: LoadOptions = field(default_factory=lambda: LoadOptions(device=SEARCH_DEVICE))

    def __post_init__(self) -> None:
        for name in ("search_questions", "heldout_questions"):  # 0 reads as all, as the option says
            if getattr(self, name) == 0:
                object.__setattr__(self, name, None)

    def resolved(self) -> SearchSettings:
        """These settings with ``auto`` significance and precision replaced by what they mean here."""
        out = self
        if self.significance == AUTO_SIGNIFICANCE:
            chosen, note = auto_significance(self.model)
            print(f"significance auto -> {chosen} ({note})")
            out = dataclasses.replace(out, significance=chosen)
        if "auto" in self.precision.split(","):
            chosen = ",".join(parse_precisions(self.precision))
            print(f"precision auto -> {chosen} (what this CPU multiplies natively)")
            out = dataclasses.replace(out, precision=chosen)
        return out

    def check(self) -> None:
        """Refuse, in one line, settings no run can use."""
        if self.cost not in COSTS:
            raise UserError(f"unknown {flag(SearchSettings, 'cost')} {self.cost!r}; choose flops or latency")
        if self.sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(sorted(SAMPLERS))}")
        if self.trials < 1:
            raise UserError(f"{flag(SearchSettings, 'trials')} must be at least 1; got {self.trials}")
        if self.heartbeat < 1:
            raise UserError(f"{flag(SearchSettings, 'heartbeat')} must be at least 1 second")
        parse_precisions(self.precision)  # one line naming the known precisions
        if self.max_rescore < 0:
            raise UserError(
                f"{flag(SearchSettings, 'max_rescore')} must be 0 or more (0: the baselines only); got {self.max_rescore}"
            )

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.run_dir).resolve() / 'study.db'}"

    @property
    def default_storage(self) -> bool:
        return self.storage is None

    @property
    def name(self) -> str:
        """The study's name: ``study_name``, else the run folder's name, so one server holds many runs."""
        return self.study_name or Path(self.run_dir).resolve().name

    def identity(self, data_sha: str | None = None, model_sha: str | None = None) -> dict:
        """The settings that change the numbers: a resumed study must have been made with the same."""
        out = {k: getattr(self, k) for k in IDENTITY}
        if data_sha is not None:
            out["data_sha"] = data_sha
        if model_sha is not None:
            out["model_sha"] = model_sha
        return out

    @staticmethod
    def changed(key: str) -> str:
        """How a refusal names the identity key ``key``: its option, or what its content hash stands for."""
        return CHANGED_CONTENT.get(key) or flag(SearchSettings, key)

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
