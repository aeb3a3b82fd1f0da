"""Which significance policy keeps the answer? F1 and answer survival per policy at fixed budgets.

For each model, fixed length configuration and significance policy, on held-out SQuAD dev
questions (the article-level half the search never sees): EM/F1, the paired bootstrap 95% interval
of the F1 difference to keep-all, the exact FLOPs speedup vs keep-all (probe FLOPs included), and
answer survival after every layer -- the share of answer-bearing features whose gold start and end
tokens are still computed on -- and the same for the model's own keep-all answer
(``own_answer_survival``), which is what a policy must keep computed to change nothing.

Two oracle policies exist only here, both keeping one span per feature and ranking the rest by
attention received: ``oracle`` keeps the gold answer (what selection alone can reach, helped by
dropping the distractors it knows are wrong), and ``self-oracle`` keeps the span the model itself
answers at keep-all, knowing nothing of the gold: what attention-chosen context costs once a
policy keeps the model's own final answer.

A policy may carry a retention (``lookahead+question/merge-window``): each merge row is then
paired with dropping at the same shape; the merge rules (``dynlen.engine.merge_rules``) are
registered for the run: measured, they bought nothing over dropping (docs/rejected.md).

Writes ``retention.json``, ``retention.csv`` and ``retention.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from dynlen.bench import harness
from dynlen.bench.features import cached_features, collate, length_sorted_batches
from dynlen.bench.inference import batched_logits
from dynlen.bench.model_io import DEFAULT_MODEL_DIR, quiet_libraries
from dynlen.bench.postprocess import best_feature_spans, predict_answers
from dynlen.bench.runner import QARunner
from dynlen.bench.squad import limit_examples, load_squad, split_by_article
from dynlen.bench.uncertainty import paired_interval, per_question_f1
from dynlen.engine.config import LengthConfig, apply_tail
from dynlen.engine.merge_rules import register_merges
from dynlen.engine.significance import POLICIES as REGISTERED
from dynlen.engine.significance import (
    SelectionInputs,
    SignificancePolicy,
    attention_received,
    register_policy,
)
from dynlen.errors import UserError

CONFIGS = (
    "ratios:1,0.9,0.81,0.729,0.656,0.59",
    "ratios:1,1,0.7,0.5,0.35,0.25",
    "ratios:1,0.8,0.64,0.512,0.41,0.328",
    "ratios:1,1,0.7,0.49,0.343,0.0515",  # the reference search's 1.6x point on the LengthDrop model
    "ratios:1,0.7,0.49,0.343,0.24,0.168",
)
POLICIES = (
    "attention",
    "attention+question",
    "question-attention",
    "lookahead+question",
    "lookahead-attention+question",
    "lookahead-evidence+question",
    "oracle",
    "oracle+question",
    "self-oracle+question",
)


class QuestionAttention(SignificancePolicy):
    """Attention received from the question's queries only. Measured within noise of ``attention``."""

    name = "question-attention"
    needs_attention = needs_question = True

    def scores(self, inputs: SelectionInputs) -> torch.Tensor:
        return attention_received(inputs.probs, inputs.valid, queries=inputs.question)


class SpanOracle(SignificancePolicy):
    """One span per feature always stays; the rest is ranked by attention received. Benchmark only.

    ``spans`` (features, 2) holds each feature's start/end token (0, 0: nothing to keep);
    ``current`` is the rows of the batch being run: the policy's state, on its instance.
    """

    needs_attention = True

    def __init__(self, name: str) -> None:
        self.name = name  # one class, two registered names
        self.spans: torch.Tensor | None = None
        self.current: torch.Tensor | None = None

    def scores(self, inputs: SelectionInputs) -> torch.Tensor:
        attention = attention_received(inputs.probs, inputs.valid)
        start, end, pos = self.current[:, :1], self.current[:, 1:], inputs.positions
        inside = (pos >= start) & (pos <= end) & (start > 0)
        return attention.masked_fill(inside, float("inf"))


class _Traced(torch.nn.Module):
    """The engine with every dropping layer's kept positions recorded, batch by batch."""

    def __init__(self, adaptive) -> None:
        super().__init__()
        self.adaptive = adaptive
        self.traces: list = []

    def forward(self, *args, **kwargs):
        out = self.adaptive(*args, **kwargs, trace=True)
        self.traces.append(out.trace)
        return out


def _survival(batches, traces, starts, ends, num_layers: int) -> list[float]:
    """Share of answer-bearing features whose gold start and end survive each layer."""
    alive = [[0, 0] for _ in range(num_layers)]  # [survived, answer-bearing]
    for (idx, _), trace in zip(batches, traces):
        for row, i in enumerate(idx):
            if starts[i] <= 0:
                continue
            survived = True
            done = {}
            for layer, positions, mask in trace:
                kept = positions[row] if mask is None else positions[row][mask[row]]
                survived = survived and bool((kept == starts[i]).any() and (kept == ends[i]).any())
                done[layer] = survived
            current = True
            for layer in range(num_layers):
                current = done.get(layer, current)
                alive[layer][0] += int(current)
                alive[layer][1] += 1
    return [s / max(1, n) for s, n in alive]


def measure(
    runner: QARunner, oracles: list[SpanOracle], spec: str, selection: str, own: torch.Tensor | None = None
) -> dict:
    """One (configuration, policy): scores, FLOPs, per-question F1 and answer survival per layer.

    ``own`` (features, 2), the model's own keep-all spans, adds how often those reach each layer.
    """
    config = LengthConfig.keep_all(runner.num_layers) if spec == "keep-all" else LengthConfig.parse(spec)
    config = apply_tail(config, selection)
    feats = cached_features(runner.data, runner.tokenizer, with_labels=True)
    batches = [
        (idx, collate(feats, idx, runner.pad_id)) for idx in length_sorted_batches(feats.lengths, runner.batch_size)
    ]

    def with_spans():
        for idx, batch in batches:
            for oracle in oracles:
                oracle.current = None if oracle.spans is None else oracle.spans[idx]
            yield idx, batch

    traced = _Traced(runner.adaptive)
    started = time.perf_counter()
    bar = tqdm(with_spans(), total=len(batches), desc=f"{selection} {config.label()}", leave=False)
    starts, ends, _ = batched_logits(traced, feats, bar, config, runner.device)
    answers = predict_answers(runner.data.examples, feats, starts, ends)
    predictions = {qid: a["text"] for qid, a in answers.items()}
    f1s = per_question_f1(predictions, runner.data.examples)
    flops = runner.flops(config)
    survival = _survival(batches, traced.traces, feats.start_positions, feats.end_positions, runner.num_layers)
    own_survival = None
    if own is not None:
        own_survival = _survival(batches, traced.traces, own[:, 0].tolist(), own[:, 1].tolist(), runner.num_layers)
        own_survival = [round(x, 4) for x in own_survival]
    return {
        "model": runner.model_name,
        "config": "keep-all" if spec == "keep-all" else config.label(precise=True).split("@")[0],
        "policy": selection,
        "questions": len(runner.data.examples),
        "f1": float(f1s.mean()),
        "flops_speedup_vs_keep_all": flops.speedup_vs_keep_all,
        "answer_survival_per_layer": [round(x, 4) for x in survival],
        "answer_survival": survival[-1],
        "own_answer_survival_per_layer": own_survival,
        "own_answer_survival": None if own_survival is None else own_survival[-1],
        "seconds": round(time.perf_counter() - started, 1),
        "_per_question": f1s,
        "_own_spans": _own_spans(feats, starts, ends) if spec == "keep-all" else None,
    }


def _own_spans(feats, starts, ends) -> torch.Tensor:
    """(features, 2) each feature's best span's start/end token under these logits; (0, 0) when it has none."""
    scores, s_tok, e_tok = best_feature_spans(feats, starts, ends)
    spans = torch.tensor(list(zip(s_tok.tolist(), e_tok.tolist())))
    return spans.masked_fill(~torch.from_numpy(scores > float("-inf"))[:, None], 0)


def _gold_spans(runner: QARunner) -> torch.Tensor:
    feats = cached_features(runner.data, runner.tokenizer, with_labels=True)
    return torch.tensor(list(zip(feats.start_positions, feats.end_positions)))


def run_model(model: str, data, configs: list[str], policies: list[str], oracles: dict[str, SpanOracle]) -> list[dict]:
    runner = QARunner(model, data, batch_size=32)
    if runner.adaptive.probes is None and any("lookahead" in p for p in policies):
        raise UserError(f"{model} has no look-ahead probes; train them first: make probes MODEL={model}")
    oracles["oracle"].spans = _gold_spans(runner)
    oracles["self-oracle"].spans = None
    reference = measure(runner, list(oracles.values()), "keep-all", "attention")
    oracles["self-oracle"].spans = reference["_own_spans"]
    rows = [reference]
    for spec in configs:
        dropped: dict[str, dict] = {}  # the drop row of each selection at this shape, for merges to pair with
        for policy in policies:
            row = measure(runner, list(oracles.values()), spec, policy, own=oracles["self-oracle"].spans)
            row["f1_delta_low"], row["f1_delta_high"] = paired_interval(
                row["_per_question"], reference["_per_question"]
            )
            row["f1_delta"] = row["f1"] - reference["f1"]
            named = apply_tail(LengthConfig.keep_all(1), policy)
            selection = named.with_retention("drop").tail
            if named.retention == "drop":
                dropped[selection] = row
            elif selection in dropped:  # a merge against dropping at the same shape, question by question
                base = dropped[selection]
                row["f1_vs_drop"] = row["f1"] - base["f1"]
                row["f1_vs_drop_low"], row["f1_vs_drop_high"] = paired_interval(
                    row["_per_question"], base["_per_question"]
                )
            rows.append(row)
            print(
                f"{model} {row['config']:36} {policy:30} F1 {row['f1']:.2f} ({row['f1_delta']:+.2f}, 95% "
                f"[{row['f1_delta_low']:+.2f}, {row['f1_delta_high']:+.2f}]) x{row['flops_speedup_vs_keep_all']:.2f} "
                f"answer kept {row['answer_survival']:.1%}, own answer kept {row['own_answer_survival']:.1%}",
                flush=True,
            )
    return rows


def write(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    (out / "retention.json").write_text(json.dumps(clean, indent=1) + "\n")
    frame = pd.DataFrame(clean)
    for column in ("answer_survival_per_layer", "own_answer_survival_per_layer"):
        frame[column] = frame[column].map(lambda v: "" if v is None else ";".join(map(str, v)))
    frame.to_csv(out / "retention.csv", index=False)
    table = frame[
        [
            "model",
            "config",
            "policy",
            "flops_speedup_vs_keep_all",
            "f1",
            "f1_delta",
            "f1_delta_low",
            "f1_delta_high",
            "answer_survival",
            "own_answer_survival",
        ]
    ].copy()
    table["f1_delta"] = table.apply(
        lambda r: "" if pd.isna(r.f1_delta) else f"{r.f1_delta:+.2f} [{r.f1_delta_low:+.2f}, {r.f1_delta_high:+.2f}]",
        axis=1,
    )
    table = table.drop(columns=["f1_delta_low", "f1_delta_high"])
    if "f1_vs_drop" in frame:
        table["f1_vs_drop"] = frame.apply(
            lambda r: (
                ""
                if pd.isna(r.f1_vs_drop)
                else f"{r.f1_vs_drop:+.2f} [{r.f1_vs_drop_low:+.2f}, {r.f1_vs_drop_high:+.2f}]"
            ),
            axis=1,
        )
    for column in ("answer_survival", "own_answer_survival"):
        table[column] = table[column].map(lambda v: "" if pd.isna(v) else f"{v:.1%}")
    (out / "retention.md").write_text(table.to_markdown(index=False, floatfmt=".2f") + "\n")
    print(f"wrote {out}/retention.json, retention.csv, retention.md")


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__, "data", out="results/retention")
    parser.add_argument(
        "--models", default=DEFAULT_MODEL_DIR, help="comma-separated QA model folders (default: %(default)s)"
    )
    parser.add_argument(
        "--questions", type=int, default=1000, help="questions scored; 0: the whole split (default: %(default)s)"
    )
    parser.add_argument(
        "--split",
        choices=("held-out", "search"),
        default="held-out",
        help="article-level half of dev to score: the held-out one, or the search one for tuning a policy (default: %(default)s)",
    )
    parser.add_argument("--configs", default=";".join(CONFIGS), help="';'-separated length configurations")
    parser.add_argument(
        "--policies",
        default=",".join(POLICIES),
        help="comma-separated policies, each optionally with /precision and /retention as in a label's tail "
        "(lookahead+question/merge-window) (default: all)",
    )
    return harness.run(_run, parser.parse_args(argv), argv, __file__)


def _registered(policy: SignificancePolicy) -> SignificancePolicy:
    """``policy`` registered, or the one registered under its name by an earlier run in this process."""
    return REGISTERED.get(policy.name) or register_policy(policy)


def _run(args: argparse.Namespace, figures: harness.Figures) -> None:
    if args.questions < 0:
        raise UserError(f"--questions must be 0 (every question of the split) or more, got {args.questions}")
    quiet_libraries()
    for policy in (QuestionAttention(),):
        _registered(policy)
    register_merges()
    oracles = {name: _registered(SpanOracle(name)) for name in ("oracle", "self-oracle")}
    configs = [c.strip() for c in args.configs.split(";") if c.strip()]
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    for spec in configs:
        LengthConfig.parse(spec)  # one line for a bad configuration before any model loads
    for policy in policies:
        apply_tail(LengthConfig.keep_all(1), policy)
    searched, heldout = split_by_article(load_squad(args.data))
    data = limit_examples(heldout if args.split == "held-out" else searched, args.questions)
    rows = []
    for model in args.models.split(","):
        rows.extend(run_model(model.strip(), data, configs, policies, oracles))
    for row in rows:
        row["split"] = args.split
        if row.get("f1_delta") is not None:
            figures[f"f1_delta[{row['model']}, {row['config']}@{row['policy']}]"] = row["f1_delta"]
    write(rows, Path(args.out))


if __name__ == "__main__":
    sys.exit(main())
