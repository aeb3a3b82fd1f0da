"""The command line generated from the option declarations on the settings and recipe dataclasses.

Each command adds the dataclasses it runs on (``add_options``) and builds them back from the
parsed arguments (``values``), so an option's flag, help and default are written once, on its
field (``dynlen.options.option``).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Collection

from dynlen.options import Option, declared

_TYPES = {"int": int, "float": float, "str": str}


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    exclude: Collection[str] = (),
    defaults: dict | None = None,
    shown: dict | None = None,
) -> None:
    """One argparse option per command-line field of ``cls``.

    ``defaults`` overrides a field's default for this command; ``shown`` says in words what a
    default of None means here, where the field's own help cannot.
    """
    for f, spec in declared(cls, cli_only=True):
        if f.name in exclude:
            continue
        default = (defaults or {}).get(f.name, f.default)
        name = spec.flag or "--" + f.name.replace("_", "-")
        if default is dataclasses.MISSING:  # a required field no command gave a default
            parser.add_argument(name, dest=f.name, required=True, help=spec.help, **spec.argparse)
        else:
            kwargs = _argparse(f, spec, default)
            if "action" not in kwargs and "choices" not in kwargs:  # named after the flag, not the field
                kwargs.setdefault("metavar", name.lstrip("-").upper().replace("-", "_"))
            if f.name in (shown or {}):
                kwargs["help"] = f"{spec.help} (default: {shown[f.name]})"
            parser.add_argument(name, dest=f.name, **kwargs)


def _argparse(f: dataclasses.Field, spec: Option, default) -> dict:
    """The argparse keywords of one field: its type read from the annotation, the default shown in the help."""
    kwargs = dict(spec.argparse)
    base = str(f.type).split("|")[0].strip()
    if base == "bool":
        kwargs.setdefault("action", "store_true")
        flag_off = default == (kwargs["action"] == "store_false")  # the flag not given is the default
        return {**kwargs, "default": default, "help": f"{spec.help} (default: {'off' if flag_off else 'on'})"}
    if "type" not in kwargs and "choices" not in kwargs and base in _TYPES:
        kwargs["type"] = _TYPES[base]
    # a None default means something only the help can say ("default: all"), so it says it itself
    help_text = spec.help if "default:" in spec.help or default is None else f"{spec.help} (default: %(default)s)"
    return {**kwargs, "default": default, "help": help_text}


def values(cls: type, args: argparse.Namespace, **given) -> dict:
    """The keyword arguments of ``cls`` the parsed command line holds, plus ``given`` (which wins)."""
    out = {f.name: getattr(args, f.name) for f, _ in declared(cls, cli_only=True) if hasattr(args, f.name)}
    return {**out, **given}
