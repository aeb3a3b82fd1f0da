"""The suite's trainings on ``transformers.Trainer``: precision choice, feature batches, checkpoints.

The ecosystem's trainer already does what a user expects of a training run: mixed precision on
CPUs and GPUs, checkpoints with exact resume, gradient clipping, a linear schedule, logging, and
data parallelism under ``accelerate launch`` or ``torchrun``. This module only adapts it to the
suite's unpadded SQuAD features (length-grouped batches, padded per batch) and to its rules:
a run resumes only with the recipe it was started with, and the saved weights stay float32.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import asdict
from pathlib import Path

import torch

from dynlen.atomic import write_text_atomic
from dynlen.bench.features import Features, collate
from dynlen.errors import UserError
from dynlen.training.recipe import PRECISIONS, differences, same_recipe

CHECKPOINTS = "checkpoints"  # inside the output folder; removed once the model is saved
RECIPE_FILE = "recipe.json"


def hardware_has_bf16(device: torch.device) -> bool:
    """bf16 pays where the hardware computes it natively: AVX512-BF16/AMX CPUs, Ampere+ GPUs."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(cpu, name, lambda: False)() for name in checks)
    return False


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto`` → bf16 mixed precision where the hardware has it, else fp32; asking for bf16 on other hardware is refused."""
    if requested not in PRECISIONS:
        raise UserError(f"unknown precision {requested!r}; use one of {', '.join(PRECISIONS)}")
    has = hardware_has_bf16(device)
    if requested == "bf16" and not has:
        raise UserError(f"--precision bf16: this {device.type} has no native bf16; use --precision fp32 (or auto)")
    if requested == "auto":
        return "bf16" if has else "fp32"
    return requested


class FeatureDataset(torch.utils.data.Dataset):
    """Training features by index: the collator pads each batch only to its own longest member."""

    def __init__(self, feats: Features) -> None:
        self.feats = feats

    def __len__(self) -> int:
        return len(self.feats)

    def __getitem__(self, index: int) -> dict[str, int]:
        return {"feature": index}


class FeatureCollator:
    """Turns a list of feature indices into padded model inputs with start/end labels."""

    def __init__(self, feats: Features, pad_id: int) -> None:
        self.feats, self.pad_id = feats, pad_id

    def __call__(self, items: list[dict[str, int]]) -> dict[str, torch.Tensor]:
        return collate(self.feats, [item["feature"] for item in items], self.pad_id)


def per_device_batch(batch_size: int) -> int:
    """The recipe's batch is global: split over the processes ``torchrun``/``accelerate launch`` start."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if batch_size % world:
        raise UserError(f"batch size {batch_size} does not split over {world} processes; pick a multiple of {world}")
    return batch_size // world


def checkpoint_folder(out: Path, recipe) -> Path:
    """OUT/checkpoints, claimed for ``recipe``: checkpoints of other options are refused, not mixed in.

    A claim with no checkpoint under it yet (a run that stopped before its first save, e.g. on a
    mistyped training file) holds nothing to lose, so the next run takes the folder over.
    """
    folder = out / CHECKPOINTS
    stored = folder / RECIPE_FILE
    if stored.is_file() and any(folder.glob("checkpoint-*")):
        try:
            saved = json.loads(stored.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(
                f"{stored} is damaged, so the checkpoints beside it cannot be matched to options; "
                f"delete {folder} to start over"
            ) from None
        if not same_recipe(saved, recipe):
            raise UserError(
                f"{folder} holds checkpoints of other options ({differences(saved, recipe)}); {RESUME_HINT}"
            )
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(stored, json.dumps(asdict(recipe), indent=2))
    return folder


RESUME_HINT = "re-run with the same options to resume, or delete the folder to start over"


def last_checkpoint(folder: Path) -> str | None:
    """The newest complete ``checkpoint-N``, or None to start fresh.

    The Trainer writes a checkpoint in place and its ``trainer_state.json`` last, so a kill
    mid-save leaves a newer folder without a readable state: that one is removed and the
    previous, complete one (rotation deletes it only after the new one is written) is resumed.
    """
    if not folder.is_dir():
        return None
    steps = sorted(
        (int(p.name.split("-")[1]), p) for p in folder.glob("checkpoint-*") if p.name.split("-")[1].isdigit()
    )
    for _, path in reversed(steps):
        damage = checkpoint_damage(path)
        if damage is None:
            return str(path)
        print(f"{path.name} is incomplete ({damage}); removing it and resuming from the one before", flush=True)
        shutil.rmtree(path, ignore_errors=True)
    return None


def checkpoint_damage(path: Path) -> str | None:
    """What makes a checkpoint unreadable (a kill or a full disk mid-save), or None when every file reads.

    Cheap checks that catch truncation: the state JSON parses, each safetensors file's header and
    length agree, each torch file (a zip archive) still has its closing directory.
    """
    from safetensors import safe_open

    try:
        json.loads((path / "trainer_state.json").read_text())
        for file in sorted(path.iterdir()):
            if file.suffix == ".safetensors":
                with safe_open(str(file), framework="pt"):
                    pass
            elif file.suffix in (".pt", ".pth", ".bin"):
                with zipfile.ZipFile(file) as archive:
                    archive.namelist()
    except Exception as exc:  # noqa: BLE001 - OSError, JSON, SafetensorError, BadZipFile: all mean "cut short"
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:160]
    return None


def training_arguments(
    folder: Path,
    recipe,
    precision: str,
    device: torch.device,
    max_steps: int | None,
    save_every: int,
):
    """TrainingArguments from a recipe: linear warm-up/decay, clip at 1, no decay on biases and norms."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(folder),
        per_device_train_batch_size=per_device_batch(recipe.batch_size),
        learning_rate=recipe.learning_rate,
        num_train_epochs=recipe.epochs,
        max_steps=max_steps or -1,
        warmup_steps=recipe.warmup,
        weight_decay=recipe.weight_decay,
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        bf16=precision == "bf16",
        use_cpu=device.type == "cpu",
        train_sampling_strategy="group_by_length",
        save_strategy="steps",
        save_steps=save_every,
        save_total_limit=1,
        logging_steps=50,
        logging_first_step=True,
        seed=recipe.seed,
        data_seed=recipe.seed,
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


class EpochLengthGroupedSampler(torch.utils.data.Sampler):
    """Length-grouped order drawn from (seed, epoch) alone, so a resumed epoch replays the same batches.

    The Trainer's own length-grouped sampler draws from the global RNG; a run resumed mid-epoch
    would then see another order than the one it was killed in, and resume would not be exact.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size, self.seed, self.epoch = lengths, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def make_trainer(model, args, feats: Features, pad_id: int, trainer_class=None, **options):
    """A Trainer whose length-grouped sampler reads the features' lengths and replays exactly on resume.

    ``trainer_class`` (a Trainer subclass) replaces the stock one; ``options`` go to its constructor.
    """
    from transformers import Trainer

    base = trainer_class or Trainer
    lengths = feats.lengths

    class FeatureTrainer(base):
        def _get_train_sampler(self, train_dataset=None):
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return EpochLengthGroupedSampler(lengths, batch, self.args.data_seed or self.args.seed)

    return FeatureTrainer(
        model=model,
        args=args,
        train_dataset=FeatureDataset(feats),
        data_collator=FeatureCollator(feats, pad_id),
        **options,
    )


def final_loss(trainer) -> float | None:
    """The last logged training loss (the Trainer's running mean over its logging window)."""
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return losses[-1] if losses else None


def remove_checkpoints(out: Path) -> None:
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
