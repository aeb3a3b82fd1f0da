"""DistilBERT: BERT's post-LayerNorm block under other module names, without token types.

Its embeddings take no ``token_type_ids``; the adapter ignores them rather than failing, so the
feature pipeline (which always builds them) needs no family switch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dynlen.engine.costs import EncoderShape
from dynlen.engine.families.base import LayerInputs, same_input_qkv, split_heads, split_span_logits
from dynlen.engine.families.projections import Projections


class DistilBertAdapter:
    """q_lin/k_lin/v_lin/out_lin attention, ``sa_layer_norm``, FFN ``lin1``/``lin2``, ``output_layer_norm``."""

    def __init__(self, model: nn.Module, kernels: bool = True):
        self.model = model
        self.base = model.distilbert
        attention = self.base.transformer.layer[0].attention
        self.num_heads = attention.n_heads
        self.head_dim = attention.attention_head_size
        self.scaling = self.head_dim**-0.5
        self.project = Projections(kernels)
        self.late_query = True  # queries are a map of the layer input, the residual carried

    @property
    def layers(self) -> list[nn.Module]:
        return list(self.base.transformer.layer)

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        return self.base.embeddings(input_ids)

    def project_qkv(
        self, layer: nn.Module, hidden: torch.Tensor, extra: Sequence[nn.Linear] = (), query: bool = True
    ) -> LayerInputs:
        """q (unless ``query`` is False), k and v, plus the ``extra`` linears of the same input, in one projection."""
        attn = layer.attention
        return same_input_qkv(self.project, self.head_dim, hidden, (attn.q_lin, attn.k_lin, attn.v_lin), extra, query)

    def project_query(self, layer: nn.Module, carry: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The queries of the tokens whose rows ``carry`` holds (the layer input's kept rows)."""
        attn = layer.attention
        (q,) = self.project(carry[0], attn.q_lin)
        return split_heads(q, self.head_dim)

    def finish_layer(self, layer: nn.Module, context: torch.Tensor, carry: tuple[torch.Tensor, ...]) -> torch.Tensor:
        (residual,) = carry
        if torch.is_grad_enabled() or layer.training:
            attention_output = layer.sa_layer_norm(layer.attention.out_lin(context) + residual)
            return layer.output_layer_norm(layer.ffn(attention_output) + attention_output)
        # The same modules without their (inactive) dropouts, projections through ``self.project``.
        (projected,) = self.project(context, layer.attention.out_lin)
        attention_output = layer.sa_layer_norm(projected + residual)
        ffn = layer.ffn
        (expanded,) = self.project(attention_output, ffn.lin1)
        (reduced,) = self.project(ffn.activation(expanded), ffn.lin2)
        return layer.output_layer_norm(reduced + attention_output)

    def span_head(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The stock head applies dropout first; kept here so training through the adapter matches."""
        return split_span_logits(self.model.qa_outputs(self.model.dropout(hidden)))

    def shape(self) -> EncoderShape:
        cfg = self.model.config
        return EncoderShape(cfg.n_layers, cfg.dim, cfg.hidden_dim, self.num_heads * self.head_dim)
