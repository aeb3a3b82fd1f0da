"""The projections of a layer at inference: cached, packed weights and the native small-GEMM kernel.

Kept apart from the adapter interface (:mod:`dynlen.engine.families.base`): adapters only say *which*
Linear modules a layer runs; this module decides *how* they run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dynlen.engine.kernels import native_kernels

# From this many rows on (a padded batch, not batch 1), torch's own bf16 GEMM (oneDNN) beats the packed
# kernel: its per-call weight reordering is paid off, its blocking is better (2 threads, AVX512-BF16:
# 1.06-1.29x at 2,048 rows; the kernel wins up to 512 rows, 1.3x at 512, 3x at 16; benchmarks/precision.py).
ONEDNN_BF16_ROWS = 1024


class Projections:
    """The Linear modules of a layer, run through cached inference weights when no gradient is wanted.

    With gradients on, or a module in training mode, the stock modules run unchanged, so training
    graphs and dropout are exactly the stock ones. Otherwise two things cut the cost of the
    few-row GEMMs a layer runs after dropping tokens at batch 1:

    - linears that read the same input (q, k, v) are concatenated into one GEMM, so one call
      streams their weights and pays one dispatch;
    - with ``kernels`` on and the small-GEMM kernel available (``dynlen.engine.kernels``), weights are
      packed once into its panel layout and every float32 CPU projection runs through it.

    ``dtype`` is the precision of the products (``dynlen.engine.precision``), set by the engine
    for each forward: at bf16/fp16 the weights are rounded once (and, for the bf16 kernel, packed
    once), the input at each call, and the sums and output stay in the input's dtype.

    Cached weights are rebuilt whenever a source parameter changes (its in-place version counter,
    storage or dtype), so ``load_state_dict``, optimiser steps and ``.to()`` never see stale copies.
    """

    def __init__(self, kernels: bool = True) -> None:
        self.kernels = kernels
        self.dtype = torch.float32
        self._cache: dict[tuple[int, ...], tuple[tuple, _InferenceWeights]] = {}

    def __call__(self, hidden: torch.Tensor, *linears: nn.Linear) -> tuple[torch.Tensor, ...]:
        if torch.is_grad_enabled() or any(lin.training for lin in linears):
            return tuple(lin(hidden) for lin in linears)
        out = self._weights(linears).apply(hidden, self.kernels, self.dtype)
        return out.split([lin.out_features for lin in linears], dim=-1) if len(linears) > 1 else (out,)

    def _weights(self, linears: Sequence[nn.Linear]) -> _InferenceWeights:
        """The cached weights, rebuilt when a source parameter was updated, moved, cast or replaced.

        Runs for every projection of every forward, so it reads ``_parameters`` directly (a module
        attribute lookup costs several times more) and stamps each parameter by its in-place
        version, its storage address and its identity; a cast or a move gives new storage.
        """
        key = tuple(map(id, linears))
        params = [p for lin in linears for p in lin._parameters.values() if p is not None]
        stamp = (
            tuple([p._version for p in params] + [p.data_ptr() for p in params] + [id(p) for p in params]),
            params[0].dtype,
            params[0].device,
        )
        hit = self._cache.get(key)
        if hit is None or hit[0] != stamp:
            hit = self._cache[key] = (stamp, _InferenceWeights(linears))
        return hit[1]


def quantized_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` with each row (last dimension) rounded to 255 symmetric int8 levels of its own scale,
    as the int8 kernel quantizes weights per output channel and activations per token."""
    scale = (x.abs().amax(dim=-1, keepdim=True) / 127).clamp_min(1e-12)
    return (x / scale).round().clamp(-127, 127) * scale


class _InferenceWeights:
    """One projection's concatenated weight and bias, plus the kernels' packed or rounded copies once asked for."""

    def __init__(self, linears: Sequence[nn.Linear]):
        with torch.inference_mode(False), torch.no_grad():  # plain tensors: usable under no_grad too
            self.weight = torch.cat([lin.weight for lin in linears]) if len(linears) > 1 else linears[0].weight.detach()
            self.bias = torch.cat(
                [lin.bias if lin.bias is not None else lin.weight.new_zeros(lin.out_features) for lin in linears]
            )
        self.out_features = self.weight.shape[0]
        self._copies: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _copy(self, key: str, make) -> tuple[torch.Tensor, ...]:
        """A derived weight and bias (packed panels, a rounded copy), made once."""
        if key not in self._copies:
            with torch.inference_mode(False), torch.no_grad():
                self._copies[key] = tuple(make(self.weight, self.bias))
        return self._copies[key]

    def apply(self, hidden: torch.Tensor, kernels: bool, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        on_cpu = kernels and hidden.dtype == torch.float32 and hidden.device.type == "cpu"
        kernel = native_kernels() if on_cpu and self.weight.dtype == torch.float32 else None
        rows = hidden.numel() // hidden.shape[-1]
        if dtype == torch.bfloat16 and kernel is not None and kernel.has_bf16() and rows < ONEDNN_BF16_ROWS:
            return self._run(kernel.packed_linear_bf16, self._copy("bf16", kernel.pack_weight_bf16), hidden)
        if dtype == torch.int8 and kernel is not None and kernel.has_vnni():
            return self._run(kernel.packed_linear_int8, self._copy("int8", kernel.pack_weight_int8), hidden)
        if dtype == torch.int8:  # the same quantization, multiplied in float32
            weight, bias = self._copy("int8-float", lambda w, b: (quantized_rows(w.float()), b.float()))
            return F.linear(quantized_rows(hidden.float()), weight, bias).to(hidden.dtype)
        if dtype != hidden.dtype and dtype != torch.float32:  # torch's own product at that dtype, float32 out
            weight, bias = self._copy(str(dtype), lambda w, b: (w.to(dtype), b.to(dtype)))
            return F.linear(hidden.to(dtype), weight, bias).to(hidden.dtype)
        if kernel is None:
            return F.linear(hidden, self.weight, self.bias)
        return self._run(kernel.packed_linear, self._copy("fp32", kernel.pack_weight), hidden)

    def _run(self, linear, packed: tuple[torch.Tensor, ...], hidden: torch.Tensor) -> torch.Tensor:
        rows = hidden.reshape(-1, hidden.shape[-1]).contiguous()
        out = linear(rows, *packed)
        if out.shape[1] != self.out_features:
            out = out[:, : self.out_features]
        return out.reshape(*hidden.shape[:-1], self.out_features)
