"""LengthDrop training (Length-Adaptive Transformer, Kim & Cho 2021): ``python -m bench.lengthdrop``.

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

import argparse
import json
import math
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Collection, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from bench.adaptive import LengthAdaptiveQA
from bench.config import LengthConfig
from bench.errors import UserError, exit_status
from bench.features import Features, cached_features, collate
from bench.model_io import DEFAULT_MODEL_DIR, STANDARD_MODEL_DIR, load_qa_model, load_tokenizer, quiet_libraries
from bench.squad import load_squad
from bench.train import DEFAULT_TRAIN, _already_built, _linear_schedule, length_grouped_batches, same_recipe

DEFAULT_OUT = DEFAULT_MODEL_DIR
CHECKPOINT_DIR = "checkpoint"
MAX_FILE_BYTES = 16 * 1024 * 1024  # every file the run writes should stay below this
SHARD_BYTES = 15 * 1000 * 1000  # what save_pretrained(max_shard_size="15MB") aims for
MIN_RATIO = 1e-6  # LengthConfig needs ratios > 0 even after rounding
NO_DECAY = ("bias", "LayerNorm.weight", "layernorm", "norm.weight")


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
            raise UserError(f"--layerdrop must be in [0, 1): the chance a sub-model skips a layer; got {self.layerdrop:g}")
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
def _cumulative(shares: Sequence[float]) -> LengthConfig:
    """Per-layer shares of the previous layer -> ratios of the input length (rounded like LengthConfig.constant)."""
    values, keep = [], 1.0
    for share in shares:
        keep *= share
        values.append(max(MIN_RATIO, round(keep, 6)))
    return LengthConfig("ratios", tuple(values))


def smallest_config(num_layers: int, bound: float) -> LengthConfig:
    """The lower slice of the sandwich: every layer keeps (1 - bound) of what the previous one kept."""
    return _cumulative([1.0 - bound] * num_layers)


def random_config(num_layers: int, bound: float, rng: random.Random) -> LengthConfig:
    """A LengthDrop sample: each layer keeps a uniform share in [1 - bound, 1] of the previous layer."""
    return _cumulative([rng.uniform(1.0 - bound, 1.0) for _ in range(num_layers)])


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
    """AdamW without decay on biases and norms, as bench.train fine-tunes."""
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if not any(k in n for k in NO_DECAY)], "weight_decay": recipe.weight_decay},
        {"params": [p for n, p in named if any(k in n for k in NO_DECAY)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=recipe.learning_rate)


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> None:
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


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


# --- sharded tensor files -------------------------------------------------------------------
def _pieces(tensors: dict[str, torch.Tensor], max_bytes: int) -> tuple[dict[str, torch.Tensor], dict]:
    """Cut every tensor into flat pieces of at most ``max_bytes`` (one embedding matrix alone can exceed it)."""
    pieces, layout = {}, {}
    for name, tensor in tensors.items():
        flat = tensor.detach().reshape(-1)
        per = max(1, max_bytes // tensor.element_size())
        bounds = range(0, max(1, flat.numel()), per)
        for i, lo in enumerate(bounds):
            pieces[f"{name}@{i}"] = flat[lo : lo + per].clone().cpu()
        layout[name] = {"shape": list(tensor.shape), "pieces": len(bounds)}
    return pieces, layout


def _groups(pieces: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    groups: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, piece in pieces.items():
        nbytes = piece.numel() * piece.element_size()
        if groups[-1] and size + nbytes > max_bytes:
            groups.append({})
            size = 0
        groups[-1][name] = piece
        size += nbytes
    return groups


def save_tensor_shards(tensors: dict[str, torch.Tensor], folder: Path, max_bytes: int = SHARD_BYTES) -> None:
    """Checkpoints obey the same file-size limit as the model folders; safetensors keeps them exact."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    pieces, layout = _pieces(tensors, max_bytes)
    groups = _groups(pieces, max_bytes)
    for index, group in enumerate(groups):
        save_file(group, str(folder / f"shard-{index:05d}.safetensors"))
    (folder / "layout.json").write_text(json.dumps({"tensors": layout, "files": len(groups)}))


def load_tensor_shards(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    layout = json.loads((folder / "layout.json").read_text())
    pieces: dict[str, torch.Tensor] = {}
    for index in range(layout["files"]):
        pieces.update(load_file(str(folder / f"shard-{index:05d}.safetensors")))
    return {
        name: torch.cat([pieces[f"{name}@{i}"] for i in range(info["pieces"])]).reshape(info["shape"])
        for name, info in layout["tensors"].items()
    }


# --- checkpoints ----------------------------------------------------------------------------
def _split_optimizer_state(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Moment tensors go to sharded files; the small rest (param groups, scalars) to state.pt."""
    tensors: dict[str, torch.Tensor] = {}
    rest: dict = {"param_groups": state["param_groups"], "state": {}}
    for pid, slots in state["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value
            else:
                rest["state"].setdefault(pid, {})[key] = value
    return tensors, rest


def _join_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict = {pid: dict(slots) for pid, slots in rest["state"].items()}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"param_groups": rest["param_groups"], "state": state}


def _rng_states() -> dict:
    return {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _restore_rng(states: dict) -> None:
    random.setstate(states["python"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


@dataclass
class Progress:
    """Where training stands; saved with every checkpoint."""

    step: int = 0
    loss_avg: float | None = None
    kl_avg: float | None = None


def save_checkpoint(
    folder: Path, recipe: LengthDropRecipe, model: nn.Module, optimizer, scheduler, progress: Progress
) -> None:
    """Write to a side folder, then swap it in, so a kill mid-write never leaves a half checkpoint."""
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    save_tensor_shards(model.state_dict(), tmp / "model")
    moments, rest = _split_optimizer_state(optimizer.state_dict())
    save_tensor_shards(moments, tmp / "optimizer")
    torch.save(
        {"recipe": asdict(recipe), "progress": asdict(progress), "optimizer": rest,
         "scheduler": scheduler.state_dict(), "rng": _rng_states()},
        tmp / "state.pt",
    )
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(folder: Path, recipe: LengthDropRecipe) -> Path | None:
    """The last complete checkpoint (also one a kill left mid-swap), refusing one from other options."""
    old = folder.with_name(folder.name + ".old")
    found = folder if (folder / "state.pt").is_file() else old if (old / "state.pt").is_file() else None
    if found is None:
        return None
    saved = torch.load(found / "state.pt", map_location="cpu", weights_only=True)["recipe"]
    if not same_recipe(saved, recipe):
        wanted = asdict(recipe)
        filled = {**{f.name: f.default for f in fields(LengthDropRecipe)}, **saved}
        changed = sorted(k for k in set(filled) | set(wanted) if filled.get(k) != wanted.get(k))
        raise UserError(
            f"{found} holds a checkpoint of a run with other options (differs in: {', '.join(changed)}); "
            "re-run with the same options to resume it, or delete the folder to start over"
        )
    return found


def resume(found: Path, model: nn.Module, optimizer, scheduler) -> Progress:
    """Load weights, optimizer, schedule and RNG states; RNG last, so loading itself cannot shift the draws."""
    state = torch.load(found / "state.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(load_tensor_shards(found / "model"))
    optimizer.load_state_dict(_join_optimizer_state(load_tensor_shards(found / "optimizer"), state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    _restore_rng(state["rng"])
    return Progress(**state["progress"])


# --- the run --------------------------------------------------------------------------------
def _ema(previous: float | None, value: float) -> float:
    return value if previous is None else 0.98 * previous + 0.02 * value


def _warn_big_files(out: Path) -> None:
    """save_pretrained cannot split one tensor, so a large embedding matrix can exceed the limit: say so."""
    for path in sorted(out.iterdir()):
        if path.is_file() and path.stat().st_size > MAX_FILE_BYTES:
            print(f"warning: {path} is {path.stat().st_size / 2**20:.1f} MiB (one tensor larger than a shard)",
                  file=sys.stderr)


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
    if _already_built(out, recipe):
        _remove_checkpoint(out)
        print(f"{out} already holds a model trained with this recipe; nothing to do (delete it to rebuild)")
        return out
    if threads:
        torch.set_num_threads(threads)
    random.seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    found = find_checkpoint(out / CHECKPOINT_DIR, recipe)
    tokenizer = load_tokenizer(recipe.base)
    teacher = load_teacher(recipe.teacher, tokenizer, device) if recipe.teacher else None
    feats = _load_features(recipe, tokenizer)
    total = recipe.max_steps or max(1, int(round(math.ceil(len(feats) / recipe.batch_size) * recipe.epochs)))

    model = load_qa_model(recipe.base).to(device)
    qa = LengthAdaptiveQA(model)
    optimizer = make_optimizer(model, recipe)
    scheduler = _linear_schedule(optimizer, int(recipe.warmup * total), total)
    progress = resume(found, model, optimizer, scheduler) if found else Progress()
    print(
        f"LengthDrop on {recipe.base}: {len(feats)} features, {total} steps on {device}, "
        f"full model + smallest + {recipe.num_sub_models} random sub-models per step (bound {recipe.bound:g})"
        + (f", teacher {recipe.teacher}" if teacher is not None else "")
        + (f"; resuming at step {progress.step}" if found else ""),
        flush=True,
    )
    session = Session(qa, teacher, feats, tokenizer.pad_token_id or 0, recipe, optimizer, scheduler, total, out,
                      save_every, device)
    started = time.time()
    session.run(progress)
    minutes = (time.time() - started) / 60
    info = {"steps": progress.step, "features": len(feats), "minutes": round(minutes, 1), "device": str(device),
            "final_loss": progress.loss_avg, "final_sub_model_kl": progress.kl_avg}
    _finish(out, recipe, model, tokenizer, info)
    print(f"saved {out} after {progress.step} steps ({minutes:.1f} min this session)", flush=True)
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
        bar = tqdm(total=self.total, initial=progress.step, desc="lengthdrop", unit="step", file=sys.stdout,
                   mininterval=10)
        while progress.step < self.total:
            epoch, done = divmod(progress.step, self.steps_per_epoch)
            for idx in epoch_batches(self.feats.lengths, self.recipe.batch_size, self.recipe.seed, epoch)[done:]:
                self.step(idx, progress)
                bar.update(1)
                bar.set_postfix(loss=f"{progress.loss_avg:.3f}", sub_kl=f"{progress.kl_avg:.4f}")
                if progress.step >= self.total:
                    break
                if progress.step % self.save_every == 0:
                    save_checkpoint(self.out / CHECKPOINT_DIR, self.recipe, self.qa.model, self.optimizer,
                                    self.scheduler, progress)
        bar.close()

    def step(self, idx: list[int], progress: Progress) -> None:
        r = self.recipe
        batch = {k: v.to(self.device) for k, v in collate(self.feats, idx, self.pad_id).items()}
        configs = sub_model_configs(self.qa.num_layers, r.bound, r.num_sub_models, r.seed, progress.step)
        skips = layer_skips(self.qa.num_layers, r.layerdrop, len(configs), r.seed, progress.step) if r.layerdrop else None
        losses = train_step(self.qa, batch, configs, self.teacher, skips)
        optimizer_step(self.qa.model, self.optimizer, self.scheduler)
        progress.step += 1
        progress.loss_avg = _ema(progress.loss_avg, losses.task)
        progress.kl_avg = _ema(progress.kl_avg, sum(losses.sub_kl) / max(1, len(losses.sub_kl)))


# --- command line ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    d = LengthDropRecipe(base="", train="")
    parser = argparse.ArgumentParser(
        prog="python -m bench.lengthdrop",
        description=(
            "LengthDrop fine-tuning (Kim & Cho 2021) of a fine-tuned SQuAD QA model, so that one set of weights "
            "serves many length configurations. Each step trains the full model on the labels and the smallest "
            "plus N random sub-models on the full model's start/end distributions (sandwich rule, in-place "
            "distillation). Writes a Hugging Face folder every other command accepts. Kill-safe: re-running the "
            "same command resumes from OUT/checkpoint; a finished OUT with the same recipe is left alone."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = parser.add_argument_group("inputs and output")
    io.add_argument("--model", default=STANDARD_MODEL_DIR,
                    help="fine-tuned QA model to start from (folder or hub id)")
    io.add_argument("--train", default=DEFAULT_TRAIN, help="SQuAD 1.1 training JSON, or hub:rajpurkar/squad:train")
    io.add_argument("--out", default=DEFAULT_OUT, help="output model folder (git-ignored)")
    io.add_argument("--teacher", default=None,
                    help="larger fine-tuned QA model with the same tokenizer; adds KL to its predictions "
                         "(temperature 1) to the full model's loss")
    ld = parser.add_argument_group("LengthDrop")
    ld.add_argument("--bound", type=float, default=d.bound,
                    help="largest share of the previous layer's tokens a layer may drop, in [0, 1)")
    ld.add_argument("--num-sub-models", type=int, default=d.num_sub_models,
                    help="random sub-models per step, besides the full and the smallest one")
    ld.add_argument("--layerdrop", type=float, default=d.layerdrop,
                    help="LayerDrop: chance that a sub-model bypasses each layer (0 turns it off)")
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=float, default=d.epochs, help="passes over the training features")
    opt.add_argument("--lr", type=float, default=d.learning_rate, help="peak AdamW learning rate (linear warmup/decay)")
    opt.add_argument("--batch-size", type=int, default=d.batch_size, help="features per step (length-grouped)")
    opt.add_argument("--warmup", type=float, default=d.warmup, help="share of steps spent warming up")
    opt.add_argument("--weight-decay", type=float, default=d.weight_decay,
                     help="AdamW decay (none on biases and norms)")
    opt.add_argument("--max-length", type=int, default=d.max_length, help="tokens per feature")
    opt.add_argument("--stride", type=int, default=d.stride, help="overlap between windows of long contexts")
    opt.add_argument("--seed", type=int, default=d.seed, help="seeds data order, sub-model draws and dropout")
    opt.add_argument("--max-steps", type=int, default=None,
                     help="train this many steps instead of --epochs (smoke runs; part of the recipe)")
    run = parser.add_argument_group("running")
    run.add_argument("--save-every", type=int, default=200, help="checkpoint into OUT/checkpoint every N steps")
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser


def recipe_from_args(args: argparse.Namespace) -> LengthDropRecipe:
    return LengthDropRecipe(
        base=args.model, train=args.train, teacher=args.teacher, epochs=args.epochs, learning_rate=args.lr,
        batch_size=args.batch_size, max_length=args.max_length, stride=args.stride, warmup=args.warmup,
        weight_decay=args.weight_decay, bound=args.bound, num_sub_models=args.num_sub_models,
        layerdrop=args.layerdrop, seed=args.seed,
        max_steps=args.max_steps,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()

    def run() -> None:
        train_lengthdrop(recipe_from_args(args), Path(args.out), args.save_every, args.threads)

    return exit_status(run)


if __name__ == "__main__":
    sys.exit(main())
