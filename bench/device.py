"""Where a model runs: the one place a device is chosen, described and batches are moved to it.

Every command takes ``--device auto|cpu|cuda`` and training picks a GPU when one is present;
both go through :func:`resolve_device`, so "auto" means the same everywhere.
"""

from __future__ import annotations

import torch

from dynlen.errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda when torch sees a GPU, else cpu; ``cuda`` without one is a UserError naming the fix.

    Checked up front so a missing GPU is one clear line rather than a CUDA traceback halfway
    through loading a model.
    """
    if isinstance(name, torch.device):
        name = str(name)
    text = name.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use one of {', '.join(DEVICE_CHOICES)}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise UserError(f"device {name!r} is not supported; use one of {', '.join(DEVICE_CHOICES)}")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise UserError(
            f"--device {name}: torch {torch.__version__} ({build}) sees no CUDA GPU; use --device cpu "
            "(or auto), or run on a machine with an NVIDIA GPU and a CUDA build of torch"
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA GPU(s) visible (cuda:0 ...)")
    return device


def describe_device(device: torch.device) -> str:
    """One line for logs and metrics: the device and, for a GPU, its name."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A collated batch on ``device`` (a no-op on the CPU)."""
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
