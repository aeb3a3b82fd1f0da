"""Every option declared once: the CLI is generated from the dataclasses, and the surface stays small."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dynlen.bench.answer import AnswerSettings
from dynlen.bench.model_io import LoadOptions
from dynlen.cli.eval import EvalSettings
from dynlen.cli.main import HelpFormatter, build_parser
from dynlen.cli.options import add_options, values
from dynlen.errors import UserError
from dynlen.options import declared, flag, option
from dynlen.search.settings import SearchSettings
from dynlen.training.finetune import Recipe
from dynlen.training.lengthdrop import LengthDropRecipe
from dynlen.training.probes import ProbeRecipe

ROOT = Path(__file__).resolve().parents[2]
MAX_OPTIONS = 90
MAX_MAKE_VARIABLES = 12
DECLARED = [SearchSettings, LoadOptions, EvalSettings, AnswerSettings, Recipe, LengthDropRecipe, ProbeRecipe]


def _commands(parser: argparse.ArgumentParser, name: str = "dynlen") -> dict[str, argparse.ArgumentParser]:
    """Every (sub-)command's parser by its full name, ``dynlen regress check`` included."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child_name, child in action.choices.items():
                children = _commands(child, f"{name} {child_name}")
                out.update(children or {f"{name} {child_name}": child})
    return out


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's options (flags), without --help and --version."""
    skip = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
    return [a for a in parser._actions if a.option_strings and not isinstance(a, skip)]


def test_every_flag_has_help_and_shows_its_default():
    for command, parser in _commands(build_parser()).items():
        formatter = HelpFormatter(command)
        for action in _options(parser):
            text = formatter._get_help_string(action) or ""
            assert action.help and action.help != argparse.SUPPRESS, f"{command} {action.option_strings[0]}"
            assert "default" in text or action.required, f"{command} {action.option_strings[0]}: {text!r}"


def test_the_cli_is_generated_from_the_dataclasses():
    """Each declared field offered on the command line appears under its flag, with its declared help."""
    commands = _commands(build_parser())
    offered = {
        (a.option_strings[0], a.help.split(" (default")[0]) for p in commands.values() for a in _options(p) if a.help
    }
    for cls in DECLARED:
        for f, spec in declared(cls, cli_only=True):
            assert (flag(cls, f.name), spec.help.split(" (default")[0]) in offered, f"{cls.__name__}.{f.name}"


def test_generated_options_parse_back_into_the_dataclass():
    parser = argparse.ArgumentParser()
    add_options(parser, SearchSettings)
    args = parser.parse_args(["--run", "reports/x", "--trials", "7", "--search-questions", "0", "--no-report"])
    settings = SearchSettings(**values(SearchSettings, args))
    assert settings.run_dir == "reports/x" and settings.trials == 7 and settings.search_questions is None
    assert settings.report is False and settings.cost == "flops"
    with pytest.raises(SystemExit):
        parser.parse_args(["--cost", "energy"])


def test_errors_name_the_flag_from_the_declaration():
    assert flag(SearchSettings, "run_dir") == "--run" and flag(Recipe, "learning_rate") == "--lr"
    assert flag(SearchSettings, "seed") == "seed", "a setting of the Python API only is named as one"
    with pytest.raises(UserError, match="^--trials must be at least 1"):
        SearchSettings(trials=0).check()
    with pytest.raises(UserError, match="^--bound must be in"):
        LengthDropRecipe(base="m", train="t.json", bound=1.5).check()


def test_a_declaration_without_a_default_is_a_required_option():
    from dataclasses import dataclass

    @dataclass
    class Needs:
        where: str = option(help="where it goes")

    parser = argparse.ArgumentParser()
    add_options(parser, Needs)
    assert parser.parse_args(["--where", "x"]).where == "x"
    with pytest.raises(SystemExit):
        parser.parse_args([])


def _make_variables() -> set[str]:
    """What `make help` lists as variables, plus every variable the Makefile lets a user set (?=)."""
    text = (ROOT / "Makefile").read_text()
    settable = set(re.findall(r"^([A-Z_]+)\s*\?=", text, flags=re.M))
    done = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True)
    listed = set(re.findall(r"^\s+([A-Z_]+)=", done.stdout.split("variables", 1)[-1], flags=re.M))
    listed |= set(re.findall(r"\s([A-Z_]+)=\S", done.stdout.split("variables", 1)[-1]))
    return settable | listed


def test_the_option_surface_stays_within_its_limits():
    """At most 90 options over all commands: the tool's surface, not a lab's."""
    commands = _commands(build_parser())
    total = sum(len(_options(p)) for p in commands.values())
    assert total <= MAX_OPTIONS, {c: len(_options(p)) for c, p in commands.items()}


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_the_makefile_variables_stay_within_their_limit():
    """At most 12 variables a user sets (`make help` lists them): options of the commands go through ARGS."""
    variables = _make_variables()
    assert len(variables) <= MAX_MAKE_VARIABLES, sorted(variables)
    assert {"MODEL", "STANDARD", "LENGTHDROP", "RUN", "ARGS"} <= variables
