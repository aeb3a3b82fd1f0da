"""The command-line layer: argparse wiring over the libraries, imported by nothing but entry points.

Each command is one module with ``add_arguments(parser)`` (its options) and ``run(args)`` (its
work, returning an exit status or None), so one entry point can mount every command as a
sub-command. The ``__main__`` modules of ``bench``, ``search``, ``reports`` and ``training``
mount them under the names they have always had.
"""
