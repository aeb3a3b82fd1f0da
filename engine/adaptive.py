"""Length-adaptive inference for BERT-family QA models, with Drop-and-Restore.

After each layer's self-attention, the layer keeps only its most significant tokens
(significance by the configuration's policy, ``dynlen.engine.significance``: attention received, a
look-ahead probe's span probability, or both; optionally the question always stays) and the
rest leave the tensors for good: later layers never compute on them. Before the span head,
every dropped token's last hidden state is put back at its position, so start/end logits
cover the whole input.

The forward runs the stock modules' own weights (projections, LayerNorms, FFN) and only
re-implements the wiring, so keep-all matches the stock model. Attention probabilities are
materialised only in layers that drop tokens; elsewhere the fused SDPA kernel runs.

What differs between model families (embeddings, where attention inputs and residuals come
from, the rest of the block, the FLOPs formula) lives in one adapter per family under
``dynlen.engine.families``, registered in ``ADAPTERS``; this module holds only what they share.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dynlen.engine.config import LengthConfig, keep_counts_batch
from dynlen.engine.costs import CostShape
from dynlen.engine.families import ADAPTERS, adapter_for
from dynlen.engine.families.bert import BertLayoutAdapter
from dynlen.engine.kernels import native_kernels
from dynlen.engine.kernels import selection as _native_selection  # noqa: F401 - registers the kernels
from dynlen.engine.merging import get_retention
from dynlen.engine.precision import get_precision
from dynlen.engine.probes import LookaheadProbes, load_probes
from dynlen.engine.significance import (
    ACCELERATED,
    AcceleratedSelection,
    DropJob,
    SelectionInputs,
    SignificancePolicy,
    attention_received,
    get_policy,
    question_lengths,
    question_segment,
)
from dynlen.errors import UserError

__all__ = [
    "ADAPTERS",
    "AdaptiveOutput",
    "BertLayoutAdapter",
    "LengthAdaptiveQA",
    "adapter_for",
    "keep_table",
    "reached_last_layer",
]


@dataclass
class AdaptiveOutput:
    """Full-length logits plus how many real tokens each layer kept per example."""

    start_logits: torch.Tensor
    end_logits: torch.Tensor
    kept: torch.Tensor  # (num_layers, batch) tokens kept after each layer
    real_lengths: torch.Tensor  # (batch,)
    # with trace=True: (layer, positions kept (batch, slots), which slots are real or None) per dropping layer
    trace: list[tuple[int, torch.Tensor, torch.Tensor | None]] | None = None


def keep_table(config: LengthConfig, real_lengths: torch.Tensor) -> torch.Tensor:
    """(num_layers, batch) tokens each layer keeps, computed on the real (unpadded) lengths."""
    return _keep_tensor(keep_counts_batch(config, real_lengths.tolist()), config.num_layers, real_lengths.device)


def reached_last_layer(out: AdaptiveOutput, attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, width) True where a real token was computed on by the last layer, False where it was dropped.

    Needs a forward run with ``trace=True``: the last dropping layer's kept slots are exactly the
    tokens every later layer computes on. The other real positions hold restored states.
    """
    if out.trace is None:
        raise ValueError("reached_last_layer needs the output of a forward with trace=True")
    valid = attention_mask.bool()
    if not out.trace:
        return valid
    _, positions, slot_real = out.trace[-1]
    reached = torch.zeros_like(valid)
    kept = torch.ones_like(positions, dtype=torch.bool) if slot_real is None else slot_real
    return reached.scatter_(1, positions, kept) & valid


def _keep_tensor(counts: list[list[int]], num_layers: int, device: torch.device) -> torch.Tensor:
    """``counts`` ([layer][example], from ``keep_counts_batch``) as a (num_layers, batch) tensor."""
    return torch.tensor(counts, dtype=torch.long, device=device).reshape(num_layers, -1)


def _select_kept(
    probs: torch.Tensor | None,
    valid: torch.Tensor | None,
    keep: torch.Tensor | list[int],
    significance: torch.Tensor | None = None,
    protect: torch.Tensor | None = None,
    lead: list[int] | None = None,
    owned: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Indices of the kept slots (in their original order) and which of them are real.

    Significance is attention received from ``probs`` (batch, heads, queries, keys) unless a
    policy's ``significance`` (batch, slots) is given; ``valid`` None means every slot is real.
    ``keep`` is the slots to keep per example, a tensor or (cheaper, no device read) a list.
    Padding scores -inf so it goes first; slot 0 ([CLS]) and the protected slots score +inf so
    they stay: ``protect`` (batch, slots) marks them, or ``lead`` (per example) says they are the
    first ``lead[b]`` slots, as the kept question segment always is. ``owned`` lets the scores be
    overwritten in place (the caller made them for this call alone). The second result is None
    when every kept slot is real (all examples keep as many), so the next layers can skip
    masking altogether. Only indices come out, so no graph is built.
    """
    counts = keep if isinstance(keep, list) else keep.tolist()
    width = max(counts)
    with torch.no_grad():
        if significance is None:
            significance = attention_received(probs, valid)
        elif not owned or significance.requires_grad:  # a training graph's tensor is never written over
            significance = significance.clone()
        if valid is not None:
            significance = significance.masked_fill(~valid, float("-inf"))
        if protect is not None:
            significance.masked_fill_(protect, float("inf"))
        if lead is not None and min(lead) == max(lead):
            significance[:, : lead[0]].fill_(float("inf"))
        elif lead is not None:
            leading = torch.arange(significance.shape[1], device=significance.device)[None, :]
            significance.masked_fill_(leading < torch.tensor(lead, device=significance.device)[:, None], float("inf"))
        if lead is None or min(lead) < 1:
            significance.select(1, 0).fill_(float("inf"))
        if min(counts) == width:  # every example keeps as many: no order among the kept is needed
            return significance.topk(width, dim=1, sorted=False).indices.sort(dim=1).values, None
        top = significance.topk(width, dim=1).indices
        keep = torch.tensor(counts, device=significance.device)
        slot_real = torch.arange(width, device=keep.device)[None, :] < keep[:, None]
        big = significance.shape[-1] + 1
        order = torch.where(slot_real, top, top + big).argsort(dim=1)
        return top.gather(1, order), slot_real.gather(1, order)


@dataclass
class _Selection:
    """One forward's token-selection state: the policy, its native implementation, the question slots, the probes."""

    policy: SignificancePolicy
    keep_question: bool
    question: torch.Tensor | None  # (batch, slots), follows the slots through every drop
    probes: LookaheadProbes | None
    # with the question kept: how many leading slots of each example are question, on the host
    question_lead: list[int] | None = None
    accelerated: AcceleratedSelection | None = None  # the policy's registered native implementation

    def probe_linears(self, layer: int) -> tuple[nn.Linear, ...]:
        """The probe maps the layer's projection may run for the policy (none when it reads no probes)."""
        if not self.policy.needs_probes or self.probes is None:
            return ()
        return self.probes.input_linears(layer)

    def significance(
        self,
        layer: int,
        hidden: torch.Tensor,
        valid: torch.Tensor | None,
        positions: torch.Tensor,
        probs=None,
        probe_inputs: tuple[torch.Tensor, ...] = (),
    ) -> torch.Tensor:
        """The policy's scores, made for this layer alone: the caller may overwrite them.

        Only their ranking is used (indices come out), so no graph is built for them.
        """
        inputs = SelectionInputs(
            layer, hidden, valid, probs, self.question, self.probes, positions, probe_inputs or None
        )
        with torch.no_grad():
            return self.policy.scores(inputs)

    def lead(self, counts: list[int]) -> list[int] | None:
        """Leading slots that must stay: the question segment, cut to the first ``counts[b]`` slots.

        Asked at every dropping layer but the encoder's last: the question is kept so that later
        layers can read it (as keys and values), and after the last layer nothing does. Its slots
        there would only compute final states for positions no answer can start or end at, so the
        last layer spends them on context instead (the question still serves as keys in that layer).

        The question leads every row and kept slots stay in position order, so it is a count per
        example, known on the host. Cutting it makes the choice defined when a layer keeps fewer
        tokens than the question has: the leading ones stay, as the native kernel does it.
        """
        if not self.keep_question:
            return None
        return [min(q, k) for q, k in zip(self.question_lead, counts)]

    def follow(self, slots: torch.Tensor, lead: list[int] | None, slot_real: torch.Tensor | None) -> None:
        """Move the per-slot state to the kept slots; ``lead`` is what ``lead(counts)`` gave for this drop.

        A kept question is the first ``lead`` slots of every row after the drop as before, so its
        mask is the old one cut to the new width (masked to the real slots where some example keeps
        fewer tokens than its question has): no gather.
        """
        if self.keep_question:
            if self.question is not None:
                cut = any(n < q for n, q in zip(lead, self.question_lead))
                self.question = self.question[:, : slots.shape[1]]
                if cut and slot_real is not None:
                    self.question = self.question & slot_real
            self.question_lead = lead
        elif self.question is not None:
            self.question = _take_rows(self.question, slots, dim=1)


class _Restore:
    """Drop-and-Restore: each real token's latest hidden state, at its original position.

    Rows live in one flat (batch * stride, hidden) buffer, written by ``index_copy_``: it copies
    whole rows (a scatter over an expanded index reads an index per element) and, in place, skips
    cloning the buffer at every dropping layer. With padding, every example has one dump row
    (stride = width + 1) for its padded slots. It stays differentiable: the buffer starts as a
    constant (or a clone) and index_copy's backward needs no overwritten values.

    It starts from the first dropping layer's input, where every slot is still at its own position.
    Without padding and without gradients that input itself becomes the buffer: nothing reads it
    once the layer has taken its kept rows, and at batch 1 a zeroed buffer plus a full copy cost
    more than a dropping layer's selection.
    """

    def __init__(self, hidden: torch.Tensor, width: int, valid: torch.Tensor | None):
        self.batch, self.width = hidden.shape[0], width
        self.stride = width if valid is None else width + 1
        if valid is None and not torch.is_grad_enabled():
            self.rows = hidden.reshape(-1, hidden.shape[-1])  # a view: later writes land in ``hidden``
        elif valid is None:
            self.rows = hidden.reshape(-1, hidden.shape[-1]).clone()
        else:
            self.rows = hidden.new_zeros(self.batch * self.stride, hidden.shape[-1])
            positions = torch.arange(width, device=hidden.device).expand(self.batch, width)
            self.write(hidden, positions, valid)

    def write(self, hidden: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor | None) -> None:
        """Store every real slot of ``hidden`` (batch, slots, hidden); padded slots go to the dump row."""
        index = positions if valid is None else torch.where(valid, positions, self.width)
        if self.batch > 1:
            index = index + torch.arange(self.batch, device=index.device)[:, None] * self.stride
        self.rows.index_copy_(0, index.reshape(-1), hidden.reshape(-1, hidden.shape[-1]))

    def finish(self, hidden: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """(batch, width, hidden) after storing the last layer's output."""
        self.write(hidden, positions, valid)
        return self.rows.view(self.batch, self.stride, -1)[:, : self.width]


class LengthAdaptiveQA(nn.Module):
    """Wraps a ``*ForQuestionAnswering`` model; ``forward`` takes the configuration per call.

    ``kernels`` lets inference (no gradients, eval mode) run its projections and the attention of
    its dropping layers through the native kernels where they are available (``dynlen.engine.kernels``);
    training never does. Turn it off to run torch's own ops, e.g. when counting FLOPs with
    ``FlopCounterMode``, which cannot see inside a native call.

    ``probes`` are the model's look-ahead probes (``dynlen.engine.probes``): ``"auto"`` loads those saved
    with the model, if any. ``sep_token_id`` (the tokenizer's separator) finds the question segment
    for configurations that keep it; the model config's own ``sep_token_id`` is used when absent.
    """

    def __init__(
        self,
        model: nn.Module,
        kernels: bool = True,
        probes: LookaheadProbes | str | None = "auto",
        sep_token_id: int | None = None,
    ):
        super().__init__()
        self.model = model
        self.kernels = kernels
        self.adapter = adapter_for(model, kernels)
        self.probes = load_probes(model) if probes == "auto" else probes
        self.sep_token_id = sep_token_id if sep_token_id is not None else getattr(model.config, "sep_token_id", None)

    @property
    def num_layers(self) -> int:
        return len(self.adapter.layers)

    @property
    def probe_flops(self):
        """One look-ahead probe's FLOPs on an example, (tokens, question tokens) -> int, for ``dynlen.engine.costs``; None without probes."""
        return None if self.probes is None else self.probes.flops

    def cost_shape(self) -> CostShape:
        """The family's exact FLOPs formula for this model's widths (see ``dynlen.engine.costs``)."""
        return self.adapter.shape()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        config: LengthConfig | None = None,
        attention: str = "sdpa",
        trace: bool = False,
    ) -> AdaptiveOutput:
        """``attention='eager'`` materialises probabilities in every layer (for FLOP counting).

        Keep counts are planned on the host once, so deciding whether a layer drops needs no
        device round trip. The slot mask is None while every slot is real (batch 1 without
        padding, equal lengths, or after a drop where every example keeps as many): attention
        and significance then run with no masking at all.
        ``trace`` records which positions every dropping layer kept (diagnostics, e.g. answer survival).
        """
        layers = self.adapter.layers
        config = config or LengthConfig.keep_all(len(layers))
        config.check_layers(len(layers), type(self.model).__name__)
        valid = attention_mask.bool()
        real = valid.sum(dim=1)
        lengths = real.tolist()
        plan = keep_counts_batch(config, lengths)  # [layer][example]
        with self._precision(config.precision, input_ids.device):
            out = self._forward(input_ids, token_type_ids, config, attention, trace, valid, real, lengths, plan)
        if out.start_logits.dtype != torch.float32:  # autocast's span head: logits are float32 at every precision
            out.start_logits, out.end_logits = out.start_logits.float(), out.end_logits.float()
        return out

    @contextmanager
    def _precision(self, name: str, device: torch.device) -> Iterator[None]:
        """The products at ``name`` for one forward: through the family's projections where it routes
        them (``Projections.dtype``), else under torch's autocast."""
        dtype = get_precision(name).dtype
        project = getattr(self.adapter, "project", None)
        if project is not None:
            project.dtype = dtype
            yield
        elif dtype == torch.float32:
            yield
        elif not dtype.is_floating_point:
            raise UserError(
                f"precision {name} runs where the engine routes a family's projections (BERT layout, "
                f"DistilBERT), not {type(self.model).__name__}; use fp32 or bf16 for it"
            )
        else:
            with torch.autocast(device.type, dtype=dtype):
                yield

    def _forward(self, input_ids, token_type_ids, config, attention, trace, valid, real, lengths, plan):
        ad = self.adapter
        layers = ad.layers
        batch, width = input_ids.shape
        keep = _keep_tensor(plan, config.num_layers, real.device)
        mask: torch.Tensor | None = None if all(n == width for n in lengths) else valid
        hidden = ad.embed(input_ids, token_type_ids)
        positions = torch.arange(width, device=input_ids.device).expand(batch, width)
        restore: _Restore | None = None
        native = None  # the kernels module, once the first dropping layer finds it usable
        selection: _Selection | None = None
        merge = None  # what dropped tokens leave behind, once the first layer drops (dynlen.engine.merging)
        kept_trace: list = []
        current = lengths
        last = len(layers) - 1
        for index, layer in enumerate(layers):
            if any(k < n for k, n in zip(plan[index], current)):
                if restore is None:  # the first dropping layer: decided once per forward
                    restore = _Restore(hidden, width, mask)
                    selection = self._selection(config, input_ids, plan, lengths)
                    merge = get_retention(config.retention).state(hidden, width)
                    native = None  # the native drop attends without a bias: merged slots need one
                    if selection.accelerated is not None and merge is None:
                        native = self._native_drop(hidden, mask, real)
                else:
                    restore.write(hidden, positions, mask)
                job = None if native is None else (native, current, plan[index], index)
                hidden, positions, mask = self._dropping_layer(
                    layer,
                    hidden,
                    mask,
                    keep[index],
                    positions,
                    job,
                    selection,
                    index,
                    attention,
                    counts=plan[index],
                    final=index == last,
                    merge=merge,
                )
                current = plan[index]
                if trace:
                    kept_trace.append((index, positions, mask))
            else:
                hidden = self._full_layer(layer, hidden, mask, attention, merge)
        final = hidden if restore is None else restore.finish(hidden, positions, mask)
        start, end = ad.span_head(final)
        return AdaptiveOutput(start, end, keep, real, kept_trace if trace else None)

    def _full_layer(
        self, layer: nn.Module, hidden: torch.Tensor, valid: torch.Tensor | None, attention: str, merge=None
    ) -> torch.Tensor:
        """Every slot attends and is computed on; a merge's summary slots run beside the real ones."""
        ad = self.adapter
        width = hidden.shape[1]
        extra = None if merge is None else merge.extra
        keys_mask = valid if merge is None else merge.key_bias(valid, width)
        inputs = ad.project_qkv(layer, _with_extra(hidden, extra))
        q, k, v = inputs.query, inputs.key, inputs.value
        if attention == "eager":
            context = _attention_probs(q, k, keys_mask, ad.scaling) @ v
        else:
            mask = None if keys_mask is None else keys_mask[:, None, None, :]
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=ad.scaling)
        out = ad.finish_layer(layer, _merge_heads(context), inputs.carry)
        if extra is None:
            return out
        merge.extra = out[:, width:]
        return out[:, :width]

    def check_policy(self, name: str, keep_question: bool) -> SignificancePolicy:
        """The policy ``name``, refused in one line when this model cannot run it (a search checks before its trials)."""
        policy = get_policy(name)
        if policy.needs_probes and self.probes is None:
            raise UserError(
                f"significance policy {policy.name!r} needs look-ahead probes, and this model has none; "
                "train them with `make probes MODEL=<folder>` (or choose significance 'attention')"
            )
        return policy

    def _selection(
        self, config: LengthConfig, input_ids: torch.Tensor, plan: list[list[int]], lengths: list[int]
    ) -> _Selection:
        """The policy's state for one forward, checked before the first dropping layer runs."""
        policy = self.check_policy(config.significance, config.keep_question)
        if policy.needs_probes:
            previous = lengths
            for index, counts in enumerate(plan):
                if any(k < n for k, n in zip(counts, previous)):
                    self.probes.require(index)
                previous = counts
        # The question's mask only for a policy that reads it; keeping it needs only its length per
        # example, on the host.
        question = question_segment(input_ids, self.sep_token_id) if policy.needs_question else None
        lead = question_lengths(input_ids, self.sep_token_id) if config.keep_question else None
        return _Selection(
            policy, config.keep_question, question, self.probes, lead, ACCELERATED.get(config.significance)
        )

    def _native_drop(self, hidden: torch.Tensor, mask: torch.Tensor | None, real: torch.Tensor):
        """The native drop-attention kernel when this forward may use it, else None.

        It needs inference (no gradients, eval mode), float32 CPU hidden states (the embeddings'
        output has the model's dtype), and real tokens as a prefix of every row (right padding),
        which the slots of later layers keep by construction.
        """
        if not self.kernels or torch.is_grad_enabled() or self.model.training:
            return None
        if hidden.device.type != "cpu" or hidden.dtype != torch.float32:
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
        selection: _Selection | None = None,
        index: int = 0,
        attention: str = "sdpa",
        counts: list[int] | None = None,
        final: bool = False,
        merge=None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Attention over all current tokens as keys; context, projection and FFN only for the kept ones.

        ``counts`` is ``keep`` on the host (the forward's plan), so no device read is needed.
        ``final`` says no later layer runs: a kept question is then not protected (see ``_Selection.lead``).

        A policy that reads attention needs every query's probabilities; a policy that does not picks
        the slots from the layer's input first, so only the kept queries are projected (where the
        family allows, ``late_query``) and attend, through fused SDPA. ``native`` (the kernels
        module, real slots now, slots to keep per example) hands the layer to the policy's
        accelerated implementation, which picks the same tokens (and, for a policy that reads
        attention, gives the same context) to float32 rounding.

        ``merge`` (``dynlen.engine.merging``) folds the dropped tokens into what stays: its summary
        slots, if any, attend and are computed on beside the real slots (as keys and values only in
        the encoder's last layer, whose summaries nothing reads), and are never selected or dropped.
        """
        ad = self.adapter
        counts = keep.tolist() if counts is None else counts
        lead = None if selection is None or final else selection.lead(counts)
        reads_attention = selection is None or selection.policy.needs_attention
        # Only the kept tokens' queries are needed unless the policy reads every query's attention.
        late = not reads_attention and ad.late_query
        width = hidden.shape[1]
        extra = None if merge is None else merge.extra
        keys_mask = valid if merge is None else merge.key_bias(valid, width)
        # with summary slots the probes read the real slots alone: their FLOPs stay per real token
        probe_linears = () if selection is None or extra is not None else selection.probe_linears(index)
        inputs = ad.project_qkv(layer, _with_extra(hidden, extra), probe_linears, not late)
        queried = None if extra is None or final else slice(width, None)  # summary rows that stay queries
        done = None if native is None else self._accelerated(native, selection, index, inputs, counts, lead, ad)
        context = None
        if done is not None:
            context, slots = done
            kept = slots.shape[1]
            slot_real = None if min(counts) == kept else torch.arange(kept)[None, :] < keep[:, None]
        elif reads_attention:
            probs = _attention_probs(inputs.query, inputs.key, keys_mask, ad.scaling)
            real = probs if extra is None else probs[:, :, :width, :width]
            significance = (
                None
                if selection is None
                else selection.significance(index, hidden, valid, positions, real, inputs.extra)
            )
            slots, slot_real = _select_kept(real, valid, counts, significance, lead=lead, owned=True)
            rows = _take_rows(probs, slots, dim=2)
            if queried is not None:
                rows = torch.cat([rows, probs[:, :, queried]], dim=2)
            context = _merge_heads(rows @ inputs.value)
        else:
            significance = selection.significance(index, hidden, valid, positions, probe_inputs=inputs.extra)
            slots, slot_real = _select_kept(None, valid, counts, significance, lead=lead, owned=True)
        carry = tuple(_with_extra(_take_rows(t, slots, dim=1), _rows(t, queried, 1)) for t in inputs.carry)
        if context is None:  # the kept queries attend over every current key
            if late:
                query = ad.project_query(layer, carry)
            else:
                query = _with_extra(_take_rows(inputs.query, slots, dim=2), _rows(inputs.query, queried, 2), dim=2)
            if attention == "eager":  # explicit products, which FlopCounterMode sees (CPU flash SDPA it does not)
                context = _merge_heads(_attention_probs(query, inputs.key, keys_mask, ad.scaling) @ inputs.value)
            else:
                mask = None if keys_mask is None else keys_mask[:, None, None, :]
                context = _merge_heads(
                    F.scaled_dot_product_attention(query, inputs.key, inputs.value, attn_mask=mask, scale=ad.scaling)
                )
        if selection is not None and not final:  # no later layer reads the selection state
            selection.follow(slots, lead, slot_real)
        out = ad.finish_layer(layer, context, carry)
        if merge is not None and not final:  # after the last layer nothing reads what was merged
            kept = slots.shape[1]
            real_key = inputs.key if extra is None else inputs.key[:, :, :width]
            out_extra = None if queried is None else out[:, kept:]
            out = merge.after_drop(hidden, real_key, slots, slot_real, valid, positions, out[:, :kept], out_extra)
        return out, _take_rows(positions, slots, dim=1), slot_real

    @staticmethod
    def _accelerated(native: tuple, selection: _Selection, index: int, inputs, counts: list[int], lead, ad):
        """The policy's native implementation on this layer: (context or None, slots), or None to use torch's ops."""
        kernels, current, _, _ = native
        protected = [1] * len(counts) if lead is None else lead  # the kernels take per-example bounds as host lists
        job = DropJob(
            index,
            inputs.query,
            inputs.key,
            inputs.value,
            inputs.extra,
            selection.probes,
            current,
            counts,
            protected,
            ad.scaling,
        )
        return selection.accelerated.drop(kernels, job)


def _attention_probs(q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor | None, scaling: float) -> torch.Tensor:
    """Softmax attention probabilities (batch, heads, queries, keys).

    ``valid`` (batch, keys) is a boolean mask, or a float bias added to every query's scores
    (a merge's log counts, -inf where masked). The scaling multiplies q (tokens x head_dim per
    head) rather than the scores (tokens squared per head): one pass over a tensor a fifth the
    size at 150 tokens.
    """
    scores = (q * scaling) @ k.transpose(-1, -2)
    if valid is not None and valid.dtype == torch.bool:
        scores = scores.masked_fill(~valid[:, None, None, :], torch.finfo(scores.dtype).min)
    elif valid is not None:
        scores = scores + valid[:, None, None, :]
    return scores.softmax(dim=-1)


def _with_extra(rows: torch.Tensor, extra: torch.Tensor | None, dim: int = 1) -> torch.Tensor:
    """``rows`` with a merge's summary rows after them along ``dim`` (nothing to add: ``rows`` itself)."""
    return rows if extra is None else torch.cat([rows, extra], dim=dim)


def _rows(tensor: torch.Tensor | None, part: slice | None, dim: int) -> torch.Tensor | None:
    """``tensor``'s ``part`` along ``dim``, or None when there is no part (or no tensor)."""
    if part is None or tensor is None:
        return None
    return tensor[(slice(None),) * dim + (part,)]


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
