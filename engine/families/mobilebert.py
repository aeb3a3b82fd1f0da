"""MobileBERT: bottlenecked blocks whose attention input is not their residual.

Each layer reads a wide hidden state (``hidden_size``) but works inside at ``true_hidden_size``:

* the input bottleneck (``bottleneck.input``) maps the layer input to the narrow width; its
  output is the residual of the attention block;
* query and key come from a second, shared bottleneck (``bottleneck.attention``) and value from
  the wide layer input (default config); with ``use_bottleneck_attention`` all three come from
  the input bottleneck instead;
* after attention, ``num_feedforward_networks - 1`` stacked FFNs, then the last FFN whose output
  bottleneck maps back to the wide width with the layer input as residual.

So the post-attention wiring needs two residuals at two widths, which is why adapters hand a
``carry`` tuple rather than one residual. Normalisation is ``NoNorm`` (element-wise), and the
embedding concatenates each token's neighbours (trigram input) before a linear projection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dynlen.engine.families.base import LayerInputs, split_heads, split_span_logits


@dataclass(frozen=True)
class MobileBertShape:
    """Widths and wiring switches that MobileBERT's FLOPs depend on."""

    num_layers: int
    hidden: int  # between layers, after the embedding, into the span head
    inner: int  # inside a block (true_hidden_size); = hidden without bottleneck
    attention_dim: int  # all heads together
    intermediate: int
    num_ffn: int  # feed-forward networks per layer, the stacked ones and the last one
    embed_in: int  # input width of the embedding projection; 0 when the embedding has none
    bottleneck: bool = True
    bottleneck_attention: bool = False
    shared_qk: bool = True
    span_outputs: int = 2

    @classmethod
    def from_hf_config(cls, config) -> MobileBertShape:
        inner = config.intra_bottleneck_size if config.use_bottleneck else config.hidden_size
        heads = config.num_attention_heads
        projects = config.trigram_input or config.embedding_size != config.hidden_size
        embed_in = config.embedding_size * (3 if config.trigram_input else 1) if projects else 0
        return cls(
            num_layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            inner=inner,
            attention_dim=heads * (inner // heads),
            intermediate=config.intermediate_size,
            num_ffn=config.num_feedforward_networks,
            embed_in=embed_in,
            bottleneck=config.use_bottleneck,
            bottleneck_attention=config.use_bottleneck and config.use_bottleneck_attention,
            shared_qk=config.use_bottleneck and config.key_query_shared_bottleneck,
        )

    def embed_flops(self, length: int) -> int:
        """The trigram projection is a matrix product over every token, unlike BERT's look-ups."""
        return 2 * length * self.embed_in * self.hidden

    def _macs_per_token(self) -> tuple[int, int]:
        """MACs per token before attention (every incoming token) and after it (kept tokens only)."""
        d, b, a, f = self.hidden, self.inner, self.attention_dim, self.intermediate
        if not self.bottleneck:
            every, kept = 3 * d * a, 0
        elif self.bottleneck_attention:
            every, kept = d * b + 3 * b * a, 0  # the input bottleneck feeds q/k/v, so every token needs it
        elif self.shared_qk:
            every, kept = d * b + 2 * b * a + d * a, d * b  # input bottleneck is only a residual
        else:
            every, kept = 3 * d * a, d * b
        kept += a * b + self.num_ffn * 2 * b * f
        if self.bottleneck:
            kept += b * d  # output bottleneck back to the wide width
        return every, kept

    def layer_flops(self, n_in: int, n_out: int) -> int:
        every, kept = self._macs_per_token()
        a = self.attention_dim
        return 2 * (n_in * every + n_out * kept + n_in * n_in * a + n_out * n_in * a)

    def score_flops(self, queries: int, keys: int) -> int:
        return 2 * queries * keys * self.attention_dim

    def head_flops(self, length: int) -> int:
        return 2 * length * self.hidden * self.span_outputs


class MobileBertAdapter:
    """Bottlenecked attention inputs; the layer input and its bottleneck are the two residuals."""

    def __init__(self, model: nn.Module, kernels: bool = True):  # kernels: not used by this family yet
        self.model = model
        self.base = model.mobilebert
        cfg = model.config
        attention = self.base.encoder.layer[0].attention.self
        self.num_heads = attention.num_attention_heads
        self.head_dim = attention.attention_head_size
        self.scaling = self.head_dim**-0.5
        self.cost = MobileBertShape.from_hf_config(cfg)
        self.late_query = False

    @property
    def layers(self) -> list[nn.Module]:
        return list(self.base.encoder.layer)

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        return self.base.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)

    def project_qkv(
        self, layer: nn.Module, hidden: torch.Tensor, extra: Sequence[nn.Linear] = (), query: bool = True
    ) -> LayerInputs:
        """q, k and v from the family's bottlenecks; the ``extra`` linears read the layer input on their own.

        Queries are always projected for every token (``late_query`` is False): they read the
        shared q/k bottleneck, which ``carry`` does not hold.
        """
        attn = layer.attention.self
        if self.cost.bottleneck_attention:
            narrow = layer.bottleneck.input(hidden)
            q_in = k_in = v_in = narrow
            carry: tuple[torch.Tensor, ...] = (hidden, narrow)
        else:
            q_in = k_in = layer.bottleneck.attention(hidden) if self.cost.shared_qk else hidden
            v_in = hidden
            carry = (hidden,)
        q = split_heads(attn.query(q_in), self.head_dim)
        k = split_heads(attn.key(k_in), self.head_dim)
        v = split_heads(attn.value(v_in), self.head_dim)
        return LayerInputs(q, k, v, carry, extra=tuple(lin(hidden) for lin in extra))

    def project_query(self, layer: nn.Module, carry: tuple[torch.Tensor, ...]) -> torch.Tensor:
        raise NotImplementedError("MobileBERT projects every token's query (late_query is False)")

    def finish_layer(self, layer: nn.Module, context: torch.Tensor, carry: tuple[torch.Tensor, ...]) -> torch.Tensor:
        hidden = carry[0]
        block_input = carry[1] if len(carry) > 1 else self._block_input(layer, hidden)
        attention_output = layer.attention.output(context, block_input)
        for ffn in getattr(layer, "ffn", ()):
            attention_output = ffn(attention_output)
        return layer.output(layer.intermediate(attention_output), attention_output, hidden)

    def _block_input(self, layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """Residual of the attention block. Per-token, so it runs only for the kept tokens."""
        return layer.bottleneck.input(hidden) if self.cost.bottleneck else hidden

    def span_head(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return split_span_logits(self.model.qa_outputs(hidden))

    def shape(self) -> MobileBertShape:
        return self.cost
