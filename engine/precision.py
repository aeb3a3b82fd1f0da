"""The precision a configuration runs its matrix products in.

A precision is part of the length configuration (``LengthConfig.precision``), because what a
shape of drops buys depends on it: at bf16 the products shrink and the costs that do not scale
with the tokens kept weigh more. ``fp32`` is the stock model. ``bf16`` and ``fp16`` round the
operands of the encoder's projections and FFN (the weights once, the activations at each call)
and sum in float32; ``int8`` quantizes them, symmetric, each weight row (output channel) once with
its own scale and each activation row (token) at the call with its own, and sums in int32; attention, softmax, LayerNorm, token selection and restore stay float32,
so the selection a configuration makes is the float32 engine's, up to the products' rounding.
On a CPU with AVX512-BF16 (int8: AVX512-VNNI) the products run through the native packed kernels
(``dynlen.engine.kernels``); elsewhere through torch's own ops at that dtype (int8: the same
quantization, multiplied in float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from dynlen.errors import UserError

if TYPE_CHECKING:  # the configuration reads this registry, and must not need torch to be imported
    import torch


@dataclass(frozen=True)
class Precision:
    name: str
    torch_name: str
    help: str

    @property
    def dtype(self) -> torch.dtype:
        return _torch_dtype(self.torch_name)


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", "float32", "float32 throughout: the stock model"),
        Precision("bf16", "bfloat16", "bf16 operands, float32 sums: CPUs with AVX512-BF16/AMX and recent GPUs"),
        Precision("fp16", "float16", "fp16 operands, float32 sums: GPUs"),
        Precision(
            "int8",
            "int8",
            "int8 operands, int32 sums: weights per output channel, each token's activations scaled at the call",
        ),
    )
}
DEFAULT_PRECISION = "fp32"


@cache
def _torch_dtype(name: str) -> torch.dtype:
    import torch

    return getattr(torch, name)


def get_precision(name: str) -> Precision:
    if name not in PRECISIONS:
        raise UserError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)} (or auto)")
    return PRECISIONS[name]


def native_precision(device: torch.device | str = "cpu") -> str:
    """What ``auto`` means on ``device``: bf16 where the hardware computes it natively, else fp32."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    from dynlen.engine.kernels import cpu_has_bf16

    return "bf16" if cpu_has_bf16() else "fp32"


def resolve_precision(name: str, device: torch.device | str = "cpu") -> str:
    """``auto`` -> the device's native precision; any other name is checked."""
    if name == "auto":
        return native_precision(device)
    return get_precision(name).name
