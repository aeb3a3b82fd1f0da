"""Significance policies: which tokens a dropping layer keeps.

A policy scores every current token of every example; the engine (``dynlen.engine.adaptive``) keeps the
highest-scoring ones, with padding always first out and ``[CLS]`` always in. Each policy is a
:class:`SignificancePolicy` that declares on its type what it reads (attention probabilities,
the look-ahead probes, the question) and the FLOPs of its own scoring, and is registered once in
``POLICIES`` under the name a :class:`~dynlen.engine.config.LengthConfig` carries. The forward and
the FLOPs formula read only those declarations, never a policy's name, so a new rule is one class
and one ``register_policy`` call. A native kernel registers as the accelerated implementation of a
policy (``register_accelerated``), as transformers registers attention backends.

Built in:

* ``attention`` -- attention received, summed over heads and valid queries (the Length-Adaptive
  Transformer's rule). Reads the dropping layer's full attention probabilities.
* ``lookahead`` -- the start + end probability of the layer's look-ahead probe
  (``dynlen.engine.probes``): a small head trained to predict the full model's *final* span distributions
  from this layer's input. Needs no attention probabilities, so only the kept queries attend.
* ``lookahead-attention`` -- ranks under both, the probe's weighted ``LOOKAHEAD_WEIGHT`` times
  the attention's: the probe protects likely answers, attention keeps the context around them.

Any policy can also keep the whole question segment (``keep_question`` on the configuration,
``+question`` in its name): the engine then scores ``[CLS]``, the question and its ``[SEP]`` above
everything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch

from dynlen.errors import UserError

# The selections a user chooses between (policy, with "+question": the question segment always
# stays), each with when to choose it. Other registered names run too (committed runs and the
# benchmarks use them), but these are the ones offered.
SELECTIONS = {
    "attention": "a model without look-ahead probes: attention received, the Length-Adaptive Transformer's rule",
    "lookahead+question": "a model with look-ahead probes (make probes): keeps the answer best, the default for one",
}
SELECTION_HELP = (
    " or ".join(SELECTIONS) + " (auto: lookahead+question when the model has look-ahead probes, else attention)"
)

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
    # outputs of ``probes.input_linears(layer)`` on ``hidden`` when the engine ran them inside the
    # layer's own projection; the probe then finishes from them instead of reading ``hidden`` again
    probe_inputs: tuple[torch.Tensor, ...] | None = None


class SignificancePolicy:
    """Scores tokens; higher means keep. Scores of padded slots are ignored.

    What a policy reads is declared on its type, so the engine prepares only that (attention
    probabilities are materialised only for a policy that reads them) and the FLOPs formula
    charges only that. The engine overwrites the returned tensor in place (protected slots score
    +inf), so a policy returns a tensor made for the call, never one it keeps; a policy with state
    (e.g. a benchmark's oracle) keeps it on its instance.
    """

    name: ClassVar[str] = ""
    needs_attention: ClassVar[bool] = False  # reads the full attention probabilities of the dropping layer
    needs_probes: ClassVar[bool] = False  # reads the model's look-ahead probes
    needs_question: ClassVar[bool] = False  # reads the question segment

    def scores(self, inputs: SelectionInputs) -> torch.Tensor:
        raise NotImplementedError

    def scoring_flops(self, tokens: int) -> int:
        """FLOPs of matrix products of its own when scoring one example of ``tokens`` tokens.

        The attention a policy reads is the layer's own and the probes are priced by
        ``LookaheadProbes.flops``, so the built-in policies add nothing here.
        """
        return 0


class AcceleratedSelection(Protocol):
    """A native implementation of one policy's dropping layer (``dynlen.engine.kernels.selection``).

    ``drop`` returns ``(context, slots)``: the kept slots per example, and the kept rows' attention
    context when it computed the attention too (a policy that reads attention), else None, and
    the engine attends the kept queries itself. It returns None when it cannot run this layer
    (the engine then uses torch's ops).
    """

    def drop(self, kernels, job: DropJob) -> tuple[torch.Tensor | None, torch.Tensor] | None: ...


@dataclass
class DropJob:
    """One dropping layer as a native implementation sees it: per-example bounds on the host."""

    layer: int
    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    probe_inputs: tuple[torch.Tensor, ...]  # the probe's first map's columns of the projection, if run there
    probes: object | None
    current: list[int]  # real slots per example now
    counts: list[int]  # slots to keep per example
    protected: list[int]  # leading slots that must stay per example
    scaling: float


POLICIES: dict[str, SignificancePolicy] = {}
ACCELERATED: dict[str, AcceleratedSelection] = {}


def register_policy(policy: SignificancePolicy) -> SignificancePolicy:
    """Add ``policy`` under its name (a benchmark may register its own, e.g. an oracle); a name is taken once."""
    if not isinstance(policy, SignificancePolicy):
        raise TypeError(f"{type(policy).__name__} is not a SignificancePolicy")
    if not policy.name or policy.name.endswith("+question"):
        raise ValueError("a policy needs a name without '+question' (keeping the question is for every policy)")
    if policy.name in POLICIES:
        raise ValueError(f"significance policy {policy.name!r} is already registered")
    POLICIES[policy.name] = policy
    return policy


def register_accelerated(name: str, implementation: AcceleratedSelection) -> AcceleratedSelection:
    """Register the native implementation of the policy ``name``; one per policy."""
    if name not in POLICIES:
        raise ValueError(f"no significance policy {name!r} to accelerate")
    if name in ACCELERATED:
        raise ValueError(f"significance policy {name!r} already has an accelerated implementation")
    ACCELERATED[name] = implementation
    return implementation


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
        logits = inputs.probes.from_inputs(inputs.layer, inputs.probe_inputs)
    else:
        logits = inputs.probes(inputs.layer, inputs.hidden)
    if inputs.valid is not None:
        logits = logits.masked_fill(~inputs.valid[:, :, None], torch.finfo(logits.dtype).min)
    return logits.softmax(dim=1).sum(dim=-1)


def _rank(scores: torch.Tensor) -> torch.Tensor:
    """Each slot's rank within its example, scaled to [0, 1] (ties broken by position)."""
    return scores.argsort(dim=1).argsort(dim=1).to(scores.dtype) / max(1, scores.shape[1] - 1)


class Attention(SignificancePolicy):
    name = "attention"
    needs_attention = True

    def scores(self, inputs: SelectionInputs) -> torch.Tensor:
        return attention_received(inputs.probs, inputs.valid)


class Lookahead(SignificancePolicy):
    name = "lookahead"
    needs_probes = True

    def scores(self, inputs: SelectionInputs) -> torch.Tensor:
        return lookahead_probability(inputs)


class LookaheadAttention(SignificancePolicy):
    name = "lookahead-attention"
    needs_attention = needs_probes = True

    def scores(self, inputs: SelectionInputs) -> torch.Tensor:
        attention = attention_received(inputs.probs, inputs.valid)
        probe = lookahead_probability(inputs)
        if inputs.valid is not None:  # padded slots rank last under both before mixing
            attention = attention.masked_fill(~inputs.valid, -1.0)
            probe = probe.masked_fill(~inputs.valid, -1.0)
        return _rank(attention) + LOOKAHEAD_WEIGHT * _rank(probe)


class LookaheadEvidence(SignificancePolicy):
    """The probe's start + end probability plus the attention each token receives from the likely answers.

    Every query is weighted by its probe probability, so the answer candidates stay and so do the
    tokens they read. Measured +0.2-0.3 F1 over ``lookahead+question``, within its interval, so not
    offered; registered because committed runs (results/standard-lookahead, results/lengthdrop-lookahead)
    searched it and must still read and re-draw.
    """

    name = "lookahead-evidence"
    needs_attention = needs_probes = True

    def scores(self, inputs: SelectionInputs) -> torch.Tensor:
        probe = lookahead_probability(inputs)  # padded slots already 0
        return probe + (probe.to(inputs.probs.dtype)[:, None, :] @ inputs.probs.mean(dim=1)).squeeze(1)

    def scoring_flops(self, tokens: int) -> int:
        """The weighted sum of the head-averaged attention rows: one (1 x tokens) @ (tokens x tokens) product."""
        return 2 * tokens * tokens


for _policy in (Attention(), Lookahead(), LookaheadAttention(), LookaheadEvidence()):
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
