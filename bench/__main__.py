"""``python -m bench``: measure one configuration, answer questions, or build the default model."""

from __future__ import annotations

import argparse
import sys

from bench.errors import exit_status
from bench.model_io import quiet_libraries
from cli import answer, eval, regress

COMMANDS = {"eval": eval, "answer": answer, "regress": regress}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="dynlen bench: length-adaptive QA inference, SQuAD 1.1 EM/F1, exact FLOPs and latency.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.HELP, description=command.DESCRIPTION))
    sub.add_parser(
        "train", help="standard fine-tuning, as `python -m training finetune` (see its --help)", add_help=False
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        from cli.finetune import main as finetune_main

        return finetune_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_libraries()
    if args.command is None:
        parser.print_help()
        return 1
    return exit_status(lambda: COMMANDS[args.command].run(args))


if __name__ == "__main__":
    sys.exit(main())
