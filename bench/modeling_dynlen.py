"""Drop-and-Restore for BERT-layout QA models, self-contained: the modeling file an export carries.

``dynlen choose --export DIR`` copies this file into DIR and names it in ``config.json``'s
``auto_map``, so ``AutoModelForQuestionAnswering.from_pretrained(DIR, trust_remote_code=True)`` (and
the ``question-answering`` pipeline with ``trust_remote_code=True``) runs the chosen length
configuration with torch and transformers alone, without dynlen installed. It imports nothing of
dynlen on purpose; dynlen's tests hold its logits to the engine's on the same configuration.

The configuration is ``config.dynlen_length_config["config"]``: per-layer ``ratios`` of each
example's real tokens or ``counts`` at length 384; ``significance`` ``attention`` (attention
received, summed over heads and real queries) or ``lookahead`` (the look-ahead probe's start + end
probability; probes in ``lookahead_probes.safetensors``); ``keep_question`` keeps [CLS] question
[SEP] at every dropping layer but the last; ``precision`` ``bf16``/``fp16`` rounds the operands of
the encoder's projections and sums in float32, as the engine does. Padding goes first, [CLS]
always stays, and every dropped token's last state is put back before the span head. Examples run
one at a time: a plain reference implementation, not dynlen's batched engine and native kernels.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertForQuestionAnswering
from transformers.modeling_outputs import QuestionAnsweringModelOutput

PROBES_FILE = "lookahead_probes.safetensors"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class _Probe(nn.Module):
    def __init__(self, hidden: int, width: int):
        super().__init__()
        self.net = (
            nn.Sequential(nn.Linear(hidden, width), nn.GELU(), nn.Linear(width, 2)) if width else nn.Linear(hidden, 2)
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net(hidden)


class DynlenBertForQuestionAnswering(BertForQuestionAnswering):
    """A BERT-layout QA model that keeps, after each layer, only its most significant tokens."""

    def __init__(self, config):
        super().__init__(config)
        entry = getattr(config, "dynlen_lookahead", None)
        self.probes = None
        if entry:
            self.probes = nn.ModuleDict({str(i): _Probe(config.hidden_size, entry["hidden"]) for i in entry["layers"]})

    @classmethod
    def from_pretrained(cls, name, *args, **kwargs):
        model = super().from_pretrained(name, *args, **kwargs)
        path = Path(str(name)) / PROBES_FILE
        if model.probes is not None and path.is_file():
            from safetensors.torch import load_file

            weights = {k.removeprefix("layers."): v for k, v in load_file(str(path)).items()}
            model.probes.load_state_dict(weights)
        return model

    # --- the configuration -----------------------------------------------------------------
    @property
    def length_config(self) -> dict:
        return self.config.dynlen_length_config["config"]

    def keep_counts(self, real: int) -> list[int]:
        config, out, current = self.length_config, [], real
        for value in config["values"]:
            want = math.ceil(value * real - 1e-9) if config["kind"] == "ratios" else int(value)
            current = max(1, min(current, want))
            out.append(current)
        return out

    def _linear(self, x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
        dtype = DTYPES[self.length_config.get("precision", "fp32")]
        if dtype == torch.float32:
            return layer(x)
        return F.linear(x.to(dtype), layer.weight.to(dtype), layer.bias.to(dtype)).float()

    def _probe(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        """(tokens, 2) the layer's look-ahead logits; its first map at the products' precision, as the engine runs it."""
        net = self.probes[str(index)].net
        if not isinstance(net, nn.Sequential):
            return self._linear(hidden, net)
        return net[2](net[1](self._linear(hidden, net[0])))

    # --- one example -------------------------------------------------------------------------
    def _example(self, ids: torch.Tensor, types: torch.Tensor | None) -> torch.Tensor:
        """(tokens, 2) span logits of one unpadded example."""
        config = self.length_config
        policy = config.get("significance", "attention")
        lookahead = policy.startswith("lookahead")
        question = ids.tolist().index(self.config.sep_token_id) + 1 if config.get("keep_question") else 0
        n = ids.shape[0]
        hidden = self.bert.embeddings(input_ids=ids[None], token_type_ids=None if types is None else types[None])[0]
        positions = torch.arange(n, device=ids.device)
        restore = torch.zeros_like(hidden)
        counts = self.keep_counts(n)
        last = len(counts) - 1
        for index, (layer, keep) in enumerate(zip(self.bert.encoder.layer, counts)):
            attention = layer.attention.self
            heads, size = attention.num_attention_heads, attention.attention_head_size
            q, k, v = (
                self._linear(hidden, lin).view(-1, heads, size).transpose(0, 1)
                for lin in (attention.query, attention.key, attention.value)
            )
            probs = ((q / math.sqrt(size)) @ k.transpose(-1, -2)).softmax(dim=-1)
            if keep < hidden.shape[0]:
                if lookahead:
                    scores = self._probe(index, hidden).softmax(dim=0).sum(dim=-1)
                else:
                    scores = probs.sum(dim=(0, 1))
                scores = scores.clone()
                scores[0] = float("inf")
                if question and index != last:
                    scores[: min(question, keep)] = float("inf")
                slots = scores.topk(keep).indices.sort().values
                restore[positions] = hidden
                positions, hidden, probs = positions[slots], hidden[slots], probs[:, slots]
            context = (probs @ v).transpose(0, 1).reshape(hidden.shape[0], heads * size)
            out = layer.attention.output
            attended = out.LayerNorm(self._linear(context, out.dense) + hidden)
            expanded = layer.intermediate.intermediate_act_fn(self._linear(attended, layer.intermediate.dense))
            hidden = layer.output.LayerNorm(self._linear(expanded, layer.output.dense) + attended)
        restore[positions] = hidden
        return self.qa_outputs(restore)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, return_dict=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        starts = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
        ends = torch.zeros_like(starts)
        for row in range(input_ids.shape[0]):
            real = attention_mask[row].bool()
            types = None if token_type_ids is None else token_type_ids[row][real]
            logits = self._example(input_ids[row][real], types)
            starts[row, real], ends[row, real] = logits[:, 0], logits[:, 1]
            starts[row, ~real] = ends[row, ~real] = torch.finfo(torch.float32).min
        return QuestionAnsweringModelOutput(start_logits=starts, end_logits=ends)
