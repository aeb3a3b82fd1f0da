"""``dynlen finetune``: standard SQuAD fine-tuning of a pretrained encoder (``make model-standard``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dynlen.bench.model_io import PACKAGED_ENCODER, STANDARD_MODEL_DIR, default_encoder_dir
from dynlen.cli.options import add_options, values
from dynlen.training.finetune import Recipe, train
from dynlen.training.recipe import DEFAULT_TRAIN_SET

HELP = "fine-tune a pretrained encoder into a SQuAD QA model (make model-standard)"
DESCRIPTION = (
    "Fine-tune a pretrained BERT-family encoder into a SQuAD 1.1 QA model (idempotent). The default "
    f"encoder, {PACKAGED_ENCODER}, is the all-MiniLM-L6-v2 shipped in that PyPI package."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, Recipe, defaults={"base": PACKAGED_ENCODER, "train": DEFAULT_TRAIN_SET})
    parser.add_argument("--out", default=STANDARD_MODEL_DIR, help="output model folder (git-ignored)")


def run(args: argparse.Namespace) -> None:
    base = default_encoder_dir() if args.base == PACKAGED_ENCODER else args.base
    train(Recipe(**values(Recipe, args, base=base)), Path(args.out))
