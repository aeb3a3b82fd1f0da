"""``python -m training finetune|lengthdrop``: build the standard model, then the LengthDrop default model."""

from __future__ import annotations

import argparse
import sys

from bench.errors import exit_status
from bench.model_io import quiet_libraries
from cli import finetune, lengthdrop, probes

COMMANDS = {"finetune": finetune, "lengthdrop": lengthdrop, "probes": probes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training", description="dynlen training: the models every other command measures."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.add_arguments(
            sub.add_parser(
                name,
                help=command.HELP,
                description=command.DESCRIPTION,
                formatter_class=getattr(command, "FORMATTER", argparse.HelpFormatter),
            )
        )
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    if args.command in ("finetune", "lengthdrop", "probes"):
        quiet_libraries()
    return exit_status(lambda: COMMANDS[args.command].run(args))


if __name__ == "__main__":
    sys.exit(main())
