"""One run's report: pareto.png/svg, frontier.csv and report.md, made from the run's files alone.

Reads only ``run.json`` and ``trials.json``, so a report can be regenerated (say, with another
BERT reference F1) in seconds and without a model.
"""

from __future__ import annotations

from pathlib import Path

from dynlen.reports.plot import plot_pareto
from dynlen.reports.tables import write_frontier_csv, write_report_md
from dynlen.search.records import read_run

DEFAULT_BERT_F1 = 88.5
DEFAULT_DROP = 1.0


def make_report(
    run_dir: Path, out_dir: Path | None = None, bert_f1: float = DEFAULT_BERT_F1, drop: float = DEFAULT_DROP
) -> list[Path]:
    """Write pareto.png, pareto.svg, frontier.csv and report.md; returns their paths.

    Raises :class:`UserError` when ``run_dir`` holds no finished search.
    """
    run_dir = Path(run_dir)
    out_dir = run_dir if out_dir is None else Path(out_dir)
    info, points = read_run(run_dir)
    paths = plot_pareto(info, points, out_dir, bert_f1=bert_f1, drop=drop)
    paths.append(write_frontier_csv(points, out_dir / "frontier.csv"))
    paths.append(write_report_md(info, points, out_dir / "report.md", bert_f1=bert_f1, drop=drop))
    return paths
