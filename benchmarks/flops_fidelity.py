"""Benchmark 3: does a FLOPs speedup turn into a latency speedup at batch 1 on this CPU?

For configurations with >= 2x fewer FLOPs than keep-all, fidelity = measured latency speedup
over keep-all / FLOPs speedup on the same features (target >= 0.8). Three readings per
configuration, all from one run with the contenders alternating on every feature:

- ``own``: against this engine's own keep-all, both with the small-GEMM kernel — how much of
  the FLOPs saving reaches the clock when both sides run the same GEMM code (the fair reading);
- ``stock``: against the stock Hugging Face forward (torch's GEMM), what a user switching from
  the stock model sees; the kernel's speed at full length counts here too;
- ``torch GEMM``: the engine without the kernel against stock, the reading before the kernel.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

from bench.adaptive import LengthAdaptiveQA
from bench.config import LengthConfig
from bench.costs import total_flops
from bench.errors import UserError, exit_status
from bench.features import collate
from bench.kernels import small_gemm
from bench.latency import interleaved_batch_timings, ratio
from bench.model_io import DEFAULT_MODEL_DIR, quiet_libraries
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


def frontier_configs(path: Path, minimum: float) -> list[str]:
    """The search frontier's configurations whose recorded FLOPs speedup over keep-all reaches ``minimum``."""
    if not path.is_file():
        raise UserError(f"{path} not found; give a report's frontier.csv (make pareto writes reports/<run>/frontier.csv)")
    with path.open() as fh:
        reader = csv.DictReader(fh)
        needed = {"label", "flops_speedup_vs_keep_all"}
        if not needed <= set(reader.fieldnames or ()):
            raise UserError(f"{path} lacks the columns {', '.join(sorted(needed))}; give a frontier.csv written by dynlen's reports")
        rows = [r for r in reader if float(r["flops_speedup_vs_keep_all"]) >= minimum]
    return [r["label"] for r in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL_DIR)
    parser.add_argument("--data", default="../shared/data/squad/dev-v1.1.json")
    parser.add_argument("--features", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--configs", default=";".join(CONFIGS), help="';'-separated configurations")
    parser.add_argument("--frontier", type=Path, default=None,
                        help="also measure this frontier.csv's configurations with >= 2x FLOPs speedup")
    parser.add_argument("--threads", type=_thread_counts, default=[torch.get_num_threads()],
                        help="comma-separated torch thread counts to measure under, one after the other")
    args = parser.parse_args()
    return exit_status(lambda: _run(args))


def _run(args: argparse.Namespace) -> None:
    quiet_libraries()
    specs = args.configs.split(";") + (frontier_configs(args.frontier, 2.0) if args.frontier else [])
    configs = list({c.label(): c for c in (LengthConfig.parse(spec) for spec in specs)}.values())  # each once
    runner = QARunner(args.model, limit_examples(load_squad(args.data), 600), progress=False)
    kernel = "on" if small_gemm() is not None else "unavailable"
    for threads in args.threads:
        torch.set_num_threads(threads)
        measure(runner, configs, args, kernel)


def measure(runner: QARunner, configs: list[LengthConfig], args: argparse.Namespace, kernel: str) -> None:
    picks = runner.latency_sample(args.features)
    lengths = [runner.features.lengths[i] for i in picks]
    batches = [collate(runner.features, [i], runner.pad_id) for i in picks]
    keep_all = LengthConfig.keep_all(runner.num_layers)
    fast, plain = runner.adaptive, LengthAdaptiveQA(runner.model, kernels=False)
    print(f"model {args.model}, batch 1, {len(picks)} dev features (mean {sum(lengths) / len(lengths):.0f} tokens), "
          f"{torch.get_num_threads()} threads, {args.repeats} rounds alternating on every feature, small-GEMM kernel {kernel}")
    print(f"{'configuration':44} {'FLOPs':>6}  {'fidelity own':>12} {'stock':>6} {'torch GEMM':>10}   latency speedups (median, min-max)")
    for config in configs:
        flops_speedup = total_flops(runner.shape, keep_all, lengths) / total_flops(runner.shape, config, lengths)

        def call(engine, cfg):
            return lambda b: engine(b["input_ids"], b["attention_mask"], b["token_type_ids"], cfg)

        contenders = {"stock": lambda b: runner.model(**b), "keep_all": call(fast, keep_all),
                      "config": call(fast, config), "config_torch_gemm": call(plain, config)}
        with torch.inference_mode():
            t = interleaved_batch_timings(contenders, batches, repeats=args.repeats, warmup=1)
        own, stock, torch_gemm = (ratio(t[ref], t[cand]) for ref, cand in
                                  (("keep_all", "config"), ("stock", "config"), ("stock", "config_torch_gemm")))
        flag = "" if flops_speedup >= 2 else "   (< 2x FLOPs: outside the target's scope)"
        spans = "  ".join(f"{r.median:.2f} ({min(r.values):.2f}-{max(r.values):.2f})" for r in (own, stock, torch_gemm))
        print(f"{config.label():44} {flops_speedup:5.2f}x  {own.median / flops_speedup:12.2f} "
              f"{stock.median / flops_speedup:6.2f} {torch_gemm.median / flops_speedup:10.2f}   {spans}{flag}")


if __name__ == "__main__":
    sys.exit(main())
