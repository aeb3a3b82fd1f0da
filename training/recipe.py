"""What both trainings share: the training-set default, the recipe fields, recipes' idempotence, the device.

Standard fine-tuning (:mod:`training.finetune`) and LengthDrop (:mod:`training.lengthdrop`) each
describe a run with a frozen dataclass recipe built on :class:`TrainingRecipe`, the key of their
idempotence: an output folder whose ``training.json`` records the same recipe is a finished
model and is left alone. Both run on ``transformers.Trainer`` (:mod:`training.trainer`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from bench.device import resolve_device

# The official SQuAD 1.1 training set (442 articles, 87,599 questions; its md5 is checked on load).
DEFAULT_TRAIN_SET = "../shared/data/squad/train-v1.1.json"


@dataclass(frozen=True)
class TrainingRecipe:
    """The fields every training's recipe has; each recipe sets its own ``epochs`` and ``learning_rate`` defaults."""

    base: str
    train: str
    epochs: float
    learning_rate: float
    batch_size: int = 16
    max_length: int = 384
    stride: int = 128
    warmup: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    precision: str = "auto"  # bf16 mixed precision where the hardware has it; the saved weights stay float32


def training_device() -> torch.device:
    """A GPU when torch sees one, else the CPU: training never needs to be told."""
    return resolve_device("auto")


def already_built(out: Path, recipe) -> bool:
    """Whether ``out`` holds a finished model whose ``training.json`` records ``recipe``."""
    info = out / "training.json"
    if not (info.is_file() and (out / "config.json").is_file()):
        return False
    try:
        return same_recipe(json.loads(info.read_text()).get("recipe"), recipe)
    except json.JSONDecodeError:
        return False


def same_recipe(stored: dict | None, recipe) -> bool:
    """Whether a stored recipe equals ``recipe``, reading options it predates as their defaults.

    A recipe written before an option existed was trained without it, i.e. with its default,
    so adding an option must not make finished models look stale. Where the old behaviour is not
    today's default, the recipe class names it in ``PREDATED``.
    """
    if not isinstance(stored, dict):
        return False
    predated = getattr(type(recipe), "PREDATED", {})  # options whose value before they existed is not today's default
    try:
        return asdict(type(recipe)(**{**predated, **stored})) == asdict(recipe)
    except TypeError:  # an option this version no longer knows
        return False
