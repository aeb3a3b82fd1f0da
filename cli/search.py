"""``dynlen search``: search configurations, re-score the frontier on held-out, write the report."""

from __future__ import annotations

import argparse

from dynlen.bench.model_io import LoadOptions
from dynlen.cli.options import add_options, values
from dynlen.engine.probes import AUTO_SIGNIFICANCE
from dynlen.reports.report import make_report
from dynlen.search.budget import parse_budget
from dynlen.search.settings import SEARCH_DEVICE, SearchSettings
from dynlen.search.space import parse_selections
from dynlen.search.study import run_search

HELP = "search configurations, re-score the frontier on held-out, write the report"
DESCRIPTION = (
    "Optuna search over per-layer length configurations (maximise F1, minimise cost) "
    "on one article-level split of the data; the frontier is re-scored on the "
    "held-out split and a report is written to the run folder. Re-running the "
    "same command resumes the study; with --storage on a database server, the same command on "
    "several processes or machines shares one study and stops at --trials completed trials in all."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, SearchSettings)
    add_options(parser.add_argument_group("loading the model"), LoadOptions, defaults={"device": SEARCH_DEVICE})


def settings_from_args(args: argparse.Namespace) -> SearchSettings:
    """The settings the command line gives, budget and selection read once into their stored form."""
    budget = parse_budget(args.budget)
    selection = args.significance
    if selection != AUTO_SIGNIFICANCE:
        selection = ",".join(parse_selections(selection))
    load = LoadOptions(**values(LoadOptions, args))
    return SearchSettings(
        **values(SearchSettings, args, budget=str(budget) if budget else None, significance=selection, load=load)
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    run_dir = run_search(settings, parse_budget(args.budget))
    if run_dir is not None and settings.report:
        for path in make_report(run_dir):
            print(f"wrote {path}")
    return 0
