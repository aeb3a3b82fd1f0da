"""``dynlen report RUN_DIR``: turn a finished search run into plots, a CSV and a Markdown report."""

from __future__ import annotations

import argparse
from pathlib import Path

from dynlen.errors import UserError
from dynlen.reports.report import DEFAULT_BERT_F1, DEFAULT_DROP, make_report
from dynlen.reports.tables import headline_lines
from dynlen.search.records import read_run

HELP = "plots, CSV and Markdown report of a finished search run (runs no model)"
DESCRIPTION = (
    "Make the report of a finished search run: pareto.png and pareto.svg (held-out F1 "
    "against FLOPs and latency speedup over BERT-base), frontier.csv (held-out frontier "
    "and baselines) and report.md (headline, table, provenance). Runs no model."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run",
        type=Path,
        default=None,
        help="run folder written by `dynlen search`, holding run.json and trials.json (default: none, give one)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for the report files (default: the run folder itself)"
    )


def run(args: argparse.Namespace) -> None:
    if args.run is None:
        raise UserError("give the run folder: --run reports/NAME")
    paths = make_report(args.run, args.out)
    info, points = read_run(args.run)
    for path in paths:
        print(f"wrote {path}")
    if info.extra.get("smoke_model"):
        print(f"{info.model}: {info.extra['smoke_model']}")
    for line in headline_lines(info, points, DEFAULT_BERT_F1, DEFAULT_DROP):
        print(line)
