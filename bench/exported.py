"""The chosen drop as a ``torch.export`` program: Drop-and-Restore with neither dynlen nor transformers' model code.

``dynlen choose --export DIR`` writes ``DIR/dynlen_exported.pt2`` from the folder's own remote-code
model (``modeling_dynlen.DynlenBertForQuestionAnswering``), so ``torch.export.load(path).module()``
runs the chosen configuration with torch alone. The remote-code model runs one unpadded example at a
time with Python-side counts and branches, which an export cannot follow; :class:`DropProgram` is the
same arithmetic written over whole padded batches:

* each row keeps ``ceil(ratio * its real length)`` tokens, computed from the mask with integer
  tensor ops; the slots every row carries are the same count at the padded length, a symbolic size
  of the sequence dimension, so batch and length stay dynamic and no size depends on data;
* a row's slots beyond its own count are dead: masked as keys, never chosen before a live token,
  never restored, so each row sees exactly what the remote-code model gives it alone;
* position ids count real tokens, as the remote-code model's unpadded example does.

Precision: ``bf16``/``fp16`` keep the encoder projections' weights at that dtype in the program
(operands rounded, results read back in float32, as the remote-code model does); ``int8`` has no
path in the modeling file to hold a program to, so no program is written for it.
"""

from __future__ import annotations

import copy
from fractions import Fraction

import torch
from torch import nn

PROGRAM_FILE = "dynlen_exported.pt2"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LOAD_SNIPPET = """\
import torch
program = torch.export.load("THIS_FOLDER/dynlen_exported.pt2").module()
enc = tokenizer(question, context, return_tensors="pt")  # this folder's tokenizer (AutoTokenizer)
start_logits, end_logits = program(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])"""


class Unexportable(Exception):
    """The configuration or model has no program; the message is the one-line reason."""


def _fraction(value: float) -> Fraction:
    """The ratio as the fraction the configuration means (0.7 -> 7/10), so counts need no float rounding."""
    return Fraction(value).limit_denominator(100_000)


class DropProgram(nn.Module):
    """``(input_ids, attention_mask, token_type_ids) -> (start_logits, end_logits)`` of a remote-code model's drop.

    Padding positions read ``finfo(float32).min``, as the remote-code model's do.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        config = model.config.dynlen_length_config["config"]
        precision = config.get("precision", "fp32")
        if precision not in DTYPES:
            raise Unexportable(f"precision {precision} has no path in the modeling file to export")
        self.kind, self.values = config["kind"], [v for v in config["values"]]
        self.lookahead = config.get("significance", "attention").startswith("lookahead")
        self.keep_question = bool(config.get("keep_question"))
        self.sep = int(model.config.sep_token_id)
        self.dtype = DTYPES[precision]
        self.longest = int(model.config.max_position_embeddings)
        model = copy.deepcopy(model).eval()
        self.embeddings, self.layers, self.qa_outputs = (
            model.bert.embeddings,
            model.bert.encoder.layer,
            model.qa_outputs,
        )
        self.probes = model.probes if self.lookahead else None
        if self.lookahead and self.probes is None:
            raise Unexportable("the configuration selects by look-ahead probes but the model has none")
        if self.dtype != torch.float32:
            for layer in self.layers:
                attention = layer.attention.self
                for lin in (attention.query, attention.key, attention.value, layer.attention.output.dense):
                    lin.to(self.dtype)
                layer.intermediate.dense.to(self.dtype)
                layer.output.dense.to(self.dtype)
            for probe in (self.probes or {}).values():
                first = probe.net[0] if isinstance(probe.net, nn.Sequential) else probe.net
                first.to(self.dtype)
        self._check_counts(model, self.longest)

    # --- counts ------------------------------------------------------------------------------
    def _want(self, value: float, n):
        """The count a layer asks for at real length ``n`` (an int, a SymInt or a tensor), in integers only."""
        if self.kind != "ratios":
            return int(value)
        f = _fraction(value)
        return (f.numerator * n + f.denominator - 1) // f.denominator

    def counts(self, n: int) -> list[int]:
        """Per-layer keep counts at real length ``n``, by the program's integer arithmetic."""
        out, current = [], n
        for value in self.values:
            current = max(1, min(current, self._want(value, n)))
            out.append(current)
        return out

    def _check_counts(self, model: nn.Module, longest: int) -> None:
        """Refuse a configuration whose integer counts differ anywhere from the modeling file's float ones."""
        for n in range(1, longest + 1):
            if self.counts(n) != model.keep_counts(n):
                raise Unexportable(f"the integer keep counts differ from the modeling file's at length {n}")

    def _drops(self, value: float) -> bool:
        """Whether a layer can drop at all (a ratio of 1 or a count past the longest input never does)."""
        return value < 1 if self.kind == "ratios" else int(value) < self.longest

    # --- the forward -----------------------------------------------------------------------------
    def _linear(self, x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
        if self.dtype == torch.float32:
            return layer(x)
        return layer(x.to(self.dtype)).float()

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length = input_ids.shape
        real = attention_mask.bool()
        index = torch.cumsum(real.long(), dim=1) - 1  # each token's place among its row's real tokens
        n = real.sum(dim=1)  # (batch,) real lengths
        hidden = self.embeddings(
            input_ids=input_ids, token_type_ids=token_type_ids, position_ids=index.clamp(min=0) * real
        )
        width = hidden.shape[-1]
        question = None
        if self.keep_question:
            seps = torch.where((input_ids == self.sep) & real, index, length)
            question = seps.min(dim=1).values + 1  # [CLS] question [SEP]
        positions = torch.arange(length, device=input_ids.device).expand(batch, length)
        alive = real
        restore = torch.zeros_like(hidden)
        current, slots_count = n, length
        last = len(self.values) - 1
        for layer_index, (layer, value) in enumerate(zip(self.layers, self.values)):
            attention = layer.attention.self
            heads, size = attention.num_attention_heads, attention.attention_head_size
            q, k, v = (
                self._linear(hidden, lin).view(batch, -1, heads, size).transpose(1, 2)
                for lin in (attention.query, attention.key, attention.value)
            )
            bias = torch.zeros_like(alive, dtype=hidden.dtype).masked_fill(~alive, float("-inf"))
            probs = ((q / size**0.5) @ k.transpose(-1, -2) + bias[:, None, None, :]).softmax(dim=-1)
            if self._drops(value):
                keep = torch.clamp(torch.clamp(current, max=self._want(value, n)), min=1)  # (batch,)
                previous, slots_count = slots_count, keep.max().item()  # the longest row's count: exact at batch 1
                torch._check(slots_count >= 1)
                torch._check(slots_count <= previous)
                if self.lookahead:
                    logits = self._probe(layer_index, hidden).masked_fill(~alive[..., None], float("-inf"))
                    scores = logits.softmax(dim=1).sum(dim=-1)
                else:
                    scores = (probs * alive[:, None, :, None]).sum(dim=(1, 2))
                here = index.gather(1, positions)
                always = here == 0
                if question is not None and layer_index != last:
                    always = always | (here < torch.minimum(question, keep)[:, None])
                scores = torch.where(always, float("inf"), scores)
                scores = torch.where(alive, scores, float("-inf"))
                ranked = scores.topk(slots_count, dim=1).indices
                chosen, order = ranked.sort(dim=1)
                spread = positions[..., None].expand(-1, -1, width)
                restore = restore.scatter(1, spread, torch.where(alive[..., None], hidden, restore.gather(1, spread)))
                alive = order < keep[:, None]  # the row's first `keep` by rank live on; the rest ride along dead
                positions = positions.gather(1, chosen)
                hidden = hidden.gather(1, chosen[..., None].expand(-1, -1, width))
                probs = probs.gather(2, chosen[:, None, :, None].expand(-1, heads, -1, probs.shape[-1]))
                current = keep
            context = (probs @ v).transpose(1, 2).reshape(batch, -1, heads * size)
            out = layer.attention.output
            attended = out.LayerNorm(self._linear(context, out.dense) + hidden)
            expanded = layer.intermediate.intermediate_act_fn(self._linear(attended, layer.intermediate.dense))
            hidden = layer.output.LayerNorm(self._linear(expanded, layer.output.dense) + attended)
        spread = positions[..., None].expand(-1, -1, width)
        restore = restore.scatter(1, spread, torch.where(alive[..., None], hidden, restore.gather(1, spread)))
        logits = self.qa_outputs(restore)
        floor = torch.finfo(torch.float32).min
        return (
            torch.where(real, logits[..., 0].float(), floor),
            torch.where(real, logits[..., 1].float(), floor),
        )

    def _probe(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        net = self.probes[str(index)].net
        if not isinstance(net, nn.Sequential):
            return self._linear(hidden, net)
        return net[2](net[1](self._linear(hidden, net[0])))


def export_program(model: nn.Module, path, batch_dynamic: bool = True) -> torch.export.ExportedProgram:
    """Export ``model``'s drop with batch and sequence length dynamic, and save it to ``path``.

    Raises :class:`Unexportable` with a one-line reason when the configuration or torch refuses.
    """
    program = DropProgram(model).eval()
    longest = int(model.config.max_position_embeddings)
    example = _example_inputs(model, 2, 16)
    seq = torch.export.Dim("seq", min=2, max=longest)
    dims = {0: torch.export.Dim("batch", min=1), 1: seq} if batch_dynamic else {1: seq}
    try:
        with torch.no_grad():
            exported = torch.export.export(
                program,
                tuple(example),
                dynamic_shapes={"input_ids": dims, "attention_mask": dims, "token_type_ids": dims},
            )
    except Exception as exc:  # torch's export errors are many and long; the first line says which
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unexportable(f"torch.export {torch.__version__} refused the drop: {first}") from exc
    torch.export.save(exported, str(path))
    return exported


def _example_inputs(model: nn.Module, batch: int, length: int) -> list[torch.Tensor]:
    """A padded batch with a [SEP] in each row: the shapes and dtypes the program is traced at."""
    config = model.config
    ids = torch.randint(5, config.vocab_size, (batch, length))
    ids[:, 0] = getattr(config, "cls_token_id", None) or 0
    ids[:, length // 3] = config.sep_token_id
    ids[:, -1] = config.sep_token_id
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length - 3 :] = 0
    types = torch.zeros(batch, length, dtype=torch.long)
    types[:, length // 3 + 1 :] = 1
    return [ids, mask, types]
