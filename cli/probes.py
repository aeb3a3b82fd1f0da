"""``dynlen probes``: train a QA model's look-ahead probes (``make probes``)."""

from __future__ import annotations

import argparse

from dynlen.bench.model_io import STANDARD_MODEL_DIR
from dynlen.cli.options import add_options, values
from dynlen.training.probes import ProbeRecipe, train_probes

HELP = "train the look-ahead probes the 'lookahead' significance policies read (make probes)"
DESCRIPTION = (
    "Train one small span probe per layer of a fine-tuned QA model (encoder frozen) to predict the model's "
    "final start/end distributions; saved into the model folder (lookahead_probes.safetensors + a config.json "
    "entry), or with --out into a new folder holding a copy of the model. Idempotent: probes trained with the same recipe are left alone."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=STANDARD_MODEL_DIR,
        help="fine-tuned QA model folder (probes go inside) or, with --out, a hub id (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="save a copy of the model with its probes in this new folder instead (a read-only folder or a hub "
        "model); then use --model OUT (default: none)",
    )
    add_options(parser, ProbeRecipe)
    parser.add_argument(
        "--retrain",
        action="store_true",
        help="replace probes that LengthDrop trained together with the model (default: off)",
    )


def run(args: argparse.Namespace) -> None:
    train_probes(args.model, ProbeRecipe(**values(ProbeRecipe, args)), retrain=args.retrain, out=args.out)
