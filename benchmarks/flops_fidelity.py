"""Benchmark 3: does a FLOPs speedup turn into a latency speedup at batch 1 on this CPU?

For configurations with >= 2x fewer FLOPs than keep-all, fidelity = measured latency speedup
over the stock keep-all model / FLOPs speedup on the same features (target >= 0.8).
"""

from __future__ import annotations

import argparse

import torch

from bench.config import LengthConfig
from bench.model_io import DEFAULT_MODEL_DIR, quiet_libraries
from bench.costs import total_flops
from bench.runner import QARunner
from bench.squad import limit_examples, load_squad

CONFIGS = ["ratios:1,0.6,0.36,0.216,0.1296,0.07776", "ratios:0.7,0.5,0.35,0.25,0.18,0.12",
           "269,253,252,202,104,34", "ratios:1,1,0.5,0.3,0.2,0.1"]


def _thread_counts(text: str) -> list[int]:
    try:
        counts = [int(t) for t in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive thread counts, e.g. 2,1")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL_DIR)
    parser.add_argument("--data", default="../shared/data/squad/dev-v1.1.json")
    parser.add_argument("--features", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--configs", default=";".join(CONFIGS), help="';'-separated configurations")
    parser.add_argument("--threads", type=_thread_counts, default=[torch.get_num_threads()],
                        help="comma-separated torch thread counts to measure under, one after the other")
    args = parser.parse_args()
    quiet_libraries()
    runner = QARunner(args.model, limit_examples(load_squad(args.data), 600), progress=False)
    for threads in args.threads:
        torch.set_num_threads(threads)
        measure(runner, args)


def measure(runner: QARunner, args: argparse.Namespace) -> None:
    picks = runner.latency_sample(args.features)
    lengths = [runner.features.lengths[i] for i in picks]
    keep_all = LengthConfig.keep_all(runner.num_layers)
    print(f"model {args.model}, batch 1, {len(picks)} dev features (mean {sum(lengths) / len(lengths):.0f} tokens), "
          f"{torch.get_num_threads()} threads, {args.repeats} interleaved rounds")
    for spec in args.configs.split(";"):
        config = LengthConfig.parse(spec)
        flops_speedup = total_flops(runner.shape, keep_all, lengths) / total_flops(runner.shape, config, lengths)
        lat = runner.latency(config, sample=args.features, batch_size=1, repeats=args.repeats, with_bert_base=False)
        fidelity = lat.vs_keep_all.median / flops_speedup
        flag = "" if flops_speedup >= 2 else "  (FLOPs speedup < 2x: outside the target's scope)"
        print(f"{config.label():44} FLOPs {flops_speedup:.2f}x  latency {lat.vs_keep_all}  fidelity {fidelity:.2f}{flag}")


if __name__ == "__main__":
    main()
