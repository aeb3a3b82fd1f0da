"""``dynlen probes``: train a QA model's look-ahead probes (``make probes``)."""

from __future__ import annotations

import argparse

from dynlen.bench.model_io import STANDARD_MODEL_DIR
from dynlen.training.probes import FULL_TRAIN_SET, ProbeRecipe, train_probes

HELP = "train the look-ahead probes the 'lookahead' significance policies read (make probes)"
DESCRIPTION = (
    "Train one small span probe per layer of a fine-tuned QA model (encoder frozen) to predict the model's "
    "final start/end distributions; saved into the model folder (lookahead_probes.safetensors + a config.json "
    "entry), or with --out into a new folder holding a copy of the model. Idempotent: probes trained with the same recipe are left alone."
)
FORMATTER = argparse.ArgumentDefaultsHelpFormatter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=STANDARD_MODEL_DIR,
        help="fine-tuned QA model folder (probes go inside) or, with --out, a hub id",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="save a copy of the model with its probes in this new folder instead (a read-only folder or a hub "
        "model); then use --model OUT",
    )
    parser.add_argument("--train", default=FULL_TRAIN_SET, help="SQuAD 1.1 training JSON (never the dev set)")
    parser.add_argument("--features", type=int, default=ProbeRecipe.features, help="training features sampled")
    parser.add_argument("--width", type=int, default=ProbeRecipe.width, help="probe hidden width (0: linear)")
    parser.add_argument(
        "--match-heads",
        type=int,
        default=ProbeRecipe.match_heads,
        help="question-matching heads per probe (0: none; > 0 needs --width > 0 and a '+question' policy)",
    )
    parser.add_argument("--first-layer", type=int, default=ProbeRecipe.first_layer, help="first probed layer, 0-based")
    parser.add_argument("--epochs", type=int, default=ProbeRecipe.epochs, help="passes over the sampled features")
    parser.add_argument("--lr", type=float, default=ProbeRecipe.learning_rate, help="probe learning rate")
    parser.add_argument("--batch-size", type=int, default=ProbeRecipe.batch_size, help="features per step")
    parser.add_argument("--seed", type=int, default=ProbeRecipe.seed, help="seeds the feature sample and order")
    parser.add_argument(
        "--temperature",
        type=float,
        default=ProbeRecipe.temperature,
        help="softens the model's final distributions the probes learn (1: as they are)",
    )
    parser.add_argument(
        "--gold-weight",
        type=float,
        default=ProbeRecipe.gold_weight,
        help="weight of the gold span's cross-entropy beside the KL (0: the model's predictions only)",
    )
    parser.add_argument(
        "--retrain", action="store_true", help="replace probes that LengthDrop trained together with the model"
    )


def run(args: argparse.Namespace) -> None:
    recipe = ProbeRecipe(
        train=args.train,
        features=args.features,
        width=args.width,
        match_heads=args.match_heads,
        first_layer=args.first_layer,
        epochs=args.epochs,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        temperature=args.temperature,
        gold_weight=args.gold_weight,
    )
    train_probes(args.model, recipe, retrain=args.retrain, out=args.out)
