"""``python -m reports RUN_DIR``: the report command (see :mod:`cli.report`)."""

from __future__ import annotations

import argparse
import sys

from bench.errors import exit_status
from cli import report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reports",
        description=report.DESCRIPTION,
        epilog="example: python -m reports reports/default --bert-f1 88.5 --drop 1.0",
    )
    report.add_arguments(parser)
    args = parser.parse_args(argv)
    return exit_status(lambda: report.run(args))


if __name__ == "__main__":
    sys.exit(main())
