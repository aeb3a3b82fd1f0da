"""The written side of a report: ``frontier.csv`` for tools and ``report.md`` for people.

Both list the same held-out rows, so a number quoted from the Markdown can always be traced to
the CSV (and from there re-measured by the regression guard, which reads the ``kind`` and
``values`` columns through :func:`search.records.config_from_cells`).
"""

from __future__ import annotations

from pathlib import Path

from dynlen.atomic import write_text_atomic
from dynlen.bench.measurement import INTERVAL_COLUMNS, LATENCY_SPREAD_COLUMNS, SCORE_COLUMNS, Measurement
from dynlen.engine.config import config_cells
from dynlen.reports.frames import frame, markdown, write_csv
from dynlen.search.budget import UNSURE, keep_all_noise, parse_budget, verdict
from dynlen.search.frontier import best_within, most_accurate, pareto_front, speed_of
from dynlen.search.records import RunInfo, TrialPoint

FLOPS_KEY = "flops_speedup_vs_bert_base"
LATENCY_KEY = "latency_speedup_vs_bert_base"
OWN_KEYS = ("flops_speedup_vs_keep_all", "latency_speedup_vs_keep_all")  # the own-1% line speaks of the model itself

# Columns added later come last, so older frontier.csv files keep their column positions; the
# measurement's cells are read back by ``Measurement.from_csv_row`` (missing trailing columns: None).
COLUMNS: tuple[str, ...] = (
    ("number", "label", "baseline", "kind", "values")
    + SCORE_COLUMNS
    + ("on_flops_frontier", "on_latency_frontier", "significance")
    + INTERVAL_COLUMNS
    + LATENCY_SPREAD_COLUMNS
)


# --- which rows -------------------------------------------------------------------------
def frontier_rows(points: list[TrialPoint]) -> list[dict]:
    """Held-out rows: every point on the FLOPs or latency frontier, plus every re-scored baseline.

    Baselines are kept even when dominated, because "how much better than a constant ratio" is
    the question a reader brings to the table.
    """
    on_flops = {p.number for p in pareto_front(points, FLOPS_KEY)}
    on_latency = {p.number for p in pareto_front(points, LATENCY_KEY)}
    chosen = [
        p for p in points if p.heldout is not None and (p.number in on_flops or p.number in on_latency or p.baseline)
    ]
    chosen.sort(key=lambda p: (p.heldout.flops_speedup_vs_bert_base, p.number))
    return [_row(p, p.number in on_flops, p.number in on_latency) for p in chosen]


def _row(point: TrialPoint, on_flops: bool, on_latency: bool) -> dict:
    row: dict = {"number": point.number, "label": point.label, "baseline": point.baseline}
    row.update(point.heldout.csv_row())
    row.update(config_cells(point.length_config))  # the trial's own policy (one keep-all serves every policy)
    row["on_flops_frontier"] = on_flops
    row["on_latency_frontier"] = on_latency
    return row


# --- frontier.csv -----------------------------------------------------------------------
def _csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def frontier_frame(points: list[TrialPoint]):
    """The held-out rows as a DataFrame with the columns of ``frontier.csv``, values unrounded."""
    return frame(frontier_rows(points), COLUMNS)


def write_frontier_csv(points: list[TrialPoint], path: Path) -> Path:
    """Full-precision held-out rows; empty cells where a number was not measured."""
    return write_csv(frontier_frame(points), path, _csv_cell)


# --- headline ---------------------------------------------------------------------------
def line_name(reference: str, drop: float) -> str:
    """ "BERT-1%", "own-1%": the usual shorthand for "within 1 F1 point of the reference"."""
    return f"{reference}-{drop:g}%"


def _describe_best(points: list[TrialPoint], key: str, floor: float, axis: str) -> str:
    if not any(p.heldout is not None and getattr(p.heldout, key) is not None for p in points):
        return f"{axis}: not measured"
    best = best_within(points, key, floor)
    if best is not None:
        h = best.heldout
        speed = speed_of(best, h, key)
        if best.baseline == "keep-all":
            return f"{axis}: keep-all only ({speed:.2f}x; no configuration that drops tokens stays within)"
        return f"{axis}: {speed:.2f}x ({best.label}, F1 {h.f1:.2f}{interval_text(h)})"
    closest = most_accurate(points, key)
    if closest is None:
        return f"{axis}: none reaches it; no feasible point has held-out scores"
    h = closest.heldout
    return f"{axis}: none reaches it; closest: {closest.label} (F1 {h.f1:.2f}, {speed_of(closest, h, key):.2f}x)"


def interval_text(scores) -> str:
    """', F1 − keep-all −0.62 [−1.20, −0.05] (95%)' when the held-out interval was measured."""
    if scores.f1_delta_low is None or scores.f1_delta_high is None:
        return ""
    return f"; vs keep-all 95% interval [{scores.f1_delta_low:+.2f}, {scores.f1_delta_high:+.2f}] F1"


def _reach(points: list[TrialPoint], floor: float, keys: tuple[str, str] = (FLOPS_KEY, LATENCY_KEY)) -> str:
    flops = _describe_best(points, keys[0], floor, "FLOPs")
    latency = _describe_best(points, keys[1], floor, "latency")
    return f"{flops}, {latency}"


def headline_lines(info: RunInfo, points: list[TrialPoint], bert_f1: float = 88.5, drop: float = 1.0) -> list[str]:
    """The two sentences a reader wants first: the best speedup within 1 F1 of BERT, and of the model itself."""
    bert_floor = bert_f1 - drop
    lines = [f"Best speedup within {line_name('BERT', drop)} (F1 ≥ {bert_floor:.2f}): {_reach(points, bert_floor)}"]
    own = info.keep_all_heldout_f1
    own_name = line_name("own", drop)
    if own is None:
        lines.append(f"Best speedup within {own_name}: keep-all was not scored on the held-out split")
    else:
        own_floor = own - drop
        lines.append(
            f"Best speedup over keep-all within {own_name} (keep-all F1 {own:.2f} − {drop:g} = {own_floor:.2f}): "
            f"{_reach(points, own_floor, OWN_KEYS)}"
        )
    return lines


# --- latency budgets and timing noise -----------------------------------------------------
NOISY = 0.05  # keep-all against itself further than this from 1: ratios closer than that are not told apart


def latency_noise_lines(info: RunInfo, points: list[TrialPoint]) -> list[str]:
    """What the run's timing can and cannot tell: its noise when large, and the points a latency
    budget cannot judge (their interval holds the budget's edge)."""
    keep_all = next((p.heldout for p in points if p.baseline == "keep-all" and p.heldout is not None), None)
    noise = keep_all_noise(keep_all)
    lines = []
    if noise > NOISY:
        lines.append(
            f"**Timed too briefly:** keep-all timed against itself strays {noise:.0%} from 1, so latency ratios "
            f"closer than that are not told apart; re-run with more --latency-repeats and --latency-sample "
            f"(this run: {info.extra.get('settings', {}).get('latency_repeats', '?')} rounds of "
            f"{info.extra.get('settings', {}).get('latency_sample', '?')} features)."
        )
    budget = parse_budget(info.budget)
    if budget is not None and budget.needs_latency:
        unsure = [
            p.label
            for p in points
            if p.heldout is not None and verdict(budget, p.heldout, noise, p.baseline == "keep-all") == UNSURE
        ]
        if unsure:
            lines.append(
                f"**Within timing noise of {budget}:** {', '.join(unsure)}: their latency interval holds "
                f"{budget.threshold:g}, so this run cannot say they meet it (`dynlen choose` does not pick them)."
            )
    return lines


# --- latency noise ----------------------------------------------------------------------
def keep_all_latency_warning(points: list[TrialPoint]) -> str | None:
    """One line when keep-all, timed against itself, is off 1.0 by more than the run's own noise.

    Keep-all against keep-all must read 1: the two contenders run the same engine, interleaved
    batch by batch. The noise the run states is the spread of that ratio over its rounds (max −
    min); a median further from 1 than that (and visible at the table's two decimals) is a bias of
    the machine or the timing, not noise, and every latency speedup of the run carries it. Runs
    that recorded no spread (written before it was kept) get no line.
    """
    keep_all = next((p for p in points if p.baseline == "keep-all" and p.heldout is not None), None)
    if keep_all is None:
        return None
    h: Measurement = keep_all.heldout
    median, low, high = (
        h.latency_speedup_vs_keep_all,
        h.latency_speedup_vs_keep_all_min,
        h.latency_speedup_vs_keep_all_max,
    )
    if median is None or low is None or high is None:
        return None
    off = abs(median - 1.0)
    if off <= high - low or round(median, 2) == 1.0:
        return None
    return (
        f"**Latency warning:** keep-all timed against itself reads {median:.2f}x (rounds {low:.2f}–{high:.2f}), "
        f"off 1.0 by {off:.2f}, more than its own spread of {high - low:.2f}: every latency speedup in this run "
        "carries that bias; time it again on a quiet machine."
    )


# --- report.md --------------------------------------------------------------------------
def _rounded(column: str, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if column in ("gflops_per_question", "latency_ms", "latency_ms_min", "latency_ms_max"):
        return f"{value:.3g}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).replace("|", "\\|")


def markdown_table(points: list[TrialPoint]) -> str:
    table = frontier_frame(points)
    shown = table.apply(lambda column: column.map(lambda value: _rounded(column.name, value)))
    return markdown(shown)


def _duration(seconds: float) -> str:
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _per_hour(trials: int, seconds: float) -> str:
    return f"{trials / (seconds / 3600):.1f}" if seconds > 0 else "n/a"


def provenance(info: RunInfo) -> str:
    """Everything needed to judge or repeat the run, so the numbers above are never orphaned."""
    rows = [
        ("model", info.model),
        ("data", info.data),
        ("search split", f"{info.search_split} ({info.search_questions} questions)"),
        ("held-out split", f"{info.heldout_split} ({info.heldout_questions} questions)"),
        ("trials", str(info.trials)),
        ("sampler", info.sampler),
        ("cost", info.cost),
        ("budget", info.budget or "none"),
        ("search time", _duration(info.seconds)),
        ("trials per hour", _per_hour(info.trials, info.seconds)),
        ("latency batch size", str(info.latency_batch_size)),
        ("machine", info.machine),
        ("date", info.date),
    ]
    return "\n".join(f"- **{name}**: {text}" for name, text in rows)


CONVENTIONS = (
    "Speedups vs BERT-base compare with BERT-base run on the same inputs (same questions, same "
    "tokenisation, same dynamic padding). FLOPs are 2 × the multiply-accumulates of the matrix "
    "products over the real tokens only (dynamic padding: no padding tokens are counted). The "
    "`flops_speedup_vs_bert_base_padded384` column instead charges BERT-base for every sequence "
    "padded to 384 tokens, the convention of the published Length-Adaptive Transformer and "
    "Dynamic-TinyBERT results; it is larger and is given only for comparison with them. All numbers "
    "in the table are on the held-out split, which the search never saw. `f1_delta_low`/`f1_delta_high` "
    "bound the paired bootstrap 95% interval of a configuration's F1 minus keep-all's on the same "
    'held-out questions (2,000 resamples of the questions); "within 1 F1" is judged on the point '
    "estimate, and the interval says how sure that is. `significance` is the token-selection policy "
    "(`+question`: the question segment always stays). Latency columns are medians over interleaved "
    "rounds; `latency_ms_min`/`latency_ms_max` and `latency_speedup_vs_keep_all_min`/`_max` are the "
    "fastest and slowest round, the noise of the timing."
)


def write_report_md(
    info: RunInfo, points: list[TrialPoint], path: Path, bert_f1: float = 88.5, drop: float = 1.0
) -> Path:
    """The human summary: headline first, then the evidence, then where it came from."""
    headline = "\n".join(f"- {line}" for line in headline_lines(info, points, bert_f1, drop))
    warning = keep_all_latency_warning(points)
    noise = latency_noise_lines(info, points)
    text = "\n\n".join(
        [
            f"# Length-configuration search: {info.name}",
            *(
                [f"> **{info.extra['smoke_model'].capitalize()}:** its F1 shows the whole path runs."]
                if info.extra.get("smoke_model")
                else []
            ),
            headline,
            *([f"> {warning}"] if warning else []),
            *[f"> {line}" for line in noise],
            "![Pareto frontier](pareto.png)",
            "## Held-out frontier and baselines",
            markdown_table(points),
            "## Provenance",
            provenance(info),
            "## Conventions",
            CONVENTIONS,
        ]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text + "\n")
    return path
