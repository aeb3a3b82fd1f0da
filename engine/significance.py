"""Significance policies: which tokens a dropping layer keeps.

A policy scores every current token of every example; the engine (``dynlen.engine.adaptive``) keeps the
highest-scoring ones, with padding always first out and ``[CLS]`` always in. Policies live in one
registry, ``POLICIES``, looked up by the name a :class:`~dynlen.engine.config.LengthConfig` carries, so a
new rule is one class and one ``register_policy`` call, never another branch in the forward.

Built in:

* ``attention`` -- attention received, summed over heads and valid queries (the Length-Adaptive
  Transformer's rule). Reads the dropping layer's full attention probabilities.
* ``question-attention`` -- attention received from the question's queries only.
* ``lookahead`` -- the start + end probability of the layer's look-ahead probe
  (``dynlen.engine.probes``): a small head trained to predict the full model's *final* span distributions
  from this layer's input. Needs no attention probabilities, so only the kept queries attend.
* ``lookahead-attention`` -- ranks under both, the probe's weighted ``LOOKAHEAD_WEIGHT`` times
  the attention's: the probe protects likely answers, attention keeps the context around them.
* ``lookahead-evidence`` -- the probe's start + end probability plus the attention each token
  receives from the likely answers (every query weighted by its probe probability): the answer
  candidates stay, and so do the tokens they read, the evidence a reader needs to tell the right
  candidate from a lookalike, which the probe alone scores low because it is no answer itself.
* ``lookahead-memory`` -- the probe's start + end probability, or the score the token had at the
  previous dropping layer if that was higher (a running maximum over the forward's probes): a
  token an earlier probe found likely stays, so one later probe's change of mind on states already
  shifted by the drops cannot push the answer out alone.

Any policy can also keep the whole question segment (``keep_question`` on the configuration):
the engine then scores ``[CLS]``, the question and its ``[SEP]`` above everything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from dynlen.errors import UserError

LOOKAHEAD_WEIGHT = 2.0  # picked on the search split among 2, 4 and 8 for 64-wide probes (docs/results.md)


@dataclass
class SelectionInputs:
    """What a policy may read at one dropping layer, for the current (not yet dropped) slots."""

    layer: int  # 0-based encoder layer
    hidden: torch.Tensor  # (batch, slots, hidden) the layer's input
    valid: torch.Tensor | None  # (batch, slots) real slots; None when all are real
    probs: torch.Tensor | None = None  # (batch, heads, queries, keys) when the policy reads attention
    question: torch.Tensor | None = None  # (batch, slots) question segment ([CLS] question [SEP])
    probes: object | None = None  # dynlen.engine.probes.LookaheadProbes when the model has them
    positions: torch.Tensor | None = None  # (batch, slots) each slot's position in the input
    # (batch, slots) the scores this policy gave the same slots at the previous dropping layer of
    # the forward; None at the first one
    previous: torch.Tensor | None = None
    # outputs of ``probes.input_linears(layer)`` on ``hidden`` when the engine ran them inside the
    # layer's own projection; the probe then finishes from them instead of reading ``hidden`` again
    probe_inputs: tuple[torch.Tensor, ...] | None = None


class SignificancePolicy(Protocol):
    """Scores tokens; higher means keep. Scores of padded slots are ignored.

    The engine overwrites the returned tensor in place (protected slots score +inf), so a policy
    returns a tensor made for the call, never one it keeps.
    """

    name: str
    needs_attention: bool  # reads the full attention probabilities of the dropping layer
    needs_probes: bool  # reads the model's look-ahead probes
    needs_question: bool  # reads the question segment

    def scores(self, inputs: SelectionInputs) -> torch.Tensor: ...


# A policy that reads ``SelectionInputs.previous`` sets ``needs_previous = True``; the engine carries
# scores from layer to layer only for such a policy, so the others pay nothing for it.
# A policy whose scoring runs matrix products of its own also defines ``extra_flops(tokens) -> int``,
# the FLOPs of scoring one example of that many tokens at a dropping layer; ``dynlen.engine.costs`` charges it.

POLICIES: dict[str, SignificancePolicy] = {}


def register_policy(policy: SignificancePolicy) -> SignificancePolicy:
    """Add ``policy`` under its name (a benchmark may register its own, e.g. an oracle)."""
    POLICIES[policy.name] = policy
    return policy


def get_policy(name: str) -> SignificancePolicy:
    if name not in POLICIES:
        raise UserError(f"unknown significance policy {name!r}; choose one of {', '.join(sorted(POLICIES))}")
    return POLICIES[name]


def attention_received(
    probs: torch.Tensor, valid: torch.Tensor | None, queries: torch.Tensor | None = None
) -> torch.Tensor:
    """(batch, keys) attention each key receives, summed over heads and the chosen queries.

    ``queries`` (batch, queries) restricts the sum; without it and without padding, heads and
    queries are one contiguous run per example, so a single reduction does it.
    """
    b, _, _, n = probs.shape
    if valid is None and queries is None:
        return probs.reshape(b, -1, n).sum(dim=1)
    received = probs.sum(dim=1)  # over heads first: (batch, queries, keys), 1/heads of the work below
    use = valid if queries is None else (queries if valid is None else queries & valid)
    return (received * use.to(probs.dtype)[:, :, None]).sum(dim=1)


def lookahead_probability(inputs: SelectionInputs) -> torch.Tensor:
    """(batch, slots) the probe's start + end probability, each a softmax over the real slots."""
    if inputs.probe_inputs is not None:
        logits = inputs.probes.from_inputs(inputs.layer, inputs.probe_inputs, inputs.question)
    else:
        logits = inputs.probes(inputs.layer, inputs.hidden, inputs.question)
    if inputs.valid is not None:
        logits = logits.masked_fill(~inputs.valid[:, :, None], torch.finfo(logits.dtype).min)
    return logits.softmax(dim=1).sum(dim=-1)


def attention_from(probs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(batch, keys) attention each key receives from the queries, each weighted by ``weights`` (batch, queries), heads averaged.

    Padded queries must carry weight 0; padded keys receive (next to) nothing, as softmax gave them.
    """
    return (weights.to(probs.dtype)[:, None, :] @ probs.mean(dim=1)).squeeze(1)


def _rank(scores: torch.Tensor) -> torch.Tensor:
    """Each slot's rank within its example, scaled to [0, 1] (ties broken by position)."""
    return scores.argsort(dim=1).argsort(dim=1).to(scores.dtype) / max(1, scores.shape[1] - 1)


class Attention:
    name = "attention"
    needs_attention, needs_probes, needs_question = True, False, False

    def scores(self, inputs: SelectionInputs) -> torch.Tensor:
        return attention_received(inputs.probs, inputs.valid)


class QuestionAttention:
    name = "question-attention"
    needs_attention, needs_probes, needs_question = True, False, True

    def scores(self, inputs: SelectionInputs) -> torch.Tensor:
        return attention_received(inputs.probs, inputs.valid, queries=inputs.question)


class Lookahead:
    name = "lookahead"
    needs_attention, needs_probes, needs_question = False, True, False

    def scores(self, inputs: SelectionInputs) -> torch.Tensor:
        return lookahead_probability(inputs)


class LookaheadAttention:
    name = "lookahead-attention"
    needs_attention, needs_probes, needs_question = True, True, False

    def scores(self, inputs: SelectionInputs) -> torch.Tensor:
        attention = attention_received(inputs.probs, inputs.valid)
        probe = lookahead_probability(inputs)
        if inputs.valid is not None:  # padded slots rank last under both before mixing
            attention = attention.masked_fill(~inputs.valid, -1.0)
            probe = probe.masked_fill(~inputs.valid, -1.0)
        return _rank(attention) + LOOKAHEAD_WEIGHT * _rank(probe)


class LookaheadEvidence:
    name = "lookahead-evidence"
    needs_attention, needs_probes, needs_question = True, True, False

    def scores(self, inputs: SelectionInputs) -> torch.Tensor:
        probe = lookahead_probability(inputs)  # padded slots already 0
        return probe + attention_from(inputs.probs, probe)

    def extra_flops(self, tokens: int) -> int:
        """The weighted sum of the head-averaged attention rows: one (1 x tokens) @ (tokens x tokens) product."""
        return 2 * tokens * tokens


class LookaheadMemory:
    name = "lookahead-memory"
    needs_attention, needs_probes, needs_question = False, True, False
    needs_previous = True

    def scores(self, inputs: SelectionInputs) -> torch.Tensor:
        probe = lookahead_probability(inputs)
        return probe if inputs.previous is None else torch.maximum(probe, inputs.previous)


for _policy in (
    Attention(),
    QuestionAttention(),
    Lookahead(),
    LookaheadAttention(),
    LookaheadEvidence(),
    LookaheadMemory(),
):
    register_policy(_policy)


def question_lengths(input_ids: torch.Tensor, sep_token_id: int | None) -> list[int]:
    """Per row, how many leading tokens are [CLS] question [SEP], read on the host.

    Every supported family's QA tokenizer puts the question first, so the first separator ends it
    (RoBERTa's ``</s></s>`` pair leaves its second ``</s>`` to the context, harmlessly). One read of
    the ids replaces the half-dozen small device ops a mask would take: at batch 1 those cost more
    than a layer's selection.
    """
    if sep_token_id is None:
        raise UserError(
            "keeping the question needs the tokenizer's separator id; pass sep_token_id= to LengthAdaptiveQA "
            "(QARunner and Answerer do it from the tokenizer)"
        )
    lengths = []
    for row in input_ids.tolist():
        try:
            lengths.append(row.index(sep_token_id) + 1)
        except ValueError:
            raise UserError(
                f"an input has no separator token (id {sep_token_id}); is it a question-context pair?"
            ) from None
    return lengths


def question_segment(input_ids: torch.Tensor, sep_token_id: int | None) -> torch.Tensor:
    """(batch, tokens) True over each row's first ``question_lengths`` tokens: [CLS] question [SEP]."""
    lengths = torch.tensor(question_lengths(input_ids, sep_token_id), device=input_ids.device)
    return torch.arange(input_ids.shape[1], device=input_ids.device)[None, :] < lengths[:, None]
