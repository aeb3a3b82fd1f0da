"""What both trainings share: the training-set default, recipes' idempotence, batching, optimiser, schedule.

Standard fine-tuning (:mod:`training.finetune`) and LengthDrop (:mod:`training.lengthdrop`) each
describe a run with a frozen dataclass recipe, the key of their idempotence: an output folder
whose ``training.json`` records the same recipe is a finished model and is left alone.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from bench.device import resolve_device

# The official SQuAD 1.1 training set (442 articles, 87,599 questions; its md5 is checked on load).
DEFAULT_TRAIN_SET = "../shared/data/squad/train-v1.1.json"
NO_DECAY = ("bias", "LayerNorm.weight", "layernorm", "norm.weight")


def training_device() -> torch.device:
    """A GPU when torch sees one, else the CPU: training never needs to be told."""
    return resolve_device("auto")


def length_grouped_batches(lengths: list[int], batch_size: int, rng: random.Random, group: int = 50) -> list[list[int]]:
    """Random batches of similar length: shuffle, sort inside mega-batches, shuffle the batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    mega = batch_size * group
    for lo in range(0, len(order), mega):
        chunk = sorted(order[lo : lo + mega], key=lambda i: lengths[i], reverse=True)
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def linear_schedule(optimizer, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(model: nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW without decay on biases and norms."""
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if not any(k in n for k in NO_DECAY)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if any(k in n for k in NO_DECAY)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=learning_rate)


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> None:
    """Clip to norm 1, step, advance the schedule, clear the gradients."""
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


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
    so adding an option must not make finished models look stale.
    """
    if not isinstance(stored, dict):
        return False
    try:
        return asdict(type(recipe)(**stored)) == asdict(recipe)
    except TypeError:  # an option this version no longer knows
        return False
