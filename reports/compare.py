"""Several search runs' held-out frontiers on the same axes.

Made for the question "did LengthDrop training move the frontier right?": each run is judged
against its *own* keep-all (speedup over keep-all on x, the run's keep-all F1 − drop as its
floor), because that is the budget a user of that model faces. Runs are only comparable when
they were re-scored on the same held-out questions, so that is checked, not assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dynlen.atomic import write_text_atomic
from dynlen.errors import UserError
from dynlen.reports.frames import frame, markdown, write_csv
from dynlen.reports.plot import save_with_legend
from dynlen.search.frontier import best_within, pareto_front
from dynlen.search.records import RunInfo, TrialPoint, read_run

FLOPS_VS_OWN = "flops_speedup_vs_keep_all"
LATENCY_VS_OWN = "latency_speedup_vs_keep_all"
COLOURS = ("#5f6368", "#1a73e8", "#e8710a", "#188038", "#a142f4")
AXES = (
    (FLOPS_VS_OWN, "FLOPs speedup vs own keep-all (real tokens)"),
    (LATENCY_VS_OWN, "latency speedup vs own keep-all (batch {batch})"),
)


@dataclass
class LabelledRun:
    """One run of the comparison, under the name the user gave it."""

    label: str
    folder: Path
    info: RunInfo
    points: list[TrialPoint]

    @property
    def keep_all_f1(self) -> float:
        if self.info.keep_all_heldout_f1 is None:
            raise UserError(
                f"{self.folder}: keep-all was not re-scored on the held-out split; "
                "re-run `make pareto` for that run so it is"
            )
        return self.info.keep_all_heldout_f1


@dataclass(frozen=True)
class Summary:
    """How far one run gets within ``drop`` F1 of its own keep-all."""

    label: str
    model: str
    keep_all_f1: float
    floor: float
    best_flops: TrialPoint | None
    best_latency: TrialPoint | None
    frontier_points: int


def load_runs(specs: list[tuple[str, Path]]) -> list[LabelledRun]:
    """Read every run and refuse to compare runs scored on different held-out questions."""
    if len(specs) < 2:
        raise UserError("give at least two runs to compare, as LABEL=RUN_DIR")
    runs = []
    for label, folder in specs:
        info, points = read_run(Path(folder))
        runs.append(LabelledRun(label, Path(folder), info, points))
    first = runs[0]
    for run in runs[1:]:
        for attr in ("heldout_split", "heldout_questions"):
            if getattr(run.info, attr) != getattr(first.info, attr):
                raise UserError(
                    f"{run.folder} and {first.folder} differ in {attr} ({getattr(run.info, attr)!r} vs "
                    f"{getattr(first.info, attr)!r}); re-run both with the same --data and --heldout-questions"
                )
    return runs


def summarise(run: LabelledRun, drop: float) -> Summary:
    floor = run.keep_all_f1 - drop
    return Summary(
        label=run.label,
        model=run.info.model,
        keep_all_f1=run.keep_all_f1,
        floor=floor,
        best_flops=best_within(run.points, FLOPS_VS_OWN, floor),
        best_latency=best_within(run.points, LATENCY_VS_OWN, floor),
        frontier_points=len(pareto_front(run.points, FLOPS_VS_OWN)),
    )


def _speed(point: TrialPoint | None, key: str) -> float | None:
    return None if point is None else getattr(point.heldout, key)


def _fmt(value: float | None, digits: int = 2, suffix: str = "x") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def summary_rows(summaries: list[Summary]) -> list[dict]:
    rows = []
    for s in summaries:
        rows.append(
            {
                "run": s.label,
                "model": s.model,
                "keep_all_f1": round(s.keep_all_f1, 2),
                "f1_floor": round(s.floor, 2),
                "best_flops_speedup_vs_keep_all": _speed(s.best_flops, FLOPS_VS_OWN),
                "best_flops_config": s.best_flops.label if s.best_flops else None,
                "best_flops_f1": s.best_flops.heldout.f1 if s.best_flops else None,
                "best_latency_speedup_vs_keep_all": _speed(s.best_latency, LATENCY_VS_OWN),
                "best_latency_config": s.best_latency.label if s.best_latency else None,
                "flops_frontier_points": s.frontier_points,
            }
        )
    return rows


FRONTIER_COLUMNS = (
    "run",
    "number",
    "label",
    "baseline",
    "f1",
    "exact_match",
    FLOPS_VS_OWN,
    LATENCY_VS_OWN,
    "flops_speedup_vs_bert_base",
)


def frontiers_frame(runs: list[LabelledRun]):
    """Every run's held-out FLOPs frontier, one row per point, as a DataFrame."""
    rows = []
    for run in runs:
        for p in pareto_front(run.points, FLOPS_VS_OWN):
            h = p.heldout
            rows.append(
                {
                    "run": run.label,
                    "number": p.number,
                    "label": p.label,
                    "baseline": p.baseline or "",
                    "f1": round(h.f1, 3),
                    "exact_match": round(h.exact_match, 3),
                    FLOPS_VS_OWN: round(h.flops_speedup_vs_keep_all, 4),
                    LATENCY_VS_OWN: None
                    if h.latency_speedup_vs_keep_all is None
                    else round(h.latency_speedup_vs_keep_all, 4),
                    "flops_speedup_vs_bert_base": round(h.flops_speedup_vs_bert_base, 4),
                }
            )
    return frame(rows, FRONTIER_COLUMNS)


def write_frontiers_csv(runs: list[LabelledRun], path: Path) -> Path:
    """Every run's held-out FLOPs frontier, one row per point, so the plot can be re-drawn anywhere."""
    return write_csv(frontiers_frame(runs), path)


def summary_frame(summaries: list[Summary]):
    rows = summary_rows(summaries)
    return frame(rows, list(rows[0]))


def headline(summaries: list[Summary], drop: float) -> list[str]:
    lines = []
    for s in summaries:
        best = s.best_flops
        reach = (
            f"{_fmt(_speed(best, FLOPS_VS_OWN))} FLOPs ({best.label}, F1 {best.heldout.f1:.2f}), "
            f"{_fmt(_speed(s.best_latency, LATENCY_VS_OWN))} latency"
            if best
            else "nothing"
        )
        lines.append(
            f"{s.label}: keep-all F1 {s.keep_all_f1:.2f}; best within keep-all − {drop:g} (F1 ≥ {s.floor:.2f}): {reach}"
        )
    return lines


def _md_cell(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else ("—" if value is None else str(value))


def write_compare_md(runs: list[LabelledRun], summaries: list[Summary], path: Path, drop: float) -> Path:
    first = runs[0].info
    table = [markdown(summary_frame(summaries), _md_cell)]
    sources = [
        f"- **{r.label}**: `{r.folder}` — model `{r.info.model}`, {r.info.trials} trials "
        f"({r.info.sampler}), searched on {r.info.search_split} ({r.info.search_questions} questions), "
        f"{r.info.date}"
        for r in runs
    ]
    text = "\n".join(
        [
            f"# Held-out frontiers compared: {', '.join(r.label for r in runs)}",
            "",
            *[f"- {line}" for line in headline(summaries, drop)],
            "",
            "![frontiers](compare.png)",
            "",
            f"Each run is measured against its own keep-all on the same held-out split ({first.heldout_split}, "
            f"{first.heldout_questions} questions); the floor is that run's keep-all F1 − {drop:g}.",
            "",
            *table,
            "",
            "## Runs",
            "",
            *sources,
            "",
        ]
    )
    write_text_atomic(path, text)
    return path


def _draw(ax, runs: list[LabelledRun], summaries: list[Summary], key: str) -> bool:
    drawn = False
    for colour, run, s in zip(COLOURS, runs, summaries):
        front = [p for p in pareto_front(run.points, key) if getattr(p.heldout, key) is not None]
        if not front:
            continue
        drawn = True
        xs = [getattr(p.heldout, key) for p in front]
        ys = [p.heldout.f1 for p in front]
        ax.plot(xs, ys, drawstyle="steps-pre", color=colour, linewidth=1.8, label=f"{run.label} frontier")
        ax.plot(xs, ys, linestyle="none", marker="o", markersize=4.5, color=colour)
        ax.axhline(
            s.floor, color=colour, linestyle=":", linewidth=1.2, label=f"{run.label}: keep-all {s.keep_all_f1:.2f} − 1"
        )
        best = best_within(run.points, key, s.floor)
        if best is not None:
            x, y = getattr(best.heldout, key), best.heldout.f1
            ax.annotate(
                f"{x:.2f}x",
                (x, y),
                xytext=(8, 10),
                textcoords="offset points",
                fontsize=9,
                fontweight="bold",
                color=colour,
                arrowprops=dict(arrowstyle="->", color=colour),
            )
    ax.grid(True, color="#e8eaed", linewidth=0.8)
    return drawn


def plot_comparison(runs: list[LabelledRun], summaries: list[Summary], out_dir: Path) -> list[Path]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (key, xlabel) in zip(axes, AXES):
        if not _draw(ax, runs, summaries, key):
            ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", color="#5f6368")
        ax.set_xlabel(xlabel.format(batch=runs[0].info.latency_batch_size))
    axes[0].set_ylabel(f"F1 on held-out split ({runs[0].info.heldout_questions} questions)")
    fig.suptitle("held-out frontiers: " + " vs ".join(r.label for r in runs), fontsize=12)
    return save_with_legend(fig, *axes[0].get_legend_handles_labels(), out_dir / "compare")


def compare_runs(specs: list[tuple[str, Path]], out_dir: Path, drop: float = 1.0) -> tuple[list[Path], list[Summary]]:
    """Write compare.png/svg, compare.csv (summary), frontiers.csv and compare.md into ``out_dir``."""
    runs = load_runs(specs)
    summaries = [summarise(run, drop) for run in runs]
    paths = plot_comparison(runs, summaries, out_dir)
    paths += [
        write_csv(summary_frame(summaries), out_dir / "compare.csv"),
        write_frontiers_csv(runs, out_dir / "frontiers.csv"),
        write_compare_md(runs, summaries, out_dir / "compare.md", drop),
    ]
    return paths, summaries


def parse_spec(text: str) -> tuple[str, Path]:
    label, sep, folder = text.partition("=")
    if not sep or not label or not folder:
        raise UserError(f"run {text!r} must be written LABEL=RUN_DIR, e.g. lengthdrop=reports/reference")
    return label, Path(folder)
