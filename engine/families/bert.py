"""The BERT encoder layout, shared by BERT, TinyBERT, MiniLM, RoBERTa and BORT.

RoBERTa differs from BERT only in its embeddings (position ids counted from ``padding_idx`` over
non-pad tokens), which the stock embedding module handles from ``input_ids`` alone. BORT
checkpoints are plain ``model_type: bert`` models; only their tokenizer is RoBERTa's (see
:mod:`dynlen.engine.families.bort`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dynlen.engine.costs import EncoderShape
from dynlen.engine.families.base import LayerInputs, same_input_qkv, split_heads, split_span_logits
from dynlen.engine.families.projections import Projections


class BertLayoutAdapter:
    """Attention over the layer input itself; the same input is the residual of the attention block."""

    def __init__(self, model: nn.Module, kernels: bool = True):
        self.model = model
        self.base = model.base_model
        attention = self.base.encoder.layer[0].attention.self
        self.num_heads = model.config.num_attention_heads
        self.head_dim = attention.attention_head_size
        self.scaling = self.head_dim**-0.5
        self.project = Projections(kernels)
        self.late_query = True  # queries are a map of the layer input, the residual carried

    @property
    def layers(self) -> list[nn.Module]:
        return list(self.base.encoder.layer)

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        return self.base.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)

    def project_qkv(
        self, layer: nn.Module, hidden: torch.Tensor, extra: Sequence[nn.Linear] = (), query: bool = True
    ) -> LayerInputs:
        """q (unless ``query`` is False), k and v, plus the ``extra`` linears of the same input, in one projection."""
        attn = layer.attention.self
        return same_input_qkv(self.project, self.head_dim, hidden, (attn.query, attn.key, attn.value), extra, query)

    def project_query(self, layer: nn.Module, carry: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The queries of the tokens whose rows ``carry`` holds (the layer input's kept rows)."""
        attn = layer.attention.self
        (q,) = self.project(carry[0], attn.query)
        return split_heads(q, self.head_dim)

    def finish_layer(self, layer: nn.Module, context: torch.Tensor, carry: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Attention output projection + residual LayerNorm, then the feed-forward block."""
        (residual,) = carry
        if torch.is_grad_enabled() or layer.training:
            attention_output = layer.attention.output(context, residual)
            return layer.output(layer.intermediate(attention_output), attention_output)
        # The same modules without their (inactive) dropouts, projections through ``self.project``.
        attn_out, inter, out = layer.attention.output, layer.intermediate, layer.output
        (projected,) = self.project(context, attn_out.dense)
        attention_output = attn_out.LayerNorm(projected + residual)
        (expanded,) = self.project(attention_output, inter.dense)
        (reduced,) = self.project(inter.intermediate_act_fn(expanded), out.dense)
        return out.LayerNorm(reduced + attention_output)

    def span_head(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return split_span_logits(self.model.qa_outputs(hidden))

    def shape(self) -> EncoderShape:
        return EncoderShape.from_hf_config(self.model.config)
