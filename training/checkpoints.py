"""LengthDrop's kill-safe checkpoints: sharded tensor files, optimizer and RNG state, atomic swaps.

Every file stays below 16 MiB (tensors are split across shards), and a checkpoint is written
to a side folder and swapped in, so a kill at any moment leaves the last complete one.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from bench.errors import UserError
from training.recipe import same_recipe

CHECKPOINT_DIR = "checkpoint"
MAX_FILE_BYTES = 16 * 1024 * 1024  # every file the run writes should stay below this
SHARD_BYTES = 15 * 1000 * 1000  # what save_pretrained(max_shard_size="15MB") aims for


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


def save_checkpoint(folder: Path, recipe, model: nn.Module, optimizer, scheduler, progress: Progress) -> None:
    """Write to a side folder, then swap it in, so a kill mid-write never leaves a half checkpoint."""
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    save_tensor_shards(model.state_dict(), tmp / "model")
    moments, rest = _split_optimizer_state(optimizer.state_dict())
    save_tensor_shards(moments, tmp / "optimizer")
    torch.save(
        {
            "recipe": asdict(recipe),
            "progress": asdict(progress),
            "optimizer": rest,
            "scheduler": scheduler.state_dict(),
            "rng": _rng_states(),
        },
        tmp / "state.pt",
    )
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(folder: Path, recipe) -> Path | None:
    """The last complete checkpoint (also one a kill left mid-swap), refusing one from other options."""
    old = folder.with_name(folder.name + ".old")
    found = folder if (folder / "state.pt").is_file() else old if (old / "state.pt").is_file() else None
    if found is None:
        return None
    saved = torch.load(found / "state.pt", map_location="cpu", weights_only=True)["recipe"]
    if not same_recipe(saved, recipe):
        wanted = asdict(recipe)
        filled = {**{f.name: f.default for f in fields(type(recipe))}, **saved}
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
