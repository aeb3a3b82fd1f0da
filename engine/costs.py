"""Exact FLOPs of a length configuration on given inputs, and the speedups they imply.

Unit: FLOPs = 2 x multiply-accumulates of every matrix product (projections, attention
scores, attention-weighted values, feed-forward, span head), the convention of the field and
of ``torch.utils.flop_counter.FlopCounterMode``. Element-wise work (softmax, LayerNorm, GELU,
bias adds) and embedding look-ups are not counted; a matrix product inside the embedding
(MobileBERT's embedding projection) is. Tokens are real tokens: padding is free.

Each model family describes its own arithmetic with a :class:`CostShape` (BERT, RoBERTa and
DistilBERT with :class:`EncoderShape`; others next to their adapter in ``dynlen.engine.families``), so
the functions below hold for every family.

Two conventions, both reported:

* ``dynamic`` -- each feature at its real length (what this suite runs);
* ``padded`` -- each feature padded to 384, the convention behind published speedups
  such as Dynamic-TinyBERT's 3.3x.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from dynlen.engine.config import COUNTS_MAX_LENGTH, LengthConfig
from dynlen.engine.merging import get_retention


class CostShape(Protocol):
    """Exact FLOPs of one family's forward, split where token counts change."""

    num_layers: int

    def embed_flops(self, length: int) -> int: ...

    def layer_flops(self, n_in: int, n_out: int) -> int: ...

    def score_flops(self, queries: int, keys: int) -> int: ...

    def head_flops(self, length: int) -> int: ...


@dataclass(frozen=True)
class EncoderShape:
    """Depth and widths of a post-LayerNorm encoder (BERT, RoBERTa, BORT, DistilBERT): all their FLOPs need."""

    num_layers: int
    hidden: int
    intermediate: int
    attention_dim: int | None = None  # all heads together; = hidden for BERT
    span_outputs: int = 2

    @property
    def attn(self) -> int:
        return self.attention_dim or self.hidden

    @classmethod
    def from_hf_config(cls, config) -> EncoderShape:
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(config.num_hidden_layers, config.hidden_size, config.intermediate_size, heads * head_dim)

    def embed_flops(self, length: int) -> int:
        """Look-ups and sums only: no matrix product before the first layer."""
        return 0

    def layer_flops(self, n_in: int, n_out: int) -> int:
        """One layer that attends over ``n_in`` tokens and keeps ``n_out`` of them.

        Q/K/V and the attention scores need every incoming token (significance sums over all
        queries); the attention-weighted values, the output projection and the FFN run only for
        the kept tokens.
        """
        d, a, f = self.hidden, self.attn, self.intermediate
        qkv = 3 * 2 * n_in * d * a
        scores = 2 * n_in * n_in * a
        context = 2 * n_out * n_in * a
        out_proj = 2 * n_out * a * d
        ffn = 2 * 2 * n_out * d * f
        return qkv + scores + context + out_proj + ffn

    def score_flops(self, queries: int, keys: int) -> int:
        """Attention scores of ``queries`` rows over ``keys`` columns, all heads."""
        return 2 * queries * keys * self.attn

    def query_flops(self, tokens: int) -> int:
        """The query projection of ``tokens`` tokens: what a layer saves on each token it drops
        when its policy reads no attention (the adapter's ``late_query``)."""
        return 2 * tokens * self.hidden * self.attn

    def head_flops(self, length: int) -> int:
        """The span head sees every token: dropped ones are restored before it."""
        return 2 * length * self.hidden * self.span_outputs


BERT_BASE = EncoderShape(num_layers=12, hidden=768, intermediate=3072)


def layer_flops(shape: CostShape, n_in: int, n_out: int) -> int:
    """One layer that attends over ``n_in`` tokens and keeps ``n_out`` of them."""
    return shape.layer_flops(n_in, n_out)


def span_head_flops(shape: CostShape, length: int) -> int:
    return shape.head_flops(length)


ProbeFlops = Callable[[int], int]  # tokens -> FLOPs of one probe on one example


def example_layer_flops(
    shape: CostShape, config: LengthConfig, length: int, probe_flops: ProbeFlops | None = None
) -> list[int]:
    """Per-layer FLOPs for one feature of ``length`` real tokens (embedding and span head excluded).

    The family's ``layer_flops`` is a layer whose policy reads attention: every incoming query's
    scores are needed to rank the keys. What the policy declares on its type decides the rest: one
    that reads no attention computes scores for the kept queries only, and projects only their
    queries where the shape has ``query_flops``; one that reads the look-ahead probes pays
    ``probe_flops(n_in)`` (``LookaheadProbes.flops``) at every layer where the feature drops
    tokens, and every policy its own ``scoring_flops``.

    A retention that merges (``dynlen.engine.merging``) adds its similarity products at every
    dropping layer but the last, and its summary slots to every layer after the first drop: they
    run as queries too, except in the encoder's last layer when it drops (keys and values only).
    """
    from dynlen.engine.significance import get_policy

    policy = get_policy(config.significance)
    retention = get_retention(config.retention)
    out, n_in, summaries = [], length, 0
    keeps = config.keep_counts(length)
    for index, n_out in enumerate(keeps):
        final = index == len(keeps) - 1
        dropping = n_out < n_in
        rows_in, rows_out = n_in + summaries, n_out + (0 if final and dropping else summaries)
        flops = shape.layer_flops(rows_in, rows_out)
        if dropping:
            flops += _selection_flops(shape, policy, n_in, rows_in, rows_out, probe_flops)
            if not final:
                flops += retention.merge_flops(shape.score_flops, n_in, n_out)
                summaries = retention.summary_slots(length)
        out.append(flops)
        n_in = n_out
    return out


def _selection_flops(
    shape: CostShape, policy, n_in: int, rows_in: int, rows_out: int, probe_flops: ProbeFlops | None
) -> int:
    """What a dropping layer's policy adds to (or saves on) the family's layer FLOPs.

    ``n_in`` real tokens are ranked; ``rows_in`` slots (real and summary) enter the layer and
    ``rows_out`` leave it as queries.
    """
    flops = policy.scoring_flops(n_in)
    if not policy.needs_attention:
        flops -= shape.score_flops(rows_in - rows_out, rows_in)
        late_query = getattr(shape, "query_flops", None)  # families whose adapter has late_query
        if late_query is not None:
            flops -= late_query(rows_in - rows_out)
    if policy.needs_probes and probe_flops is not None:
        flops += probe_flops(n_in)
    return flops


def example_flops(shape: CostShape, config: LengthConfig, length: int, probe_flops: ProbeFlops | None = None) -> int:
    layers = sum(example_layer_flops(shape, config, length, probe_flops))
    return shape.embed_flops(length) + layers + shape.head_flops(length)


def total_flops(
    shape: CostShape, config: LengthConfig, lengths: Iterable[int], probe_flops: ProbeFlops | None = None
) -> int:
    """Sum over features."""
    return sum(example_flops(shape, config, n, probe_flops) for n in lengths)


@dataclass(frozen=True)
class FlopReport:
    """FLOPs of one configuration on one input set, with both reference points."""

    flops: int
    keep_all_flops: int
    bert_base_flops: int
    features: int
    questions: int

    @property
    def speedup_vs_keep_all(self) -> float:
        return self.keep_all_flops / self.flops

    @property
    def speedup_vs_bert_base(self) -> float:
        return self.bert_base_flops / self.flops

    @property
    def gflops_per_question(self) -> float:
        return self.flops / 1e9 / max(1, self.questions)

    def as_dict(self) -> dict:
        return {
            "flops": self.flops,
            "macs": self.flops // 2,
            "gflops_per_question": self.gflops_per_question,
            "keep_all_flops": self.keep_all_flops,
            "bert_base_flops": self.bert_base_flops,
            "speedup_vs_keep_all": self.speedup_vs_keep_all,
            "speedup_vs_bert_base": self.speedup_vs_bert_base,
        }


def flop_report(
    shape: CostShape,
    config: LengthConfig,
    lengths: Sequence[int],
    questions: int,
    padded: bool = False,
    probe_flops: ProbeFlops | None = None,
) -> FlopReport:
    """FLOPs under dynamic padding (real lengths) or the padded-to-384 convention.

    ``probe_flops``: one look-ahead probe's FLOPs on an example (``LookaheadProbes.flops``),
    charged to policies that read the probes.
    """
    lengths = [COUNTS_MAX_LENGTH] * len(lengths) if padded else list(lengths)
    keep_all = LengthConfig.keep_all(shape.num_layers)
    base_keep_all = LengthConfig.keep_all(BERT_BASE.num_layers)
    return FlopReport(
        flops=total_flops(shape, config, lengths, probe_flops),
        keep_all_flops=total_flops(shape, keep_all, lengths),
        bert_base_flops=total_flops(BERT_BASE, base_keep_all, lengths),
        features=len(lengths),
        questions=questions,
    )


def mean_tokens_per_layer(config: LengthConfig, lengths: Sequence[int]) -> list[float]:
    """Average real tokens each layer keeps, over features."""
    if not lengths:
        return [0.0] * config.num_layers
    sums = [0] * config.num_layers
    for n in lengths:
        for i, k in enumerate(config.keep_counts(n)):
            sums[i] += k
    return [s / len(lengths) for s in sums]


def check_flops_consistent(runner, config: LengthConfig, kept_mean: Sequence[float]) -> None:
    """The formula's token counts must be the model's: a guard against the two drifting apart.

    ``runner`` is the evaluator (:class:`bench.runner.QARunner`) whose features' real lengths the
    formula counts; ``kept_mean`` the tokens per layer its model reported keeping.
    """
    expected = mean_tokens_per_layer(config, runner.features.lengths)
    if any(abs(a - b) > 1e-6 for a, b in zip(expected, kept_mean)):
        raise AssertionError(f"model kept {kept_mean} tokens per layer but the FLOP formula assumes {expected}")
