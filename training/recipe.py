"""What both trainings share: the training-set default, the recipe fields, recipes' idempotence, the device.

Standard fine-tuning (:mod:`training.finetune`) and LengthDrop (:mod:`training.lengthdrop`) each
describe a run with a frozen dataclass recipe built on :class:`TrainingRecipe`, the key of their
idempotence: an output folder whose ``training.json`` records the same recipe is a finished
model and is left alone; a finished model of another recipe is refused, never trained over.
Both run on ``transformers.Trainer`` (:mod:`training.trainer`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from dynlen.bench.device import resolve_device
from dynlen.errors import UserError
from dynlen.options import flag, option, positive_float

PRECISIONS = ("auto", "bf16", "fp32")
# The official SQuAD 1.1 training set (442 articles, 87,599 questions; its md5 is checked on load).
DEFAULT_TRAIN_SET = "../shared/data/squad/train-v1.1.json"


def dropout_or_none(text: str) -> float | None:
    """A dropout probability from the command line, or ``none`` for the model config's own (checked by the recipe)."""
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a probability such as 0 or 0.1, or 'none'") from None


@dataclass(frozen=True)
class TrainingRecipe:
    """The fields every training's recipe has, each option declared once; a recipe sets its own
    ``epochs`` and ``learning_rate`` defaults (``same_option``)."""

    base: str = option(help="model to start from: folder or hub id", flag="--model")
    train: str = option(help="SQuAD 1.1 training JSON, or hub:rajpurkar/squad:train (never the dev set)")
    epochs: float = option(help="passes over the training features", type=positive_float)
    learning_rate: float = option(
        help="peak AdamW learning rate (linear warmup and decay)", flag="--lr", type=positive_float
    )
    batch_size: int = option(16, "features per step (length-grouped)", cli=False)
    max_length: int = option(384, "tokens per feature", cli=False)
    stride: int = option(128, "overlap between windows of long contexts", cli=False)
    warmup: float = option(0.1, "share of steps spent warming up", cli=False)
    weight_decay: float = option(0.01, "AdamW decay (none on biases and norms)", cli=False)
    seed: int = option(0, "seeds data order, dropout and (LengthDrop) the sub-model draws", cli=False)
    precision: str = option(
        "auto",
        "auto: bf16 mixed precision where the CPU/GPU computes it natively, else fp32 (weights saved float32)",
        choices=PRECISIONS,
    )
    # Dropout on the attention probabilities. Off is 1.54x faster a step on a 2-core CPU: it forces
    # SDPA off its fused kernel onto the math path, and the Drop-and-Restore engine never applies it.
    attention_dropout: float | None = option(
        None,
        "dropout on the attention probabilities ('none': the start model's config's own; 0: off, 1.54x faster "
        "steps on a 2-core CPU)",
        type=dropout_or_none,
    )


def check_attention_dropout(p: float | None) -> None:
    """One line when ``--attention-dropout`` is not a probability (None keeps the config's own)."""
    if p is not None and not 0.0 <= p < 1.0:
        raise UserError(f"{flag(TrainingRecipe, 'attention_dropout')} must be in [0, 1), got {p:g}")


def attention_dropout_option(base: str, p: float | None) -> dict:
    """The ``from_pretrained`` keyword that sets the family's attention-probability dropout to ``p``.

    BERT, RoBERTa and MobileBERT call it ``attention_probs_dropout_prob``, DistilBERT
    ``attention_dropout``; ``p=None`` keeps the config's own value.
    """
    if p is None:
        return {}
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base)
    for key in ("attention_probs_dropout_prob", "attention_dropout"):
        if hasattr(config, key):
            return {key: p}
    raise UserError(
        f"{base}'s config ({type(config).__name__}) has no attention-dropout setting; pass --attention-dropout none"
    )


def training_device() -> torch.device:
    """A GPU when torch sees one, else the CPU: training never needs to be told."""
    return resolve_device("auto")


def already_built(out: Path, recipe) -> bool:
    """Whether ``out`` holds a finished model whose ``training.json`` records ``recipe``.

    A finished model of another recipe is refused in one line rather than trained over: it may be
    hours of CPU, and the options that built it are named so the user can keep it.
    """
    info = out / "training.json"
    if not (info.is_file() and (out / "config.json").is_file()):
        return False
    try:
        record = json.loads(info.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False  # a record cut short: the model was not finished, so it is trained again
    stored = record.get("recipe") if isinstance(record, dict) else None
    if same_recipe(stored, recipe):
        return True
    if isinstance(stored, dict):
        raise UserError(
            f"{out} holds a finished model trained with other options ({differences(stored, recipe)}); re-run "
            f"with those options to keep it, or choose another --out (or delete {out}) to train this recipe"
        )
    return False


def differences(stored: dict, recipe) -> str:
    """Which recipe fields differ and how (stored -> now), reading fields a stored recipe lacks as their defaults."""
    retired = getattr(type(recipe), "RETIRED", {})
    wanted = {**asdict(recipe), **retired}
    filled = {**{f.name: f.default for f in fields(type(recipe))}, **retired, **stored}
    trained, trains = _as_trained(filled), _as_trained(wanted)
    changed = sorted(k for k in set(trained) | set(trains) if filled.get(k) != wanted.get(k))
    return "differs in: " + ", ".join(f"{k} ({filled.get(k)!r} stored, {wanted.get(k)!r} now)" for k in changed)


def same_recipe(stored: dict | None, recipe) -> bool:
    """Whether a stored recipe equals ``recipe``, reading options it lacks as their defaults.

    A recipe written before an option existed was trained without it, i.e. with its default, so
    adding an option must not make finished models look stale. An option this version no longer
    offers matches only at the value the recipe class names in ``RETIRED`` (what this version
    always does), so a model trained with it set otherwise is never taken for this recipe.
    """
    if not isinstance(stored, dict):
        return False
    current = without_retired(stored, getattr(type(recipe), "RETIRED", {}))
    if current is None:
        return False
    try:
        return _as_trained(asdict(type(recipe)(**current))) == _as_trained(asdict(recipe))
    except TypeError:  # an option this version does not know
        return False


def without_retired(stored: dict, retired: dict) -> dict | None:
    """``stored`` without the retired options, or None when one of them holds another value than ``retired`` says."""
    if any(key in stored and stored[key] != value for key, value in retired.items()):
        return None
    return {k: v for k, v in stored.items() if k not in retired}


def _as_trained(recipe: dict) -> dict:
    """The fields that decide what a run trains: with a step count set, the epoch count decides nothing.

    The trainer then stops after ``max_steps`` and spreads its learning-rate schedule over them,
    whatever ``epochs`` says, so two recipes that differ only there train the same model.
    """
    if recipe.get("max_steps"):
        return {k: v for k, v in recipe.items() if k != "epochs"}
    return recipe
