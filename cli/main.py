"""``dynlen``: the one command, with every command of the project as a sub-command.

The sub-commands are the modules of this package, mounted unchanged (each has
``add_arguments``, ``run``, ``HELP`` and ``DESCRIPTION``), so ``dynlen eval`` and the older
``dynlen eval`` parse the same options and do the same work. Every ``--help`` shows
defaults, because a user tuning a latency budget needs to know what they did not set.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from types import ModuleType

from dynlen.cli.argtypes import OneLineParser
from dynlen.errors import exit_status

# Sub-command -> module in cli/, in the order a new user meets them.
COMMANDS: dict[str, str] = {
    "eval": "dynlen.cli.eval",
    "answer": "dynlen.cli.answer",
    "search": "dynlen.cli.search",
    "choose": "dynlen.cli.choose",
    "report": "dynlen.cli.report",
    "compare": "dynlen.cli.compare",
    "finetune": "dynlen.cli.finetune",
    "lengthdrop": "dynlen.cli.lengthdrop",
    "probes": "dynlen.cli.probes",
    "regress": "dynlen.cli.regress",
}
# Commands whose libraries print transformers' loading notices, which the commands' own progress replaces.
_QUIET = {"eval", "answer", "search", "finetune", "lengthdrop", "probes", "regress"}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in every help line, without repeating one the help text already states."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False) or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("dynlen")
    except PackageNotFoundError:  # run from a checkout without `pip install -e .`
        return "unknown (not installed)"


def _modules() -> dict[str, ModuleType]:
    """The mounted modules; a command whose module is absent from this checkout is simply not offered."""
    return {name: importlib.import_module(path) for name, path in COMMANDS.items() if importlib.util.find_spec(path)}


def _use_formatter(parser: argparse.ArgumentParser) -> None:
    """Nested sub-commands (``regress check``) get the same help format."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _use_formatter(child)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="dynlen",
        description="Length-adaptive BERT-family extractive QA: measure, search under a budget, report, serve.",
        formatter_class=HelpFormatter,
        epilog="`dynlen COMMAND --help` shows each command's options. Typical path: eval -> search -> choose -> answer.",
    )
    parser.add_argument("--version", action="version", version=f"dynlen {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, module in _modules().items():
        child = sub.add_parser(
            name,
            help=getattr(module, "HELP", module.__doc__.splitlines()[0]),
            description=module.DESCRIPTION,
            formatter_class=HelpFormatter,
        )
        module.add_arguments(child)
        _use_formatter(child)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    if args.command in _QUIET:
        from dynlen.bench.model_io import quiet_libraries

        quiet_libraries()
    module = importlib.import_module(COMMANDS[args.command])
    return exit_status(lambda: module.run(args))


if __name__ == "__main__":
    sys.exit(main())
