"""``python -m search``: run a study (``run``) or pick a configuration for a budget (``choose``)."""

from __future__ import annotations

import argparse
import sys

from bench.errors import exit_status
from bench.model_io import quiet_libraries
from cli import choose, search

COMMANDS = {"run": search, "choose": choose}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m search", description="dynlen search: per-layer length configurations under a budget."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.HELP, description=command.DESCRIPTION))
    args = parser.parse_args(argv)
    quiet_libraries()
    if args.command is None:
        parser.print_help()
        return 1
    return exit_status(lambda: COMMANDS[args.command].run(args))


if __name__ == "__main__":
    sys.exit(main())
