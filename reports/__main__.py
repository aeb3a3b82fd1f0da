"""``python -m reports RUN_DIR``: turn a finished search run into plots, a CSV and a Markdown report.

Reads only ``run.json`` and ``trials.json``, so a report can be regenerated (say, with another
BERT reference F1) in seconds and without a model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.errors import UserError, exit_status
from reports.plot import plot_pareto
from reports.tables import headline_lines, write_frontier_csv, write_report_md
from search.records import read_run

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reports",
        description="Make the report of a finished search run: pareto.png and pareto.svg (held-out F1 "
                    "against FLOPs and latency speedup over BERT-base), frontier.csv (held-out frontier "
                    "and baselines) and report.md (headline, table, provenance). Runs no model.",
        epilog="example: python -m reports reports/default --bert-f1 88.5 --drop 1.0",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path,
                        help="run folder written by `python -m search run` (holds run.json and trials.json)")
    parser.add_argument("--bert-f1", type=float, default=DEFAULT_BERT_F1,
                        help="BERT-base's SQuAD 1.1 dev F1, the reference for the BERT-1%% line (default: %(default)s)")
    parser.add_argument("--drop", type=float, default=DEFAULT_DROP,
                        help="F1 points one may lose against a reference: the lines are drawn at "
                             "reference − drop (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the report files (default: RUN_DIR itself)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> None:
        paths = make_report(args.run_dir, args.out, bert_f1=args.bert_f1, drop=args.drop)
        info, points = read_run(args.run_dir)
        for path in paths:
            print(f"wrote {path}")
        for line in headline_lines(info, points, args.bert_f1, args.drop):
            print(line)

    return exit_status(run)


if __name__ == "__main__":
    sys.exit(main())
