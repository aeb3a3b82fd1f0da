"""What a search run leaves on disk, shared by ``search`` (writer) and ``reports`` (reader).

A run folder holds ``study.db`` (the Optuna study, the source of truth while searching),
``run.json`` (what was searched, how long, where) and ``trials.json`` (every trial with its
search-split scores; frontier and baseline configurations also carry held-out scores). Reports are made from these files
alone, so regenerating a report never runs a model.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.config import DEFAULT_SIGNIFICANCE, LengthConfig, parse_selection
from bench.errors import UserError


@dataclass
class Scores:
    """Accuracy and cost of one configuration on one split."""

    exact_match: float
    f1: float
    gflops_per_question: float
    flops_speedup_vs_keep_all: float
    flops_speedup_vs_bert_base: float
    flops_speedup_vs_bert_base_padded384: float | None = None
    latency_speedup_vs_keep_all: float | None = None
    latency_speedup_vs_bert_base: float | None = None
    latency_ms: float | None = None  # per feature at the measured batch size
    # paired bootstrap 95% interval of this F1 minus keep-all's on the same questions (held-out only)
    f1_delta_low: float | None = None
    f1_delta_high: float | None = None


@dataclass
class TrialPoint:
    """One configuration with its search-split scores and, if re-scored, held-out scores."""

    number: int
    config: dict
    label: str
    baseline: str | None  # "keep-all", "constant-0.90", ... or None for sampled trials
    feasible: bool
    search: Scores
    heldout: Scores | None = None
    on_search_frontier: bool = False

    @property
    def length_config(self) -> LengthConfig:
        return LengthConfig.from_dict(self.config)


@dataclass
class RunInfo:
    """Provenance of a run: printed in report.md."""

    name: str
    model: str
    data: str
    search_split: str
    heldout_split: str
    search_questions: int
    heldout_questions: int
    trials: int
    sampler: str
    cost: str  # "flops" or "latency"
    budget: str | None
    seconds: float
    machine: str
    date: str
    keep_all_heldout_f1: float | None = None
    latency_batch_size: int = 1
    extra: dict = field(default_factory=dict)


def _scores(raw: dict | None) -> Scores | None:
    return None if raw is None else Scores(**raw)


def write_run(folder: Path, info: RunInfo, points: list[TrialPoint]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps(asdict(info), indent=2) + "\n")
    (folder / "trials.json").write_text(json.dumps([asdict(p) for p in points], indent=1) + "\n")


def read_run(folder: Path) -> tuple[RunInfo, list[TrialPoint]]:
    run_file, points_file = folder / "run.json", folder / "trials.json"
    if not run_file.is_file() or not points_file.is_file():
        raise UserError(
            f"{folder} holds no finished search (run.json and trials.json are missing); "
            "run `make pareto RUN=<name>` first"
        )
    info = RunInfo(**json.loads(run_file.read_text()))
    points = []
    for raw in json.loads(points_file.read_text()):
        raw["search"] = _scores(raw["search"])
        raw["heldout"] = _scores(raw.get("heldout"))
        points.append(TrialPoint(**raw))
    return info, points


# --- a configuration's columns in frontier.csv ---------------------------------------------
def config_cells(config: LengthConfig) -> dict[str, str]:
    """The ``kind``, ``values`` and ``significance`` cells of a configuration's CSV row (values joined by ';').

    ``str()`` of a float round-trips exactly, so :func:`config_from_cells` gives back the same
    configuration, policy included: the regression guard re-measures what the report printed.
    """
    values = [int(v) for v in config.values] if config.kind == "counts" else list(config.values)
    return {"kind": config.kind, "values": ";".join(str(v) for v in values), "significance": config.selection}


def config_from_cells(row: Mapping[str, str]) -> LengthConfig:
    """The configuration a CSV row's cells describe (rows written before policies existed read as attention)."""
    config = LengthConfig.from_values([float(v) for v in row["values"].split(";")], row["kind"])
    selection = row.get("significance") or DEFAULT_SIGNIFICANCE
    return config.with_selection(*parse_selection(selection))


def configs_from_frontier_csv(path: Path) -> dict[str, LengthConfig]:
    """Reference configurations: the committed report's frontier rows that drop tokens, by label."""
    if not path.is_file():
        raise UserError(f"{path} not found; commit a reference report first (make pareto RUN=reference)")
    configs = {}
    with path.open() as fh:
        for row in csv.DictReader(fh):
            config = config_from_cells(row)
            if not config.is_keep_all:
                configs[config.label()] = config
    return configs
