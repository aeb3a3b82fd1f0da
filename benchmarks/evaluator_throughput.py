"""Benchmark 1: the suite's evaluator vs the way the published anchors evaluate.

Anchor way (Length-Adaptive Transformer / Dynamic-TinyBERT scripts): every feature padded to
384, fixed batches in file order, eager attention, tokenised on every run. Suite way: cached
features, length-sorted batches with dynamic padding, SDPA, ``torch.inference_mode``. Same
model, same questions, same post-processing and metric; timed alternately, medians reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from dynlen.bench import harness
from dynlen.bench.features import build_features, collate
from dynlen.bench.model_io import load_qa_model, load_tokenizer, quiet_libraries
from dynlen.bench.postprocess import predict_answers
from dynlen.bench.runner import QARunner
from dynlen.bench.scoring import squad_scores
from dynlen.bench.squad import limit_examples, load_squad
from dynlen.engine.config import LengthConfig


def anchor_evaluate(model, tokenizer, examples, batch_size: int) -> tuple[dict, float]:
    started = time.perf_counter()
    feats = build_features(examples, tokenizer)
    starts, ends = [], []
    with torch.no_grad():
        for lo in range(0, len(feats), batch_size):
            idx = list(range(lo, min(lo + batch_size, len(feats))))
            batch = collate(feats, idx, tokenizer.pad_token_id or 0, pad_to=384)
            out = model(**batch)
            for row, i in enumerate(idx):
                n = len(feats.input_ids[i])
                starts.append(out.start_logits[row, :n].numpy())
                ends.append(out.end_logits[row, :n].numpy())
    answers = predict_answers(examples, feats, starts, ends)
    seconds = time.perf_counter() - started
    return squad_scores({q: a["text"] for q, a in answers.items()}, examples), seconds


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__, "model", "data", out="runs/evaluator_throughput")
    parser.add_argument("--questions", type=int, default=500, help="first dev questions scored (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="features per batch (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default: %(default)s)")
    return harness.run(run, parser.parse_args(argv), argv, __file__)


def run(args: argparse.Namespace, figures: harness.Figures) -> None:
    quiet_libraries()
    data = limit_examples(load_squad(args.data), args.questions)
    tokenizer = load_tokenizer(args.model)
    anchor_model = load_qa_model(args.model, attn_implementation="eager")
    runner = QARunner(args.model, data, batch_size=args.batch_size, tokenizer=tokenizer, progress=False)
    keep_all = LengthConfig.keep_all(runner.num_layers)
    anchor_times, suite_times = [], []
    for _ in range(args.repeats):
        anchor_scores, t = anchor_evaluate(anchor_model, tokenizer, data.examples, args.batch_size)
        anchor_times.append(t)
        result = runner.evaluate(keep_all)
        suite_times.append(result.seconds)
    n = len(data.examples)
    a, s = statistics.median(anchor_times), statistics.median(suite_times)
    ratios = [x / y for x, y in zip(anchor_times, suite_times)]
    figures.update(
        questions=n,
        features=len(runner.features),
        anchor_questions_per_second=n / a,
        suite_questions_per_second=n / s,
        throughput_ratio=statistics.median(ratios),
        throughput_ratio_min=min(ratios),
        throughput_ratio_max=max(ratios),
        anchor_f1=anchor_scores["f1"],
        suite_f1=result.f1,
    )
    print(
        f"model {args.model}, {n} questions, {len(runner.features)} features, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, {args.repeats} interleaved rounds"
    )
    print(
        f"anchor way (pad 384, fixed batches, eager, tokenise each run): EM {anchor_scores['exact_match']:.2f} "
        f"F1 {anchor_scores['f1']:.2f}  {n / a:.1f} questions/s (median {a:.1f} s)"
    )
    print(
        f"suite way  (cached features, length-sorted, dynamic padding):  EM {result.exact_match:.2f} "
        f"F1 {result.f1:.2f}  {n / s:.1f} questions/s (median {s:.1f} s)"
    )
    print(
        f"throughput ratio suite/anchor: median {statistics.median(ratios):.2f}x "
        f"(min {min(ratios):.2f}, max {max(ratios):.2f}); |dF1| = {abs(result.f1 - anchor_scores['f1']):.3f}, "
        f"|dEM| = {abs(result.exact_match - anchor_scores['exact_match']):.3f}"
    )


if __name__ == "__main__":
    sys.exit(main())
