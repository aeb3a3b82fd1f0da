"""``dynlen lengthdrop``: LengthDrop fine-tuning of a QA model (``make train``)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from dynlen.bench.model_io import LENGTHDROP_MODEL_DIR, STANDARD_MODEL_DIR, check_model_source
from dynlen.cli.argtypes import dropout_or_none
from dynlen.engine.config import DEFAULT_SIGNIFICANCE, resolve_config
from dynlen.engine.probes import AUTO_SIGNIFICANCE, auto_significance
from dynlen.errors import UserError
from dynlen.training.lengthdrop import (
    DEFAULT_MAX_STEPS,
    LOOKAHEAD_SUPERVISION,
    PROBE_INITS,
    SUB_MODEL_LOSSES,
    LengthDropRecipe,
    train_lengthdrop,
)
from dynlen.training.recipe import DEFAULT_TRAIN_SET
from dynlen.training.trainer import PRECISIONS

AUTO_SUPERVISION = "auto"

HELP = "LengthDrop fine-tuning of a QA model (make train)"
DESCRIPTION = (
    "LengthDrop fine-tuning (Kim & Cho 2021) of a fine-tuned SQuAD QA model, so that one set of weights "
    "serves many length configurations. Each step trains the full model on the labels and the smallest "
    "plus N random sub-models on the full model's start/end distributions (sandwich rule, in-place "
    "distillation), on transformers.Trainer. Writes a Hugging Face folder every other command accepts. "
    "Kill-safe: re-running the same command resumes from OUT/checkpoints; a finished OUT with the same "
    "recipe is left alone; one of another recipe is refused, never trained over."
)
FORMATTER = argparse.ArgumentDefaultsHelpFormatter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = LengthDropRecipe(base="", train="")
    io = parser.add_argument_group("inputs and output")
    io.add_argument("--model", default=STANDARD_MODEL_DIR, help="fine-tuned QA model to start from (folder or hub id)")
    io.add_argument("--train", default=DEFAULT_TRAIN_SET, help="SQuAD 1.1 training JSON, or hub:rajpurkar/squad:train")
    io.add_argument("--out", default=LENGTHDROP_MODEL_DIR, help="output model folder (git-ignored)")
    io.add_argument(
        "--teacher",
        default=None,
        help="larger fine-tuned QA model with the same tokenizer; adds KL to its predictions "
        "(temperature 1) to the full model's loss",
    )
    ld = parser.add_argument_group("LengthDrop")
    ld.add_argument(
        "--bound",
        type=float,
        default=d.bound,
        help="largest share of the previous layer's tokens a layer may drop, in [0, 1)",
    )
    ld.add_argument(
        "--num-sub-models",
        type=int,
        default=d.num_sub_models,
        help="random sub-models per step, besides the full and the smallest one",
    )
    ld.add_argument(
        "--sub-model-weight",
        type=float,
        default=d.sub_model_weight,
        help="weight of each sub-model's KL to the full model against the task loss",
    )
    ld.add_argument(
        "--sub-model-loss",
        choices=SUB_MODEL_LOSSES,
        default=d.sub_model_loss,
        help="positions each sub-model's KL covers: all real ones, or only those it kept to the last layer "
        "(restored states then get no gradient)",
    )
    ld.add_argument(
        "--target-config",
        default=None,
        help="the length configuration you will serve (inline, e.g. 'ratios:1,1,0.6,0.4,0.3,0.05', or a JSON file "
        "such as a chosen.json): it replaces the smallest sub-model in every step, so the weights learn that shape "
        "too; its selection is --significance (default: none, the plain sandwich)",
    )
    ld.add_argument(
        "--layerdrop",
        type=float,
        default=d.layerdrop,
        help="LayerDrop: chance that a sub-model bypasses each layer (0 turns it off)",
    )
    ld.add_argument(
        "--significance",
        default=AUTO_SIGNIFICANCE,
        help="token selection the sub-models train under (a policy of dynlen.engine.significance, optionally +question); "
        "a look-ahead policy trains the model's probes in the same run; auto: lookahead+question when the start "
        "model has look-ahead probes, attention otherwise, so the model trains under the selection it is served with",
    )
    ld.add_argument("--probe-width", type=int, default=d.probe_width, help="hidden units per look-ahead probe")
    ld.add_argument("--probe-lr", type=float, default=d.probe_learning_rate, help="the probes' peak learning rate")
    ld.add_argument(
        "--probe-supervision",
        type=_weight_or_auto,
        default=AUTO_SUPERVISION,
        help="weight of the probes' KL in the encoder's gradient (0: probes read detached states; > 0: early "
        f"layers also learn to show the final answer); auto: {LOOKAHEAD_SUPERVISION:g} under a look-ahead policy "
        "(the best measured), 0 otherwise",
    )
    ld.add_argument("--probe-first-layer", type=int, default=d.probe_first_layer, help="first layer with a probe")
    ld.add_argument(
        "--probe-init",
        choices=PROBE_INITS,
        default=d.probe_init,
        help="saved: continue the start model's saved probes when they cover the same layers at the same width; "
        "fresh: new random probes",
    )
    opt = parser.add_argument_group("optimisation")
    opt.add_argument(
        "--epochs",
        type=float,
        default=None,
        help=f"passes over the training features; given without --max-steps, the run trains by epochs "
        f"(default: {DEFAULT_MAX_STEPS} steps, see --max-steps; {d.epochs} when --max-steps is 0)",
    )
    opt.add_argument("--lr", type=float, default=d.learning_rate, help="peak AdamW learning rate (linear warmup/decay)")
    opt.add_argument("--batch-size", type=int, default=d.batch_size, help="features per step (length-grouped)")
    opt.add_argument("--warmup", type=float, default=d.warmup, help="share of steps spent warming up")
    opt.add_argument(
        "--weight-decay", type=float, default=d.weight_decay, help="AdamW decay (none on biases and norms)"
    )
    opt.add_argument("--max-length", type=int, default=d.max_length, help="tokens per feature")
    opt.add_argument("--stride", type=int, default=d.stride, help="overlap between windows of long contexts")
    opt.add_argument(
        "--attention-dropout",
        type=dropout_or_none,
        default="none",
        help="dropout on the full model's attention probabilities ('none': the start model's own; "
        "from a pretrained encoder pass 0, as dynlen finetune trains)",
    )
    opt.add_argument("--seed", type=int, default=d.seed, help="seeds data order, sub-model draws and dropout")
    opt.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="optimiser steps: the run's length and its learning-rate schedule, in place of --epochs "
        f"(part of the recipe; 0: train --epochs instead) (default: {DEFAULT_MAX_STEPS} unless --epochs is given)",
    )
    opt.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=d.precision,
        help="auto: bf16 mixed precision where the CPU/GPU computes it natively, else fp32 (weights saved float32)",
    )
    run = parser.add_argument_group("running")
    run.add_argument("--save-every", type=int, default=200, help="checkpoint into OUT/checkpoints every N steps")
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def significance_from_args(args: argparse.Namespace) -> str:
    """``--significance`` with ``auto`` replaced by the policy it means for the start model (said in one line)."""
    if args.significance != AUTO_SIGNIFICANCE:
        return args.significance
    check_model_source(args.model)  # a missing folder or an unreachable hub: one line before reading its config
    chosen, why = auto_significance(args.model)
    print(f"significance auto -> {chosen} ({why})")
    return chosen


def _weight_or_auto(text: str) -> float | str:
    if text == AUTO_SUPERVISION:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a weight such as 0 or 0.5, or 'auto'") from None


def recipe_from_args(args: argparse.Namespace) -> LengthDropRecipe:
    """The recipe, with ``--probe-supervision auto`` resolved: the measured weight where probes are trained, else 0."""
    recipe = _recipe(args, 0.0 if args.probe_supervision == AUTO_SUPERVISION else args.probe_supervision)
    if args.probe_supervision == AUTO_SUPERVISION and recipe.trains_probes:
        recipe = dataclasses.replace(recipe, probe_supervision=LOOKAHEAD_SUPERVISION)
    return recipe


def _recipe(args: argparse.Namespace, probe_supervision: float) -> LengthDropRecipe:
    significance = significance_from_args(args)
    return LengthDropRecipe(
        base=args.model,
        train=args.train,
        teacher=args.teacher,
        epochs=LengthDropRecipe.epochs if args.epochs is None else args.epochs,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        stride=args.stride,
        warmup=args.warmup,
        weight_decay=args.weight_decay,
        bound=args.bound,
        num_sub_models=args.num_sub_models,
        sub_model_weight=args.sub_model_weight,
        sub_model_loss=args.sub_model_loss,
        layerdrop=args.layerdrop,
        seed=args.seed,
        precision=args.precision,
        significance=significance,
        probe_width=args.probe_width,
        probe_learning_rate=args.probe_lr,
        probe_supervision=probe_supervision,
        probe_first_layer=args.probe_first_layer,
        probe_init=args.probe_init,
        max_steps=_max_steps(args),
        attention_dropout=args.attention_dropout,
        target_config=_target_label(args.target_config, significance),
    )


def _max_steps(args: argparse.Namespace) -> int | None:
    """The run's step count: --max-steps when given (0: none, train by epochs), none when only --epochs
    is given (a user who names epochs means them), else the default run length."""
    if args.max_steps is not None:
        return args.max_steps or None
    return None if args.epochs is not None else DEFAULT_MAX_STEPS


def _target_label(spec: str | None, significance: str) -> str | None:
    """``--target-config`` as exact text for the recipe, refused in one line if it names another selection."""
    if spec is None:
        return None
    config = resolve_config(spec, 1)  # the depth is checked against the model once it is loaded
    if config.kind == "ratios" and all(v == 1.0 for v in config.values):
        raise UserError("--target-config keep-all is what the full model already trains; give a dropping configuration")
    if config.selection != DEFAULT_SIGNIFICANCE and config.selection != significance:
        raise UserError(
            f"--target-config selects by {config.selection} but the run trains under --significance {significance}; "
            "make them agree (the target's sub-model selects as the run does)"
        )
    return config.with_selection(DEFAULT_SIGNIFICANCE, False).label(precise=True)


def run(args: argparse.Namespace) -> None:
    train_lengthdrop(recipe_from_args(args), Path(args.out), args.save_every, args.threads)
