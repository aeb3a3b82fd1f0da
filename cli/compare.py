"""``dynlen compare``: several search runs' held-out frontiers on the same axes."""

from __future__ import annotations

import argparse
from pathlib import Path

from dynlen.reports.compare import compare_runs, headline, parse_spec

HELP = "compare several search runs' held-out frontiers on one plot"
DESCRIPTION = (
    "Compare finished search runs on the same held-out split: both frontiers on one plot "
    "(F1 against FLOPs and latency speedup over each run's own keep-all), and for each run the "
    "best speedup within its keep-all F1 − DROP. Runs no model."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR", help="runs written by `dynlen search`")
    parser.add_argument("--out", type=Path, required=True, help="folder for compare.png/svg/csv/md")
    parser.add_argument("--drop", type=float, default=1.0, help="F1 points allowed below each run's own keep-all")


def run(args: argparse.Namespace) -> None:
    paths, summaries = compare_runs([parse_spec(s) for s in args.runs], args.out, args.drop)
    for path in paths:
        print(f"wrote {path}")
    for line in headline(summaries, args.drop):
        print(line)
