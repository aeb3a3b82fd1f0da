"""Benchmark 2: the length-adaptive forward with keep-all vs the stock forward (target ratio <= 1.05)."""

from __future__ import annotations

import argparse

import torch

from bench.adaptive import LengthAdaptiveQA
from bench.config import LengthConfig
from bench.features import collate
from bench.latency import interleaved_batch_timings, ratio
from bench.model_io import DEFAULT_MODEL_DIR, quiet_libraries
from bench.runner import QARunner
from bench.squad import limit_examples, load_squad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL_DIR)
    parser.add_argument("--data", default="../shared/data/squad/dev-v1.1.json")
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    quiet_libraries()
    runner = QARunner(args.model, limit_examples(load_squad(args.data), 400), progress=False)
    picks = runner.latency_sample(args.features)
    keep_all = LengthConfig.keep_all(runner.num_layers)
    adaptive: LengthAdaptiveQA = runner.adaptive
    plain = LengthAdaptiveQA(runner.model, kernels=False)
    print(f"model {args.model}, {len(picks)} dev features spread over the length range, {torch.get_num_threads()} threads")
    print(f"max |logit difference| from stock over these features at batch 1: small-GEMM kernel "
          f"{max_logit_difference(runner, picks, adaptive):.2e}, torch GEMM {max_logit_difference(runner, picks, plain):.2e}")
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        batches = [collate(runner.features, picks[i : i + bs], runner.pad_id) for i in range(0, len(picks), bs)]

        def stock(b):
            runner.model(**b)

        def ours(b):
            adaptive(b["input_ids"], b["attention_mask"], b["token_type_ids"], keep_all)

        def ours_torch_gemm(b):
            plain(b["input_ids"], b["attention_mask"], b["token_type_ids"], keep_all)

        contenders = {"stock": stock, "adaptive_keep_all": ours, "adaptive_keep_all_torch_gemm": ours_torch_gemm}
        with torch.inference_mode():
            t = interleaved_batch_timings(contenders, batches, repeats=args.repeats, warmup=1)
        print(f"batch {bs:>3}: stock {1000 * t['stock'].median / len(picks):.2f} ms/feature, adaptive keep-all "
              f"{1000 * t['adaptive_keep_all'].median / len(picks):.2f} ms/feature")
        print(f"   latency ratio adaptive/stock, torch GEMM (the wiring's own overhead): "
              f"{ratio(t['adaptive_keep_all_torch_gemm'], t['stock'])}")
        print(f"   latency ratio adaptive/stock, small-GEMM kernel (what users run):    "
              f"{ratio(t['adaptive_keep_all'], t['stock'])}")


def max_logit_difference(runner: QARunner, picks: list[int], engine: LengthAdaptiveQA) -> float:
    """Largest start/end logit gap between ``engine`` at keep-all and the stock model."""
    worst = 0.0
    with torch.inference_mode():
        for i in picks:
            b = collate(runner.features, [i], runner.pad_id)
            ours = engine(b["input_ids"], b["attention_mask"], b["token_type_ids"])
            stock = runner.model(**b)
            for a, c in ((ours.start_logits, stock.start_logits), (ours.end_logits, stock.end_logits)):
                worst = max(worst, (a - c).abs().max().item())
    return worst


if __name__ == "__main__":
    main()
