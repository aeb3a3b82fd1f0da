"""``pareto.png`` / ``pareto.svg``: held-out F1 against FLOPs and latency speedup over BERT-base.

Drawn on a bare :class:`matplotlib.figure.Figure` so that making a report never touches pyplot's
global figure list or backend: reports can be made from tests, the search command and notebooks
alike without leaking state between them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from dynlen.atomic import write_bytes_atomic
from dynlen.reports.tables import FLOPS_KEY, LATENCY_KEY, line_name
from dynlen.search.frontier import best_within, coordinates, pareto_front
from dynlen.search.records import RunInfo, TrialPoint

TRIAL_COLOUR = "#9aa0a6"
FRONTIER_COLOUR = "#1a73e8"
KEEP_ALL_COLOUR = "#202124"
CONSTANT_COLOUR = "#e8710a"


@dataclass(frozen=True)
class ReferenceLine:
    """A horizontal F1 floor ("within 1 point of BERT-base", "within 1 point of our own keep-all")."""

    name: str
    label: str
    f1: float
    colour: str
    style: str


def reference_lines(info: RunInfo, bert_f1: float, drop: float) -> list[ReferenceLine]:
    lines = [
        ReferenceLine(
            line_name("BERT", drop),
            f"{line_name('BERT', drop)} ({bert_f1:g} − {drop:g} = {bert_f1 - drop:g})",
            bert_f1 - drop,
            "#d93025",
            "--",
        )
    ]
    own = info.keep_all_heldout_f1
    if own is not None:
        lines.append(
            ReferenceLine(
                line_name("own", drop),
                f"{line_name('own', drop)} (keep-all {own:.2f} − {drop:g} = {own - drop:.2f})",
                own - drop,
                "#188038",
                ":",
            )
        )
    return lines


def _heldout_f1s(points: list[TrialPoint]) -> list[float]:
    """F1 of everything drawn from the held-out split: the frontiers and the baselines."""
    shown = pareto_front(points, FLOPS_KEY) + pareto_front(points, LATENCY_KEY)
    shown += [p for p in points if p.baseline and p.heldout is not None]
    return [p.heldout.f1 for p in shown]


def f1_range(points: list[TrialPoint], lines: list[ReferenceLine]) -> tuple[float, float]:
    """Y-limits covering the held-out points and every reference line.

    The reference lines are included even when the model is far below them (a 70-F1 model
    against an 87.5 line), so the gap is visible rather than the line silently missing. Sampled
    trials do not widen the range downwards: a few configurations that drop nearly every token
    score near zero and would squash the frontier into a sliver.
    """
    core = _heldout_f1s(points) + [line.f1 for line in lines]
    top = max(core + [p.search.f1 for p in points])
    bottom = min(core)
    span = max(top - bottom, 1.0)
    return bottom - 0.05 * span, top + 0.12 * span  # headroom for the labels above the best points


def _is_measured(points: list[TrialPoint], key: str) -> bool:
    return any(coordinates(p, key, split) is not None for p in points for split in ("search", "heldout"))


def _draw_trials(ax, points: list[TrialPoint], key: str, y_low: float) -> int:
    """All trials, faint, at their search-split scores; returns how many fall below the axis."""
    xy = [coordinates(p, key, "search") for p in points]
    xy = [c for c in xy if c is not None]
    visible = [c for c in xy if c[1] >= y_low]
    ax.scatter(
        [c[0] for c in visible],
        [c[1] for c in visible],
        s=10,
        color=TRIAL_COLOUR,
        alpha=0.45,
        linewidths=0,
        label="all trials (search split)",
        zorder=1,
    )
    return len(xy) - len(visible)


def _draw_frontier(ax, points: list[TrialPoint], key: str) -> None:
    """Held-out frontier as a staircase.

    ``steps-pre`` draws the attainable boundary: between two frontier points, the best F1 one
    can get while being at least that fast is the next (faster, less accurate) point's F1.
    """
    front = pareto_front(points, key)
    if not front:
        return
    xs = [getattr(p.heldout, key) for p in front]
    ys = [p.heldout.f1 for p in front]
    ax.plot(xs, ys, drawstyle="steps-pre", color=FRONTIER_COLOUR, linewidth=1.6, zorder=3, label="held-out frontier")
    ax.plot(xs, ys, linestyle="none", marker="o", markersize=5, color=FRONTIER_COLOUR, zorder=4)
    _draw_intervals(ax, front, points, key)


PRECISION_STYLES = {"fp32": ("#5f6368", "s"), "bf16": ("#e8710a", "^"), "fp16": ("#9334e6", "v")}


def by_precision(points: list[TrialPoint]) -> dict[str, list[TrialPoint]]:
    """The held-out points of each precision a run measured, float32 first."""
    groups: dict[str, list[TrialPoint]] = {}
    for point in points:
        groups.setdefault(point.length_config.precision, []).append(point)
    return dict(sorted(groups.items(), key=lambda item: list(PRECISION_STYLES).index(item[0])))


def _draw_precisions(ax, points: list[TrialPoint], key: str) -> None:
    """Each precision's own held-out frontier, when a run measured more than one: what length buys at each."""
    groups = by_precision(points)
    if len(groups) < 2:
        return
    for name, group in groups.items():
        front = pareto_front(group, key)
        if not front:
            continue
        colour, marker = PRECISION_STYLES[name]
        xs, ys = [getattr(p.heldout, key) for p in front], [p.heldout.f1 for p in front]
        ax.plot(xs, ys, drawstyle="steps-pre", linestyle="--", linewidth=1.1, color=colour, zorder=2)
        ax.plot(xs, ys, linestyle="none", marker=marker, markersize=5, color=colour, zorder=4, label=f"{name} frontier")


def _draw_intervals(ax, front: list[TrialPoint], points: list[TrialPoint], key: str) -> None:
    """Each frontier point's paired 95% interval of F1 minus keep-all, drawn as keep-all's F1 plus it."""
    shown = [p for p in front if p.heldout.f1_delta_low is not None and p.baseline != "keep-all"]
    if not shown:
        return
    xs = [getattr(p.heldout, key) for p in shown]
    ys = [p.heldout.f1 for p in shown]
    keep_all = next((p.heldout.f1 for p in points if p.baseline == "keep-all" and p.heldout is not None), None)
    if keep_all is None:
        return
    low = [y - (keep_all + p.heldout.f1_delta_low) for p, y in zip(shown, ys)]
    high = [(keep_all + p.heldout.f1_delta_high) - y for p, y in zip(shown, ys)]
    ax.errorbar(
        xs,
        ys,
        yerr=[[max(0.0, v) for v in low], [max(0.0, v) for v in high]],
        fmt="none",
        ecolor=FRONTIER_COLOUR,
        elinewidth=0.8,
        capsize=2,
        alpha=0.6,
        zorder=3,
        label="95% interval of F1 − keep-all",
    )


def _draw_baselines(ax, points: list[TrialPoint], key: str) -> None:
    for point in points:
        if not point.baseline or point.heldout is None:
            continue
        xy = coordinates(point, key, "heldout")
        if xy is None:
            continue
        keep_all = point.baseline == "keep-all"
        ax.plot(
            *xy,
            linestyle="none",
            zorder=5,
            markeredgecolor="white",
            markeredgewidth=0.8,
            marker="*" if keep_all else "D",
            markersize=13 if keep_all else 7,
            color=KEEP_ALL_COLOUR if keep_all else CONSTANT_COLOUR,
            label="keep-all (held-out)" if keep_all else "constant-ratio baselines (held-out)",
        )
        ax.annotate(
            point.baseline,
            xy,
            xytext=(7, -12),
            textcoords="offset points",
            fontsize=8,
            color=KEEP_ALL_COLOUR if keep_all else CONSTANT_COLOUR,
            zorder=6,
            bbox=dict(boxstyle="round,pad=0.1", facecolor="white", edgecolor="none", alpha=0.75),
        )


def _offset_inwards(ax, x: float) -> tuple[int, int, str]:
    """Text offset (points) and alignment that keep an annotation inside the panel.

    Labels go up and to the right of their point, away from the frontier below it; near the right
    edge that would spill into the neighbouring panel, so there they go up and to the left. Room
    above the top point is left by :func:`f1_range`.
    """
    x0, x1 = ax.get_xlim()
    dx, ha = (14, "left") if (x - x0) / (x1 - x0) < 0.7 else (-14, "right")
    return dx, 24, ha


def _draw_lines(ax, points: list[TrialPoint], key: str, lines: list[ReferenceLine]) -> None:
    """Reference floors, each with the fastest point that reaches it (or a note that none does)."""
    reached: dict[int, list[str]] = {}
    best_of: dict[int, TrialPoint] = {}
    for line in lines:
        ax.axhline(line.f1, color=line.colour, linestyle=line.style, linewidth=1.3, label=line.label, zorder=2)
        best = best_within(points, key, line.f1)
        if best is None:
            ax.text(
                0.98,
                line.f1,
                f"no point reaches {line.name}",
                transform=ax.get_yaxis_transform(),
                ha="right",
                va="bottom",
                fontsize=8.5,
                color=line.colour,
            )
            continue
        reached.setdefault(best.number, []).append(line.name)
        best_of[best.number] = best
    for number, names in reached.items():
        x, y = coordinates(best_of[number], key, "heldout")
        dx, dy, ha = _offset_inwards(ax, x)
        # When keep-all itself is the fastest point above a line, nothing that drops tokens reaches
        # it; "7.70x within own-1%" would read as if dropping gave that speedup.
        only = best_of[number].baseline == "keep-all"
        text = f"keep-all only within {' and '.join(names)}" if only else f"{x:.2f}x within {' and '.join(names)}"
        ax.annotate(
            text,
            (x, y),
            xytext=(dx, dy),
            textcoords="offset points",
            ha=ha,
            va="center",
            fontsize=9,
            fontweight="bold",
            color=FRONTIER_COLOUR,
            zorder=7,
            bbox=dict(boxstyle="round,pad=0.25", facecolor="white", edgecolor=FRONTIER_COLOUR, alpha=0.9),
            arrowprops=dict(arrowstyle="->", color=FRONTIER_COLOUR, linewidth=1),
        )


def _keep_all_factor(points: list[TrialPoint], key: str) -> float | None:
    """Keep-all's speedup vs BERT-base on this axis: divides an axis value into a speedup vs keep-all."""
    for point in points:
        if point.baseline == "keep-all" and point.heldout is not None:
            value = getattr(point.heldout, key)
            return value if value else None
    return None


def _draw_own_scale(ax, points: list[TrialPoint], key: str) -> None:
    """A top axis in speedup vs the model's own keep-all, the unit budgets are given in."""
    factor = _keep_all_factor(points, key)
    if factor is None:
        return
    top = ax.secondary_xaxis("top", functions=(lambda x: x / factor, lambda x: x * factor))
    top.set_xlabel(f"speedup vs own keep-all (= bottom axis / {factor:.2f})", fontsize=9)


def _draw_budget(ax, info: RunInfo, points: list[TrialPoint], key: str) -> None:
    """The run's budget as a vertical line, where it is a speedup on this panel's axis."""
    if not info.budget:
        return
    from dynlen.search.budget import parse_budget

    try:
        budget = parse_budget(info.budget)
    except Exception:  # a budget this version cannot read is left undrawn, not fatal to the report
        return
    axis = {"flops-speedup": FLOPS_KEY, "latency-speedup": LATENCY_KEY}.get(getattr(budget, "name", ""))
    factor = _keep_all_factor(points, key)
    if axis != key or factor is None:
        return
    ax.axvline(
        budget.threshold * factor,
        color="#a142f4",
        linestyle="-.",
        linewidth=1.3,
        zorder=2,
        label=f"budget {info.budget} (vs own keep-all)",
    )


def _draw_panel(
    ax, points: list[TrialPoint], key: str, lines: list[ReferenceLine], y_low: float, info: RunInfo | None = None
) -> None:
    if info is not None:
        _draw_budget(ax, info, points, key)
    _draw_own_scale(ax, points, key)
    hidden = _draw_trials(ax, points, key, y_low)
    _draw_frontier(ax, points, key)
    _draw_precisions(ax, points, key)
    _draw_baselines(ax, points, key)
    _draw_lines(ax, points, key, lines)
    if hidden:
        trials = "trial" if hidden == 1 else "trials"
        ax.text(
            0.01,
            0.01,
            f"{hidden} {trials} below F1 {y_low:.0f} not shown",
            transform=ax.transAxes,
            fontsize=8,
            color="#5f6368",
            ha="left",
            va="bottom",
        )
    ax.grid(True, color="#e8eaed", linewidth=0.8, zorder=0)


def _draw_unmeasured(ax) -> None:
    ax.text(
        0.5, 0.5, "latency not measured", transform=ax.transAxes, ha="center", va="center", fontsize=13, color="#5f6368"
    )
    ax.set_xticks([])


def _legend_entries(axes) -> tuple[list, list[str]]:
    """One legend entry per label across both panels, so the shared legend lists nothing twice."""
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    return handles, labels


def plot_pareto(
    info: RunInfo, points: list[TrialPoint], out_dir: Path, bert_f1: float = 88.5, drop: float = 1.0
) -> list[Path]:
    """Write pareto.png and pareto.svg into ``out_dir``; returns their paths."""
    from matplotlib.figure import Figure

    lines = reference_lines(info, bert_f1, drop)
    y_low, y_high = f1_range(points, lines)
    fig = Figure(figsize=(14, 6.8), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    left.set_ylim(y_low, y_high)  # before drawing: annotations are placed from the final limits
    _draw_panel(left, points, FLOPS_KEY, lines, y_low, info)
    left.set_xlabel("FLOPs speedup vs BERT-base (same inputs, real tokens)")
    left.set_ylabel(f"F1 on held-out split ({dataset_name(info.heldout_split)})")
    if _is_measured(points, LATENCY_KEY):
        _draw_panel(right, points, LATENCY_KEY, lines, y_low, info)
        right.set_xlabel(f"latency speedup vs BERT-base (batch size {info.latency_batch_size})")
    else:
        _draw_unmeasured(right)
        right.set_xlabel("latency speedup vs BERT-base")
    fig.suptitle(
        f"{display_name(info.model)}{' (smoke model)' if info.extra.get('smoke_model') else ''}: held-out F1 on {dataset_name(info.heldout_split)} ({info.heldout_questions} questions), {info.trials} trials",
        fontsize=12,
    )
    return save_with_legend(fig, *_legend_entries((left, right)), out_dir / "pareto")


def dataset_name(split: str) -> str:
    """A split's data set for a title: ``../shared/data/squad/dev-v1.1.json[held-out]`` -> ``dev-v1.1[held-out]``."""
    source, bracket, part = split.partition("[")
    name = Path(source).name
    return (name.removesuffix(".json") or source) + bracket + part


def display_name(model: str) -> str:
    """A model's name for a title: a hub id as it is, a local folder by its last part (no file paths)."""
    from dynlen.bench.model_io import BUILT_MODEL_DIRS, _looks_like_path

    path = Path(model)
    if model.rstrip("/") in BUILT_MODEL_DIRS or _looks_like_path(model):
        return path.name or model
    return model


def save_with_legend(fig, handles: list, labels: list[str], stem: Path) -> list[Path]:
    """Shared legend under the panels, then ``stem``.png (for reading) and .svg (for editing).

    The SVG is deterministic (fixed id salt, no date), so re-drawing the same run gives the same
    bytes and a committed plot changes in review only when its content does.
    """
    import matplotlib

    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), fontsize=9, frameon=False)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    # Text stays text in the SVG (editable, searchable) rather than glyph outlines.
    with matplotlib.rc_context({"svg.hashsalt": "dynlen", "svg.fonttype": "none"}):
        _save(fig, paths[0], dpi=150, metadata={"Software": None})
        _save(fig, paths[1], metadata={"Date": None})
    return paths


def _save(fig, path: Path, **options) -> None:
    """The figure rendered in memory, then written whole (a full disk leaves the previous plot)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip("."), **options)
    write_bytes_atomic(path, buffer.getvalue())
