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

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.config import LengthConfig
from bench.costs import CostShape
from bench.errors import UserError
from bench.families.base import FamilyAdapter
from bench.families.bert import BertLayoutAdapter
from bench.families.distilbert import DistilBertAdapter
from bench.families.mobilebert import MobileBertAdapter

__all__ = ["ADAPTERS", "AdaptiveOutput", "BertLayoutAdapter", "LengthAdaptiveQA", "adapter_for", "keep_table"]


@dataclass
class AdaptiveOutput:
    """Full-length logits plus how many real tokens each layer kept per example."""

    start_logits: torch.Tensor
    end_logits: torch.Tensor
    kept: torch.Tensor  # (num_layers, batch) tokens kept after each layer
    real_lengths: torch.Tensor  # (batch,)


ADAPTERS: dict[str, type] = {
    "bert": BertLayoutAdapter,  # also BORT, whose checkpoints are model_type "bert"
    "roberta": BertLayoutAdapter,
    "distilbert": DistilBertAdapter,
    "mobilebert": MobileBertAdapter,
}


def adapter_for(model: nn.Module) -> FamilyAdapter:
    model_type = getattr(model.config, "model_type", None)
    if model_type not in ADAPTERS or not hasattr(model, "qa_outputs"):
        raise UserError(
            f"unsupported architecture {type(model).__name__} (model_type={model_type!r}); "
            f"supported: {', '.join(sorted(ADAPTERS))} *ForQuestionAnswering models"
        )
    return ADAPTERS[model_type](model)


def keep_table(config: LengthConfig, real_lengths: torch.Tensor) -> torch.Tensor:
    """(num_layers, batch) tokens each layer keeps, computed on the real (unpadded) lengths."""
    counts = [config.keep_counts(int(n)) for n in real_lengths.tolist()]
    return torch.tensor(counts, dtype=torch.long, device=real_lengths.device).T.reshape(config.num_layers, -1)


def _select_kept(probs: torch.Tensor, valid: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the kept slots (in their original order) and which of them are real.

    ``probs`` is (batch, heads, queries, keys). Padding scores -inf so it goes first;
    slot 0 ([CLS]) scores +inf so it always stays.
    """
    received = probs.sum(dim=1)  # over heads first: (batch, queries, keys), 1/heads of the work below
    if bool(valid.all()):
        significance = received.sum(dim=1)
    else:
        significance = (received * valid.to(probs.dtype)[:, :, None]).sum(dim=1)  # valid queries only
    significance = significance.masked_fill(~valid, float("-inf"))
    significance[:, 0] = float("inf")
    width = int(keep.max())
    top = significance.topk(width, dim=1).indices
    slot_real = torch.arange(width, device=keep.device)[None, :] < keep[:, None]
    big = probs.shape[-1] + 1
    order = torch.where(slot_real, top, top + big).argsort(dim=1)
    return top.gather(1, order), slot_real.gather(1, order)


class LengthAdaptiveQA(nn.Module):
    """Wraps a ``*ForQuestionAnswering`` model; ``forward`` takes the configuration per call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.adapter = adapter_for(model)

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
    ) -> AdaptiveOutput:
        """``attention='eager'`` materialises probabilities in every layer (for FLOP counting)."""
        ad = self.adapter
        config = config or LengthConfig.keep_all(self.num_layers)
        config.check_layers(self.num_layers, type(self.model).__name__)
        batch, width = input_ids.shape
        valid = attention_mask.bool()
        real = valid.sum(dim=1)
        keep = keep_table(config, real)

        hidden = ad.embed(input_ids, token_type_ids)
        positions = torch.arange(width, device=input_ids.device).expand(batch, width)
        restored: torch.Tensor | None = None  # (batch, width + 1, hidden); the last row is a dump
        current = real
        for index, layer in enumerate(ad.layers):
            drops = bool((keep[index] < current).any())
            if drops:
                if restored is None:
                    restored = hidden.new_zeros(batch, width + 1, hidden.shape[-1])
                restored = _scatter_rows(restored, hidden, positions, valid, width)
                hidden, positions, valid = self._dropping_layer(layer, hidden, valid, keep[index], positions)
                current = keep[index]
            else:
                hidden = self._full_layer(layer, hidden, valid, attention)
        if restored is None:
            final = hidden
        else:
            final = _scatter_rows(restored, hidden, positions, valid, width)[:, :width]
        start, end = ad.span_head(final)
        return AdaptiveOutput(start, end, keep, real)

    def _full_layer(self, layer: nn.Module, hidden: torch.Tensor, valid: torch.Tensor, attention: str) -> torch.Tensor:
        ad = self.adapter
        inputs = ad.project_qkv(layer, hidden)
        q, k, v = inputs.query, inputs.key, inputs.value
        if attention == "eager":
            probs = _attention_probs(q, k, valid, ad.scaling)
            context = probs @ v
        else:
            mask = None if bool(valid.all()) else valid[:, None, None, :]
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=ad.scaling)
        context = context.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[1], -1)
        return ad.finish_layer(layer, context, inputs.carry)

    def _dropping_layer(
        self, layer: nn.Module, hidden: torch.Tensor, valid: torch.Tensor, keep: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attention over all current tokens; context, projection and FFN only for the kept ones."""
        ad = self.adapter
        inputs = ad.project_qkv(layer, hidden)
        probs = _attention_probs(inputs.query, inputs.key, valid, ad.scaling)
        slots, slot_real = _select_kept(probs, valid, keep)
        b, h, n, _ = probs.shape
        kept_probs = probs.gather(2, slots[:, None, :, None].expand(b, h, slots.shape[1], n))
        context = (kept_probs @ inputs.value).transpose(1, 2).reshape(b, slots.shape[1], -1)
        carry = tuple(_gather_rows(t, slots) for t in inputs.carry)
        out = ad.finish_layer(layer, context, carry)
        return out, positions.gather(1, slots), slot_real


def _attention_probs(q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor, scaling: float) -> torch.Tensor:
    scores = (q @ k.transpose(-1, -2)) * scaling
    if not bool(valid.all()):
        scores = scores.masked_fill(~valid[:, None, None, :], torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1)


def _gather_rows(tensor: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """Rows ``slots`` (batch, kept) of a (batch, tokens, width) tensor."""
    return tensor.gather(1, slots[:, :, None].expand(-1, -1, tensor.shape[-1]))


def _scatter_rows(
    restored: torch.Tensor, hidden: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor, width: int
) -> torch.Tensor:
    """Write each real slot's hidden state to its original position (padding to the dump row)."""
    index = torch.where(valid, positions, torch.full_like(positions, width))
    return restored.scatter(1, index[:, :, None].expand(-1, -1, hidden.shape[-1]), hidden)
