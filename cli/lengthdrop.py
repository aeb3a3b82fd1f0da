"""``dynlen lengthdrop``: LengthDrop fine-tuning of a QA model (``make train``)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from dynlen.bench.model_io import LENGTHDROP_MODEL_DIR, STANDARD_MODEL_DIR, check_model_source
from dynlen.cli.options import add_options, values
from dynlen.engine.probes import AUTO_SIGNIFICANCE, auto_significance
from dynlen.training.lengthdrop import (
    AUTO_SUPERVISION,
    DEFAULT_MAX_STEPS,
    LOOKAHEAD_SUPERVISION,
    LengthDropRecipe,
    train_lengthdrop,
)
from dynlen.training.recipe import DEFAULT_TRAIN_SET

HELP = "LengthDrop fine-tuning of a QA model (make train)"
DESCRIPTION = (
    "LengthDrop fine-tuning (Kim & Cho 2021) of a fine-tuned SQuAD QA model, so that one set of weights "
    "serves many length configurations. Each step trains the full model on the labels and the smallest "
    "plus N random sub-models on the full model's start/end distributions (sandwich rule, in-place "
    "distillation), on transformers.Trainer. Writes a Hugging Face folder every other command accepts. "
    "Kill-safe: re-running the same command resumes from OUT/checkpoints; a finished OUT with the same "
    "recipe is left alone; one of another recipe is refused, never trained over."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = {
        "base": STANDARD_MODEL_DIR,
        "train": DEFAULT_TRAIN_SET,
        "significance": AUTO_SIGNIFICANCE,
        "probe_supervision": AUTO_SUPERVISION,
        "epochs": None,  # given without --max-steps, the run trains by epochs
    }
    shown = {
        "epochs": f"{DEFAULT_MAX_STEPS} steps, see --max-steps; {LengthDropRecipe.epochs} when --max-steps is 0",
        "attention_dropout": "none, the start model's own",
    }
    add_options(parser, LengthDropRecipe, defaults=defaults, shown=shown)
    parser.add_argument("--out", default=LENGTHDROP_MODEL_DIR, help="output model folder (git-ignored)")


def significance_from_args(args: argparse.Namespace) -> str:
    """``--significance`` with ``auto`` replaced by the policy it means for the start model (said in one line)."""
    if args.significance != AUTO_SIGNIFICANCE:
        return args.significance
    check_model_source(args.base)  # a missing folder or an unreachable hub: one line before reading its config
    chosen, why = auto_significance(args.base)
    print(f"significance auto -> {chosen} ({why})")
    return chosen


def recipe_from_args(args: argparse.Namespace) -> LengthDropRecipe:
    """The recipe, with ``--probe-supervision auto`` resolved: the measured weight where probes are trained, else 0."""
    recipe = _recipe(args, 0.0 if args.probe_supervision == AUTO_SUPERVISION else args.probe_supervision)
    if args.probe_supervision == AUTO_SUPERVISION and recipe.trains_probes:
        recipe = dataclasses.replace(recipe, probe_supervision=LOOKAHEAD_SUPERVISION)
    return recipe


def _recipe(args: argparse.Namespace, probe_supervision: float) -> LengthDropRecipe:
    epochs = LengthDropRecipe.epochs if args.epochs is None else args.epochs
    given = dict(
        significance=significance_from_args(args),
        probe_supervision=probe_supervision,
        epochs=epochs,
        max_steps=_max_steps(args),
    )
    return LengthDropRecipe(**values(LengthDropRecipe, args, **given))


def _max_steps(args: argparse.Namespace) -> int | None:
    """The run's step count: --max-steps when given (0: none, train by epochs), none when only --epochs
    is given (a user who names epochs means them), else the default run length."""
    if args.max_steps is not None:
        return args.max_steps or None
    return None if args.epochs is not None else DEFAULT_MAX_STEPS


def run(args: argparse.Namespace) -> None:
    train_lengthdrop(recipe_from_args(args), Path(args.out))
