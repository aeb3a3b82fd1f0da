"""Length-adaptive inference for BERT-family QA models, with Drop-and-Restore.

After each layer's self-attention, the layer keeps only its most significant tokens
(significance = attention a token receives, summed over heads and valid queries) and the
rest leave the tensors for good: later layers never compute on them. Before the span head,
every dropped token's last hidden state is put back at its position, so start/end logits
cover the whole input.

The forward runs the stock modules' own weights (projections, LayerNorms, FFN) and only
re-implements the wiring, so keep-all matches the stock model. Attention probabilities are
materialised only in layers that drop tokens; elsewhere the fused SDPA kernel runs.

What differs between model families (embeddings, where attention inputs and residuals come
from, the rest of the block, the FLOPs formula) lives in one adapter per family under
``bench.families``, registered in ``ADAPTERS``; this module holds only what they share.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.config import LengthConfig, keep_counts_batch
from bench.costs import CostShape
from bench.families import ADAPTERS, adapter_for
from bench.families.bert import BertLayoutAdapter
from bench.kernels import native_kernels

__all__ = ["ADAPTERS", "AdaptiveOutput", "BertLayoutAdapter", "LengthAdaptiveQA", "adapter_for", "keep_table"]


@dataclass
class AdaptiveOutput:
    """Full-length logits plus how many real tokens each layer kept per example."""

    start_logits: torch.Tensor
    end_logits: torch.Tensor
    kept: torch.Tensor  # (num_layers, batch) tokens kept after each layer
    real_lengths: torch.Tensor  # (batch,)


def keep_table(config: LengthConfig, real_lengths: torch.Tensor) -> torch.Tensor:
    """(num_layers, batch) tokens each layer keeps, computed on the real (unpadded) lengths."""
    return _keep_tensor(keep_counts_batch(config, real_lengths.tolist()), config.num_layers, real_lengths.device)


def _skip_layers(plan: list[list[int]], lengths: list[int], skip: Collection[int]) -> list[list[int]]:
    """A bypassed layer keeps what the layer before it kept; later layers keep their own counts."""
    if not skip:
        return plan
    out, previous = [], list(lengths)
    for index, counts in enumerate(plan):
        row = list(previous) if index in skip else [min(k, n) for k, n in zip(counts, previous)]
        out.append(row)
        previous = row
    return out


def _keep_tensor(counts: list[list[int]], num_layers: int, device: torch.device) -> torch.Tensor:
    """``counts`` ([layer][example], from ``keep_counts_batch``) as a (num_layers, batch) tensor."""
    return torch.tensor(counts, dtype=torch.long, device=device).reshape(num_layers, -1)


def _select_kept(
    probs: torch.Tensor, valid: torch.Tensor | None, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Indices of the kept slots (in their original order) and which of them are real.

    ``probs`` is (batch, heads, queries, keys); ``valid`` None means every slot is real.
    Padding scores -inf so it goes first; slot 0 ([CLS]) scores +inf so it always stays.
    The second result is None when every kept slot is real (all examples keep as many), so
    the next layers can skip masking altogether. Only indices come out, so no graph is built.
    """
    counts = keep.tolist()
    width = max(counts)
    with torch.no_grad():
        significance = _significance(probs, valid)
        significance.select(1, 0).fill_(float("inf"))
        top = significance.topk(width, dim=1).indices
        if min(counts) == width:
            return top.sort(dim=1).values, None
        slot_real = torch.arange(width, device=keep.device)[None, :] < keep[:, None]
        big = probs.shape[-1] + 1
        order = torch.where(slot_real, top, top + big).argsort(dim=1)
        return top.gather(1, order), slot_real.gather(1, order)


def _significance(probs: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """(batch, keys) attention each key receives, summed over heads and valid queries.

    Without padding, heads and queries are one contiguous run per example, so a single
    reduction does it; with padding, padded queries are zeroed after summing the heads.
    """
    b, _, _, n = probs.shape
    if valid is None:
        return probs.reshape(b, -1, n).sum(dim=1)
    received = probs.sum(dim=1)  # over heads first: (batch, queries, keys), 1/heads of the work below
    significance = (received * valid.to(probs.dtype)[:, :, None]).sum(dim=1)  # valid queries only
    return significance.masked_fill(~valid, float("-inf"))


class _Restore:
    """Drop-and-Restore: each real token's latest hidden state, at its original position.

    Rows live in one flat (batch * (width + 1), hidden) buffer, one dump row per example
    for padded slots, written by ``index_copy_``: it copies whole rows (a scatter over an
    expanded index reads an index per element) and, in place, skips cloning the buffer at
    every dropping layer. It stays differentiable: the buffer starts as a constant and
    index_copy's backward needs no overwritten values.
    """

    def __init__(self, hidden: torch.Tensor, width: int):
        self.batch, self.width = hidden.shape[0], width
        self.rows = hidden.new_zeros(self.batch * (width + 1), hidden.shape[-1])

    def write(self, hidden: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor | None) -> None:
        """Store every real slot of ``hidden`` (batch, slots, hidden); padded slots go to the dump row."""
        index = positions if valid is None else torch.where(valid, positions, self.width)
        if self.batch > 1:
            index = index + torch.arange(self.batch, device=index.device)[:, None] * (self.width + 1)
        self.rows.index_copy_(0, index.reshape(-1), hidden.reshape(-1, hidden.shape[-1]))

    def finish(self, hidden: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """(batch, width, hidden) after storing the last layer's output."""
        self.write(hidden, positions, valid)
        return self.rows.view(self.batch, self.width + 1, -1)[:, : self.width]


class LengthAdaptiveQA(nn.Module):
    """Wraps a ``*ForQuestionAnswering`` model; ``forward`` takes the configuration per call.

    ``kernels`` lets inference (no gradients, eval mode) run its projections and the attention of
    its dropping layers through the native kernels where they are available (``bench.kernels``);
    training never does. Turn it off to run torch's own ops, e.g. when counting FLOPs with
    ``FlopCounterMode``, which cannot see inside a native call.
    """

    def __init__(self, model: nn.Module, kernels: bool = True):
        super().__init__()
        self.model = model
        self.kernels = kernels
        self.adapter = adapter_for(model, kernels)

    @property
    def num_layers(self) -> int:
        return len(self.adapter.layers)

    def cost_shape(self) -> CostShape:
        """The family's exact FLOPs formula for this model's widths (see ``bench.costs``)."""
        return self.adapter.shape()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        config: LengthConfig | None = None,
        attention: str = "sdpa",
        skip: Collection[int] = (),
    ) -> AdaptiveOutput:
        """``attention='eager'`` materialises probabilities in every layer (for FLOP counting).

        Keep counts are planned on the host once, so deciding whether a layer drops needs no
        device round trip. The slot mask is None while every slot is real (batch 1 without
        padding, equal lengths, or after a drop where every example keeps as many): attention
        and significance then run with no masking at all. Layers in ``skip`` are bypassed (their
        input is their output) and drop nothing: LengthDrop training's optional LayerDrop.
        """
        ad = self.adapter
        config = config or LengthConfig.keep_all(self.num_layers)
        config.check_layers(self.num_layers, type(self.model).__name__)
        batch, width = input_ids.shape
        valid = attention_mask.bool()
        real = valid.sum(dim=1)
        lengths = real.tolist()
        plan = _skip_layers(keep_counts_batch(config, lengths), lengths, skip)  # [layer][example]
        keep = _keep_tensor(plan, config.num_layers, real.device)
        mask: torch.Tensor | None = None if all(n == width for n in lengths) else valid

        hidden = ad.embed(input_ids, token_type_ids)
        positions = torch.arange(width, device=input_ids.device).expand(batch, width)
        restore: _Restore | None = None
        native = None  # the kernels module, once the first dropping layer finds it usable
        current = lengths
        for index, layer in enumerate(ad.layers):
            if index in skip:
                continue
            if any(k < n for k, n in zip(plan[index], current)):
                if restore is None:  # the first dropping layer: decided once per forward
                    restore = _Restore(hidden, width)
                    native = self._native_drop(input_ids, mask, real)
                restore.write(hidden, positions, mask)
                job = None if native is None else (native, current, plan[index])
                hidden, positions, mask = self._dropping_layer(layer, hidden, mask, keep[index], positions, job)
                current = plan[index]
            else:
                hidden = self._full_layer(layer, hidden, mask, attention)
        final = hidden if restore is None else restore.finish(hidden, positions, mask)
        start, end = ad.span_head(final)
        return AdaptiveOutput(start, end, keep, real)

    def _full_layer(
        self, layer: nn.Module, hidden: torch.Tensor, valid: torch.Tensor | None, attention: str
    ) -> torch.Tensor:
        ad = self.adapter
        inputs = ad.project_qkv(layer, hidden)
        q, k, v = inputs.query, inputs.key, inputs.value
        if attention == "eager":
            context = _attention_probs(q, k, valid, ad.scaling) @ v
        else:
            mask = None if valid is None else valid[:, None, None, :]
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=ad.scaling)
        return ad.finish_layer(layer, _merge_heads(context), inputs.carry)

    def _native_drop(self, input_ids: torch.Tensor, mask: torch.Tensor | None, real: torch.Tensor):
        """The native drop-attention kernel when this forward may use it, else None.

        It needs inference (no gradients, eval mode), float32 CPU tensors, and real tokens as a
        prefix of every row (right padding), which the slots of later layers keep by construction.
        """
        if not self.kernels or torch.is_grad_enabled() or self.model.training or input_ids.device.type != "cpu":
            return None
        if next(self.model.parameters()).dtype != torch.float32:
            return None
        if mask is not None:
            prefix = torch.arange(mask.shape[1], device=mask.device)[None, :] < real[:, None]
            if not torch.equal(mask, prefix):
                return None
        return native_kernels()

    def _dropping_layer(
        self,
        layer: nn.Module,
        hidden: torch.Tensor,
        valid: torch.Tensor | None,
        keep: torch.Tensor,
        positions: torch.Tensor,
        native: tuple | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Attention over all current tokens; context, projection and FFN only for the kept ones.

        ``native`` (the kernels module, real slots now and slots to keep per example) routes the
        attention through the drop-attention kernel; both paths pick the same tokens and give the
        same context to float32 rounding.
        """
        ad = self.adapter
        inputs = ad.project_qkv(layer, hidden)
        if native is None:
            probs = _attention_probs(inputs.query, inputs.key, valid, ad.scaling)
            slots, slot_real = _select_kept(probs, valid, keep)
            context = _merge_heads(_take_rows(probs, slots, dim=2) @ inputs.value)
        else:
            kernels, current, counts = native
            context, slots = kernels.drop_attention(
                inputs.query, inputs.key, inputs.value, torch.tensor(current), torch.tensor(counts), ad.scaling
            )
            width = slots.shape[1]
            slot_real = None if min(counts) == width else torch.arange(width)[None, :] < keep[:, None]
        carry = tuple(_take_rows(t, slots, dim=1) for t in inputs.carry)
        out = ad.finish_layer(layer, context, carry)
        return out, _take_rows(positions, slots, dim=1), slot_real


def _attention_probs(q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor | None, scaling: float) -> torch.Tensor:
    """Softmax attention probabilities (batch, heads, queries, keys).

    The scaling multiplies q (tokens x head_dim per head) rather than the scores (tokens
    squared per head): one pass over a tensor a fifth the size at 150 tokens.
    """
    scores = (q * scaling) @ k.transpose(-1, -2)
    if valid is not None:
        scores = scores.masked_fill(~valid[:, None, None, :], torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1)


def _merge_heads(context: torch.Tensor) -> torch.Tensor:
    """(batch, heads, tokens, head_dim) -> (batch, tokens, heads * head_dim)."""
    b, _, n, _ = context.shape
    return context.transpose(1, 2).reshape(b, n, -1)


def _take_rows(tensor: torch.Tensor, slots: torch.Tensor, dim: int) -> torch.Tensor:
    """Entries ``slots`` (batch, kept) along ``dim`` of a (batch, ...) tensor, per example.

    Done with ``index_select``, which copies whole rows; ``gather`` over an expanded index
    reads one index per element and is several times slower. At batch 1 the slots index
    directly; otherwise every (example, leading index) group gets its own run of rows in a
    flat view.
    """
    if tensor.shape[0] == 1:
        return tensor.index_select(dim, slots[0])
    b, n, kept = tensor.shape[0], tensor.shape[dim], slots.shape[1]
    groups = math.prod(tensor.shape[1:dim])
    starts = torch.arange(b * groups, device=slots.device).view(b, groups, 1) * n
    index = (starts + slots[:, None, :]).reshape(-1)
    rows = tensor.reshape(b * groups * n, -1).index_select(0, index)
    return rows.view(*tensor.shape[:dim], kept, *tensor.shape[dim + 1 :])
