"""What a search run leaves on disk, shared by ``search`` (writer) and ``reports`` (reader).

A run folder holds ``study.db`` (the Optuna study, the source of truth while searching),
``run.json`` (what was searched, how long, where) and ``trials.json`` (every trial with its
search-split :class:`~bench.measurement.Measurement`; frontier and baseline configurations also carry
a held-out one). Reports are made from these files alone, so regenerating a report never runs a model.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from dynlen.atomic import write_text_atomic
from dynlen.bench.measurement import Measurement
from dynlen.engine.config import LengthConfig, config_from_cells
from dynlen.errors import UserError


@dataclass
class TrialPoint:
    """One configuration with its search-split scores and, if re-scored, held-out scores."""

    number: int
    config: dict
    label: str
    baseline: str | None  # "keep-all", "constant-0.90", ... or None for sampled trials
    feasible: bool
    search: Measurement
    heldout: Measurement | None = None
    on_search_frontier: bool = False

    @property
    def length_config(self) -> LengthConfig:
        return LengthConfig.from_dict(self.config)

    def to_json(self) -> dict:
        """One entry of trials.json: the measurements in their flat study form."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["search"] = self.search.to_record()
        out["heldout"] = self.heldout.to_record() if self.heldout is not None else None
        return out

    @classmethod
    def from_json(cls, raw: dict) -> TrialPoint:
        config = LengthConfig.from_dict(raw["config"])
        heldout = raw.get("heldout")
        return cls(
            **{
                **raw,
                "search": Measurement.from_record(raw["search"], config),
                "heldout": None if heldout is None else Measurement.from_record(heldout, config),
            }
        )


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


def write_run(folder: Path, info: RunInfo, points: list[TrialPoint]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "trials.json", json.dumps([p.to_json() for p in points], indent=1) + "\n")
    write_text_atomic(folder / "run.json", json.dumps(asdict(info), indent=2) + "\n")


def read_run(folder: Path) -> tuple[RunInfo, list[TrialPoint]]:
    run_file, points_file = folder / "run.json", folder / "trials.json"
    if not run_file.is_file() or not points_file.is_file():
        raise UserError(
            f"{folder} holds no finished search (run.json and trials.json are missing); "
            "run `make pareto RUN=<name>` first"
        )
    try:
        info = RunInfo(**_read_json(run_file, dict))
        return info, [TrialPoint.from_json(raw) for raw in _read_json(points_file, list)]
    except (TypeError, KeyError, AttributeError) as exc:
        raise UserError(f"{folder} holds run files of another layout ({exc}); {REWRITE_HINT}") from None


REWRITE_HINT = "re-run the same `dynlen search` command: it rewrites run.json and trials.json from the study"


def _read_json(path: Path, kind: type) -> dict | list:
    """A run file's JSON, or one line saying it is damaged (a disk that filled up, a copy cut short)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is damaged ({exc}); {REWRITE_HINT}") from None
    if not isinstance(value, kind):
        raise UserError(f"{path} holds {type(value).__name__}, not a JSON {kind.__name__}; {REWRITE_HINT}")
    return value


# --- reading frontier.csv back ------------------------------------------------------------
def configs_from_frontier_csv(path: Path) -> dict[str, LengthConfig]:
    """Reference configurations: the committed report's frontier rows that drop tokens, by label."""
    if not path.is_file():
        raise UserError(f"{path} not found; commit a reference report first (make pareto RUN=reference)")
    configs = {}
    with path.open() as fh:
        for row in csv.DictReader(fh):
            config = config_from_cells(row)
            if not config.is_keep_all or config.precision != "fp32":  # float32 keep-all is the reference
                configs[config.label()] = config
    return configs
