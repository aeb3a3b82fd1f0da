"""The command-line layer: argparse wiring over the libraries, imported by nothing but entry points.

Each command is one module with ``add_arguments(parser)`` (its options) and ``run(args)`` (its
work, returning an exit status or None), so ``dynlen`` (:mod:`dynlen.cli.main`) mounts every
command as a sub-command.
"""
