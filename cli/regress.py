"""``dynlen regress check|update``: the CI guard on the reference configurations' speedups."""

from __future__ import annotations

import argparse
from pathlib import Path

from dynlen.bench.regress import BASELINE, check, load_baseline, update
from dynlen.options import int_at_least

HELP = "fail when the speedup of the committed reference configurations regresses"
DESCRIPTION = "Fail when the speedup of the committed reference configurations regresses."


UPDATE_FEATURES, REPEATS, LATENCY_TOLERANCE = 16, 7, 0.15  # features timed, interleaved rounds, allowed fall


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    c = sub.add_parser("check", help="re-measure and compare with the committed baseline (exit 1 on regression)")
    c.add_argument("--baseline", default=str(BASELINE), help="committed baseline JSON (default: %(default)s)")
    c.add_argument(
        "--repeats", type=int_at_least(1), default=REPEATS, help="interleaved latency rounds (default: %(default)s)"
    )
    c.add_argument("--no-latency", action="store_true", help="check FLOPs only (default: off)")
    u = sub.add_parser("update", help="measure the reference configurations and write the baseline")
    u.add_argument(
        "--from",
        dest="source",
        default="results/reference/frontier.csv",
        help="frontier CSV of the reference report (default: %(default)s)",
    )
    u.add_argument("--baseline", default=str(BASELINE), help="baseline JSON to write (default: %(default)s)")
    u.add_argument(
        "--runs",
        type=int_at_least(1),
        default=3,
        help="whole measurements whose median is stored (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    if args.action == "update":
        from dynlen.search.records import configs_from_frontier_csv  # the CLI part of this module; moves out next

        update(
            configs_from_frontier_csv(Path(args.source)),
            Path(args.baseline),
            UPDATE_FEATURES,
            REPEATS,
            runs=args.runs,
        )
        print(f"wrote {args.baseline}")
        return 0
    passed, table = check(load_baseline(Path(args.baseline)), args.repeats, LATENCY_TOLERANCE, not args.no_latency)
    print(table)
    print("speedup check passed" if passed else "speedup REGRESSED: see the rows marked above")
    return 0 if passed else 1
