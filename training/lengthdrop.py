"""LengthDrop training (Length-Adaptive Transformer, Kim & Cho 2021): ``python -m training lengthdrop``.

A model fine-tuned at full length degrades quickly when later layers see fewer tokens, so the
search finds little worth keeping. LengthDrop continues fine-tuning with randomly shortened
forward passes so that one set of weights works across many length configurations.

Every step follows the sandwich rule with in-place distillation: the full model learns from
the labels (plus, optionally, a larger teacher), and the smallest sub-model and a few random
ones learn to match the full model's own start/end distributions. All their gradients are
summed before one optimizer step.

The run can be killed and re-run: it resumes from ``OUT/checkpoint`` with the same data
order and random draws, so the end result equals an uninterrupted run. An output folder
whose ``training.json`` records the same recipe is left alone.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from bench.adaptive import LengthAdaptiveQA
from bench.config import LengthConfig, cumulative_ratios
from bench.errors import UserError
from bench.features import Features, cached_features, collate
from bench.model_io import load_qa_model, load_tokenizer
from bench.squad import load_squad
from training.checkpoints import (
    CHECKPOINT_DIR,
    MAX_FILE_BYTES,
    Progress,
    find_checkpoint,
    resume,
    save_checkpoint,
)
from training.recipe import already_built, length_grouped_batches, linear_schedule, optimizer_step, training_device
from training.recipe import make_optimizer as _make_optimizer

MIN_RATIO = 1e-6  # LengthConfig needs ratios > 0 even after rounding


@dataclass(frozen=True)
class LengthDropRecipe:
    """Everything that determines the trained weights (the idempotence and resume key)."""

    base: str
    train: str
    teacher: str | None = None
    epochs: float = 0.6
    learning_rate: float = 5e-5
    batch_size: int = 16
    max_length: int = 384
    stride: int = 128
    warmup: float = 0.1
    weight_decay: float = 0.01
    bound: float = 0.2
    num_sub_models: int = 2
    layerdrop: float = 0.0  # chance that a sub-model bypasses a layer (LayerDrop); 0 = off
    seed: int = 0
    max_steps: int | None = None  # part of the key: it sets the learning-rate schedule

    def check(self) -> None:
        """Reject options that would only fail (or silently do nothing) hours later."""
        if not 0.0 <= self.bound < 1.0:
            raise UserError(f"--bound must be in [0, 1): the share of tokens a layer may drop; got {self.bound:g}")
        if not 0.0 <= self.layerdrop < 1.0:
            raise UserError(
                f"--layerdrop must be in [0, 1): the chance a sub-model skips a layer; got {self.layerdrop:g}"
            )
        if self.num_sub_models < 0:
            raise UserError(f"--num-sub-models must be 0 or more; got {self.num_sub_models}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1; got {self.batch_size}")
        if self.epochs <= 0 and not self.max_steps:
            raise UserError(f"--epochs must be positive; got {self.epochs:g}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError(f"--max-steps must be at least 1; got {self.max_steps}")
        if self.learning_rate <= 0:
            raise UserError(f"--lr must be positive; got {self.learning_rate:g}")


# --- sub-model sampling ---------------------------------------------------------------------
def smallest_config(num_layers: int, bound: float) -> LengthConfig:
    """The lower slice of the sandwich: every layer keeps (1 - bound) of what the previous one kept."""
    return cumulative_ratios([1.0 - bound] * num_layers, MIN_RATIO)


def random_config(num_layers: int, bound: float, rng: random.Random) -> LengthConfig:
    """A LengthDrop sample: each layer keeps a uniform share in [1 - bound, 1] of the previous layer."""
    return cumulative_ratios([rng.uniform(1.0 - bound, 1.0) for _ in range(num_layers)], MIN_RATIO)


def sub_model_configs(num_layers: int, bound: float, count: int, seed: int, step: int) -> list[LengthConfig]:
    """The smallest sub-model plus ``count`` random ones.

    Drawn from (seed, step) alone, so a resumed run redraws exactly the sub-models it lost.
    """
    rng = random.Random(f"lengthdrop:{seed}:{step}")
    return [smallest_config(num_layers, bound)] + [random_config(num_layers, bound, rng) for _ in range(count)]


def layer_skips(num_layers: int, probability: float, count: int, seed: int, step: int) -> list[frozenset[int]]:
    """LayerDrop: for each of ``count`` sub-models, the layers it bypasses this step.

    Each layer is skipped with ``probability``, but never all of them. Drawn from (seed, step) on
    a stream of its own, so turning LayerDrop on leaves the sub-models' lengths unchanged.
    """
    rng = random.Random(f"layerdrop:{seed}:{step}")
    skips = []
    for _ in range(count):
        skipped = {i for i in range(num_layers) if rng.random() < probability}
        if len(skipped) == num_layers:
            skipped.discard(num_layers - 1)
        skips.append(frozenset(skipped))
    return skips


# --- losses ---------------------------------------------------------------------------------
def mask_padding(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Padding must get no probability mass; half of the dtype's minimum stays finite after log_softmax."""
    return logits.masked_fill(~attention_mask.bool(), torch.finfo(logits.dtype).min / 2)


def span_task_loss(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    attention_mask: torch.Tensor,
    start_positions: torch.Tensor,
    end_positions: torch.Tensor,
) -> torch.Tensor:
    """Mean of the start and end cross-entropies, as the stock QA head computes it, with padding excluded."""
    start = F.cross_entropy(mask_padding(start_logits, attention_mask), start_positions)
    end = F.cross_entropy(mask_padding(end_logits, attention_mask), end_positions)
    return (start + end) / 2


def span_kl(
    student: tuple[torch.Tensor, torch.Tensor],
    teacher: tuple[torch.Tensor, torch.Tensor],
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """KL(teacher || student) of the start and end distributions, averaged; the teacher gets no gradient."""
    total = student[0].new_zeros(())
    for s_logits, t_logits in zip(student, teacher):
        log_student = F.log_softmax(mask_padding(s_logits, attention_mask), dim=-1)
        target = F.softmax(mask_padding(t_logits.detach(), attention_mask), dim=-1)
        total = total + F.kl_div(log_student, target, reduction="batchmean")
    return total / 2


# --- one step -------------------------------------------------------------------------------
@dataclass
class StepLosses:
    """What one step measured, for the progress bar and training.json."""

    task: float
    teacher_kl: float | None = None
    sub_kl: list[float] = field(default_factory=list)


def teacher_logits(teacher: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's start/end logits, cloned out of inference mode so the KL can keep them for backward."""
    with torch.inference_mode():
        out = teacher(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
        )
    return out.start_logits.clone(), out.end_logits.clone()


def train_step(
    qa: LengthAdaptiveQA,
    batch: dict[str, torch.Tensor],
    configs: Sequence[LengthConfig],
    teacher: nn.Module | None = None,
    skips: Sequence[Collection[int]] | None = None,
) -> StepLosses:
    """Forward and backward for the full model, then each sub-model; gradients accumulate, the caller steps.

    Each backward runs right after its forward, so only one computation graph is alive at a time.
    """
    inputs = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    mask = batch["attention_mask"]
    full = qa(*inputs)
    task = span_task_loss(full.start_logits, full.end_logits, mask, batch["start_positions"], batch["end_positions"])
    loss, losses = task, StepLosses(task=task.item())
    if teacher is not None:
        kd = span_kl((full.start_logits, full.end_logits), teacher_logits(teacher, batch), mask)
        loss = loss + kd
        losses.teacher_kl = kd.item()
    loss.backward()
    target = (full.start_logits.detach(), full.end_logits.detach())
    for index, config in enumerate(configs):
        out = qa(*inputs, config=config, skip=skips[index] if skips else ())
        kl = span_kl((out.start_logits, out.end_logits), target, mask)
        kl.backward()
        losses.sub_kl.append(kl.item())
    return losses


def make_optimizer(model: nn.Module, recipe: LengthDropRecipe) -> torch.optim.Optimizer:
    """AdamW without decay on biases and norms, as standard fine-tuning uses."""
    return _make_optimizer(model, recipe.learning_rate, recipe.weight_decay)


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Batch order of one epoch, a function of (seed, epoch) only, so a resumed run can skip the batches done."""
    return length_grouped_batches(lengths, batch_size, random.Random(f"lengthdrop-data:{seed}:{epoch}"))


# --- teacher --------------------------------------------------------------------------------
def check_same_vocab(student_tokenizer, teacher_tokenizer, teacher_name: str) -> None:
    """Distillation compares distributions position by position, which only means something on identical tokens."""
    student, teacher = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if student == teacher:
        return
    only_student = len(student.keys() - teacher.keys())
    only_teacher = len(teacher.keys() - student.keys())
    moved = sum(1 for token in student.keys() & teacher.keys() if student[token] != teacher[token])
    raise UserError(
        f"teacher {teacher_name} uses a different vocabulary than the student ({len(teacher)} vs {len(student)} "
        f"tokens; {only_student} only in the student, {only_teacher} only in the teacher, {moved} with other ids). "
        "Distillation compares start/end distributions token by token, so the teacher must share the student's "
        "tokenizer: pick a teacher fine-tuned from the same tokenizer family"
    )


def load_teacher(name: str, student_tokenizer, device: torch.device) -> nn.Module:
    check_same_vocab(student_tokenizer, load_tokenizer(name), name)
    teacher = load_qa_model(name).to(device).eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


# --- the run --------------------------------------------------------------------------------
def _ema(previous: float | None, value: float) -> float:
    return value if previous is None else 0.98 * previous + 0.02 * value


def _warn_big_files(out: Path) -> None:
    """save_pretrained cannot split one tensor, so a large embedding matrix can exceed the limit: say so."""
    for path in sorted(out.iterdir()):
        if path.is_file() and path.stat().st_size > MAX_FILE_BYTES:
            print(
                f"warning: {path} is {path.stat().st_size / 2**20:.1f} MiB (one tensor larger than a shard)",
                file=sys.stderr,
            )


def _finish(out: Path, recipe: LengthDropRecipe, model: nn.Module, tokenizer, info: dict) -> None:
    """Model first, training.json next (it marks the folder complete), checkpoint removed last."""
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size="15MB")
    tokenizer.save_pretrained(out)
    (out / "training.json").write_text(json.dumps({"recipe": asdict(recipe), "method": "lengthdrop", **info}, indent=2))
    _remove_checkpoint(out)
    _warn_big_files(out)


def _remove_checkpoint(out: Path) -> None:
    for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".tmp", CHECKPOINT_DIR + ".old"):
        shutil.rmtree(out / name, ignore_errors=True)


def _load_features(recipe: LengthDropRecipe, tokenizer) -> Features:
    data = load_squad(recipe.train)
    feats = cached_features(data, tokenizer, recipe.max_length, recipe.stride, with_labels=True)
    if len(feats) == 0:
        raise UserError(f"{recipe.train} gave no training features")
    return feats


def train_lengthdrop(recipe: LengthDropRecipe, out: Path, save_every: int = 200, threads: int | None = None) -> Path:
    """Train (resuming from OUT/checkpoint, or skipping when already built) and save a Hugging Face folder."""
    recipe.check()
    if save_every < 1:
        raise UserError(f"--save-every must be at least 1; got {save_every}")
    if already_built(out, recipe):
        _remove_checkpoint(out)
        print(f"{out} already holds a model trained with this recipe; nothing to do (delete it to rebuild)")
        return out
    if threads:
        torch.set_num_threads(threads)
    random.seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    device = training_device()

    found = find_checkpoint(out / CHECKPOINT_DIR, recipe)
    tokenizer = load_tokenizer(recipe.base)
    teacher = load_teacher(recipe.teacher, tokenizer, device) if recipe.teacher else None
    feats = _load_features(recipe, tokenizer)
    total = recipe.max_steps or max(1, int(round(math.ceil(len(feats) / recipe.batch_size) * recipe.epochs)))

    model = load_qa_model(recipe.base).to(device)
    qa = LengthAdaptiveQA(model)
    optimizer = make_optimizer(model, recipe)
    scheduler = linear_schedule(optimizer, int(recipe.warmup * total), total)
    progress = resume(found, model, optimizer, scheduler) if found else Progress()
    print(
        f"LengthDrop on {recipe.base}: {len(feats)} features, {total} steps on {device}, "
        f"full model + smallest + {recipe.num_sub_models} random sub-models per step (bound {recipe.bound:g})"
        + (f", teacher {recipe.teacher}" if teacher is not None else "")
        + (f"; resuming at step {progress.step}" if found else ""),
        flush=True,
    )
    session = Session(
        qa, teacher, feats, tokenizer.pad_token_id or 0, recipe, optimizer, scheduler, total, out, save_every, device
    )
    started = time.time()
    session.run(progress)
    minutes = (time.time() - started) / 60
    info = {
        "steps": progress.step,
        "features": len(feats),
        "minutes": round(minutes, 1),
        "device": str(device),
        "final_loss": progress.loss_avg,
        "final_sub_model_kl": progress.kl_avg,
    }
    _finish(out, recipe, model, tokenizer, info)
    print(f"saved {out} after {progress.step} steps ({minutes:.1f} min this run)", flush=True)
    return out


@dataclass
class Session:
    """The pieces the training loop needs, so the loop itself stays short."""

    qa: LengthAdaptiveQA
    teacher: nn.Module | None
    feats: Features
    pad_id: int
    recipe: LengthDropRecipe
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    total: int
    out: Path
    save_every: int
    device: torch.device

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.feats) / self.recipe.batch_size)

    def run(self, progress: Progress) -> None:
        """Epochs are rebuilt from (seed, epoch) and the batches already done are skipped."""
        self.qa.model.train()
        bar = tqdm(
            total=self.total, initial=progress.step, desc="lengthdrop", unit="step", file=sys.stdout, mininterval=10
        )
        while progress.step < self.total:
            epoch, done = divmod(progress.step, self.steps_per_epoch)
            for idx in epoch_batches(self.feats.lengths, self.recipe.batch_size, self.recipe.seed, epoch)[done:]:
                self.step(idx, progress)
                bar.update(1)
                bar.set_postfix(loss=f"{progress.loss_avg:.3f}", sub_kl=f"{progress.kl_avg:.4f}")
                if progress.step >= self.total:
                    break
                if progress.step % self.save_every == 0:
                    save_checkpoint(
                        self.out / CHECKPOINT_DIR, self.recipe, self.qa.model, self.optimizer, self.scheduler, progress
                    )
        bar.close()

    def step(self, idx: list[int], progress: Progress) -> None:
        r = self.recipe
        batch = {k: v.to(self.device) for k, v in collate(self.feats, idx, self.pad_id).items()}
        configs = sub_model_configs(self.qa.num_layers, r.bound, r.num_sub_models, r.seed, progress.step)
        skips = (
            layer_skips(self.qa.num_layers, r.layerdrop, len(configs), r.seed, progress.step) if r.layerdrop else None
        )
        losses = train_step(self.qa, batch, configs, self.teacher, skips)
        optimizer_step(self.qa.model, self.optimizer, self.scheduler)
        progress.step += 1
        progress.loss_avg = _ema(progress.loss_avg, losses.task)
        progress.kl_avg = _ema(progress.kl_avg, sum(losses.sub_kl) / max(1, len(losses.sub_kl)))
