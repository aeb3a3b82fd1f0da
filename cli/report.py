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
        help="run folder written by `dynlen search` (holds run.json and trials.json)",
    )
    # The run folder was once a positional argument; it still is, unlisted.
    parser.add_argument("run_dir", nargs="?", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--bert-f1",
        type=float,
        default=DEFAULT_BERT_F1,
        help="BERT-base's SQuAD 1.1 dev F1, the reference for the BERT-1%% line (default: %(default)s)",
    )
    parser.add_argument(
        "--drop",
        type=float,
        default=DEFAULT_DROP,
        help="F1 points one may lose against a reference: the lines are drawn at "
        "reference − drop (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for the report files (default: the run folder itself)"
    )


def run(args: argparse.Namespace) -> None:
    if args.run is not None and args.run_dir is not None and args.run != args.run_dir:
        raise UserError(f"two run folders given ({args.run_dir} and --run {args.run}); give one")
    run_dir = args.run if args.run is not None else args.run_dir
    if run_dir is None:
        raise UserError("give the run folder: --run reports/NAME")
    paths = make_report(run_dir, args.out, bert_f1=args.bert_f1, drop=args.drop)
    info, points = read_run(run_dir)
    for path in paths:
        print(f"wrote {path}")
    if info.extra.get("smoke_model"):
        print(f"{info.model}: {info.extra['smoke_model']}")
    for line in headline_lines(info, points, args.bert_f1, args.drop):
        print(line)
