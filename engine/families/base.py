"""The small interface every family adapter implements, and the helpers they share.

The length-adaptive forward owns what is common to all families (significance, picking the
kept tokens, Drop-and-Restore); an adapter owns only what differs: how a family embeds, where
its attention inputs come from, and how the rest of its layer wires the kept tokens together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from dynlen.engine.costs import CostShape


@dataclass
class LayerInputs:
    """What one layer needs before attention, for every current token.

    ``carry`` holds the per-token tensors (batch, tokens, ...) the layer uses after attention,
    e.g. residuals. They are separate from q/k/v because a family may attend over one tensor and
    add another as residual (MobileBERT); the forward keeps only the kept tokens' rows of them.

    ``extra`` holds the outputs of the caller's ``extra`` linears applied to the layer input
    (a look-ahead probe's first maps): a family whose q/k/v read that input runs them inside the
    same GEMM, which at batch 1 saves a dispatch and a pass over the input per dropping layer.
    """

    query: torch.Tensor | None  # (batch, heads, tokens, head_dim); None when asked for later (``project_query``)
    key: torch.Tensor
    value: torch.Tensor
    carry: tuple[torch.Tensor, ...]
    extra: tuple[torch.Tensor, ...] = ()


class FamilyAdapter(Protocol):
    """Wiring of one family; every method runs the stock modules' own weights.

    ``late_query``: the family's queries are a per-token map of what ``carry`` holds, so a layer
    whose tokens are chosen without reading attention can project queries for its kept tokens
    only: ``project_qkv(..., query=False)`` leaves them out and ``project_query`` makes them from
    the kept rows of ``carry``. Its cost shape then has ``query_flops`` (``dynlen.engine.costs``). A family
    without it projects every token's query, as the attention policy needs anyway.
    """

    scaling: float
    late_query: bool

    @property
    def layers(self) -> list[nn.Module]: ...

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor: ...

    def project_qkv(
        self, layer: nn.Module, hidden: torch.Tensor, extra: Sequence[nn.Linear] = (), query: bool = True
    ) -> LayerInputs: ...

    def project_query(self, layer: nn.Module, carry: tuple[torch.Tensor, ...]) -> torch.Tensor: ...

    def finish_layer(
        self, layer: nn.Module, context: torch.Tensor, carry: tuple[torch.Tensor, ...]
    ) -> torch.Tensor: ...

    def span_head(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def shape(self) -> CostShape: ...


def split_heads(projected: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(batch, tokens, heads * head_dim) -> (batch, heads, tokens, head_dim), the layout attention wants."""
    b, n, _ = projected.shape
    return projected.view(b, n, -1, head_dim).transpose(1, 2)


def same_input_qkv(
    project: Callable[..., tuple[torch.Tensor, ...]],
    head_dim: int,
    hidden: torch.Tensor,
    qkv: tuple[nn.Linear, nn.Linear, nn.Linear],
    extra: Sequence[nn.Linear],
    query: bool,
) -> LayerInputs:
    """q (unless ``query`` is False), k, v and the ``extra`` linears of one input in one ``project`` call.

    For families whose attention reads the layer input, which is also the residual ``carry``.
    """
    linears = qkv if query else qkv[1:]
    outputs = project(hidden, *linears, *extra)
    heads: list[torch.Tensor | None] = [split_heads(t, head_dim) for t in outputs[: len(linears)]]
    if not query:
        heads.insert(0, None)
    return LayerInputs(*heads, carry=(hidden,), extra=tuple(outputs[len(linears) :]))


def split_span_logits(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, tokens, 2) -> start and end logits, contiguous like the stock heads return them."""
    start, end = logits.split(1, dim=-1)
    return start.squeeze(-1).contiguous(), end.squeeze(-1).contiguous()
