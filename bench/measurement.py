"""One configuration's measurement: accuracy, exact FLOPs, interleaved latency, tokens kept.

Every consumer shares this one type and each file form is written and read here:

* metrics.json (``dynlen eval``): :meth:`Measurement.to_json` / :meth:`Measurement.from_json`;
  :func:`bench.metrics.metrics_record` adds the run's context and full FLOP and timing detail;
* the study's user attributes and trials.json (the search): :meth:`Measurement.to_record` /
  :meth:`Measurement.from_record`, flat, under the names the search has always stored;
* a row of frontier.csv (reports): :meth:`Measurement.csv_row` / :meth:`Measurement.from_csv_row`.

A trials.json or frontier.csv written before a field existed reads that field as None: the
committed reference runs (``reports/reference-standard``, ``reports/reference-lengthdrop``) predate
the interval and latency-spread fields and must still re-draw.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dynlen.engine.config import LengthConfig, config_cells, config_from_cells

if TYPE_CHECKING:
    from dynlen.bench.latency import LatencyResult
    from dynlen.engine.costs import FlopReport

FLOPS_UNIT = "FLOPs = 2 x MACs, matrix products only (projections, attention, FFN, span head)"

# frontier.csv columns that come from a measurement, in the order the committed files have them;
# columns added later come last (see reports.tables.COLUMNS).
SCORE_COLUMNS: tuple[str, ...] = (
    "exact_match",
    "f1",
    "gflops_per_question",
    "flops_speedup_vs_bert_base",
    "flops_speedup_vs_keep_all",
    "flops_speedup_vs_bert_base_padded384",
    "latency_speedup_vs_bert_base",
    "latency_speedup_vs_keep_all",
    "latency_ms",
)
INTERVAL_COLUMNS: tuple[str, ...] = ("f1_delta_low", "f1_delta_high")
LATENCY_SPREAD_COLUMNS: tuple[str, ...] = (
    "latency_ms_min",
    "latency_ms_max",
    "latency_speedup_vs_keep_all_min",
    "latency_speedup_vs_keep_all_max",
)
CSV_COLUMNS: tuple[str, ...] = SCORE_COLUMNS + INTERVAL_COLUMNS + LATENCY_SPREAD_COLUMNS


@dataclass
class Measurement:
    """What one configuration measured on one set of questions.

    Latency numbers are medians over interleaved rounds; ``*_min``/``*_max`` are the lowest and
    highest round, the noise the measurement itself states. ``latency_ms`` is per feature at the
    measured batch size. ``f1_delta_low``/``f1_delta_high`` bound the paired bootstrap 95% interval
    of this F1 minus keep-all's on the same questions (held-out points only).
    """

    exact_match: float
    f1: float
    gflops_per_question: float
    flops_speedup_vs_keep_all: float
    flops_speedup_vs_bert_base: float
    flops_speedup_vs_bert_base_padded384: float | None = None
    latency_speedup_vs_keep_all: float | None = None
    latency_speedup_vs_bert_base: float | None = None
    latency_ms: float | None = None
    f1_delta_low: float | None = None
    f1_delta_high: float | None = None
    flops_speedup_vs_keep_all_padded384: float | None = None
    latency_ms_min: float | None = None
    latency_ms_max: float | None = None
    latency_speedup_vs_keep_all_min: float | None = None
    latency_speedup_vs_keep_all_max: float | None = None
    tokens_kept_per_layer: list[float] | None = None
    questions: int | None = None
    features: int | None = None
    config: LengthConfig | None = None
    flops_unit: str = FLOPS_UNIT

    # --- building one ---------------------------------------------------------------------
    @classmethod
    def from_flops(cls, dynamic: FlopReport, padded: FlopReport | None = None, **fields) -> Measurement:
        """A measurement whose FLOPs come from the reports (dynamic padding, padded to 384).

        Accuracy defaults to 0 for callers that only need the costs (a budget check before any
        model run); every other field can be given by name.
        """
        fields.setdefault("exact_match", 0.0)
        fields.setdefault("f1", 0.0)
        fields.setdefault("questions", dynamic.questions)
        fields.setdefault("features", dynamic.features)
        return cls(
            gflops_per_question=dynamic.gflops_per_question,
            flops_speedup_vs_keep_all=dynamic.speedup_vs_keep_all,
            flops_speedup_vs_bert_base=dynamic.speedup_vs_bert_base,
            flops_speedup_vs_bert_base_padded384=padded.speedup_vs_bert_base if padded else None,
            flops_speedup_vs_keep_all_padded384=padded.speedup_vs_keep_all if padded else None,
            **fields,
        )

    def with_latency(self, latency: LatencyResult) -> Measurement:
        """A copy carrying ``latency``'s medians and the range of its rounds."""
        keep_all = latency.vs_keep_all
        return dataclasses.replace(
            self,
            latency_ms=latency.ms_per_feature,
            latency_ms_min=latency.ms_per_feature_min,
            latency_ms_max=latency.ms_per_feature_max,
            latency_speedup_vs_keep_all=keep_all.median,
            latency_speedup_vs_keep_all_min=min(keep_all.values),
            latency_speedup_vs_keep_all_max=max(keep_all.values),
            latency_speedup_vs_bert_base=latency.vs_bert_base.median if latency.vs_bert_base else None,
        )

    @property
    def has_latency(self) -> bool:
        return self.latency_speedup_vs_keep_all is not None or self.latency_ms is not None

    # --- the study's user attributes and trials.json ----------------------------------------
    def to_record(self) -> dict:
        """The flat form kept in the study and in trials.json (the trial records its own configuration)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in RECORD_FIELDS}

    @classmethod
    def from_record(cls, raw: Mapping, config: LengthConfig | None = None) -> Measurement:
        """Read :meth:`to_record`'s form; keys a record lacks (the committed runs that predate them) are None."""
        known = {k: raw[k] for k in RECORD_FIELDS if k in raw}
        if known.get("tokens_kept_per_layer") is not None:
            known["tokens_kept_per_layer"] = list(known["tokens_kept_per_layer"])
        return cls(**known, config=config)

    # --- metrics.json -----------------------------------------------------------------------
    def to_json(self) -> dict:
        """The measurement's part of metrics.json, in its layout (nested speedups, FLOPs, latency)."""
        latency = None
        if self.has_latency:
            latency = {
                "ms_per_feature": self.latency_ms,
                "ms_per_feature_min": self.latency_ms_min,
                "ms_per_feature_max": self.latency_ms_max,
                "speedup_vs_keep_all": {
                    "median": self.latency_speedup_vs_keep_all,
                    "min": self.latency_speedup_vs_keep_all_min,
                    "max": self.latency_speedup_vs_keep_all_max,
                },
            }
        interval = None
        if self.f1_delta_low is not None or self.f1_delta_high is not None:
            interval = {"low": self.f1_delta_low, "high": self.f1_delta_high}
        return {
            "questions": self.questions,
            "features": self.features,
            "config": self.config.to_dict() if self.config is not None else None,
            "config_label": self.config.label() if self.config is not None else None,
            "exact_match": self.exact_match,
            "f1": self.f1,
            "speedups": {
                "flops_vs_bert_base": self.flops_speedup_vs_bert_base,
                "flops_vs_keep_all": self.flops_speedup_vs_keep_all,
                "flops_vs_bert_base_padded384": self.flops_speedup_vs_bert_base_padded384,
                "flops_vs_keep_all_padded384": self.flops_speedup_vs_keep_all_padded384,
                "latency_vs_keep_all": self.latency_speedup_vs_keep_all,
                "latency_vs_bert_base": self.latency_speedup_vs_bert_base,
            },
            "flops": {"unit": self.flops_unit, "gflops_per_question": self.gflops_per_question},
            "latency": latency,
            "tokens_kept_per_layer": self.tokens_kept_per_layer,
            "f1_delta_vs_keep_all": interval,
        }

    @classmethod
    def from_json(cls, raw: Mapping) -> Measurement:
        """Read :meth:`to_json`'s form, or a whole metrics.json."""
        speedups = raw.get("speedups") or {}
        flops = raw.get("flops") or {}
        latency = raw.get("latency") or {}
        vs_keep_all = latency.get("speedup_vs_keep_all") or {}
        interval = raw.get("f1_delta_vs_keep_all") or {}
        gflops = flops.get("gflops_per_question")
        kept = raw.get("tokens_kept_per_layer")
        return cls(
            exact_match=raw["exact_match"],
            f1=raw["f1"],
            gflops_per_question=gflops,
            flops_speedup_vs_keep_all=speedups.get("flops_vs_keep_all"),
            flops_speedup_vs_bert_base=speedups.get("flops_vs_bert_base"),
            flops_speedup_vs_bert_base_padded384=speedups.get("flops_vs_bert_base_padded384"),
            flops_speedup_vs_keep_all_padded384=speedups.get("flops_vs_keep_all_padded384"),
            latency_speedup_vs_keep_all=speedups.get("latency_vs_keep_all"),
            latency_speedup_vs_bert_base=speedups.get("latency_vs_bert_base"),
            latency_ms=latency.get("ms_per_feature"),
            latency_ms_min=latency.get("ms_per_feature_min"),
            latency_ms_max=latency.get("ms_per_feature_max"),
            latency_speedup_vs_keep_all_min=vs_keep_all.get("min"),
            latency_speedup_vs_keep_all_max=vs_keep_all.get("max"),
            f1_delta_low=interval.get("low"),
            f1_delta_high=interval.get("high"),
            tokens_kept_per_layer=list(kept) if kept is not None else None,
            questions=raw.get("questions"),
            features=raw.get("features"),
            config=LengthConfig.from_dict(raw["config"]) if raw.get("config") else None,
            flops_unit=flops.get("unit", FLOPS_UNIT),
        )

    # --- a row of frontier.csv --------------------------------------------------------------
    def csv_row(self) -> dict:
        """The measurement's cells of a frontier.csv row, as values (None where not measured).

        With a configuration, its ``kind``, ``values`` and ``significance`` cells come too.
        """
        row = config_cells(self.config) if self.config is not None else {}
        row.update({column: getattr(self, column) for column in CSV_COLUMNS})
        return row

    @classmethod
    def from_csv_row(cls, row: Mapping[str, str]) -> Measurement:
        """Read a frontier.csv row (strings, empty where not measured); rows from older files
        lack the columns added since, which read as None."""
        cells = {column: _number(row.get(column)) for column in CSV_COLUMNS}
        config = config_from_cells(row) if row.get("kind") and row.get("values") else None
        return cls(**cells, config=config)


RECORD_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(Measurement) if f.name not in ("config", "flops_unit")
)


def _number(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    return float(text)
