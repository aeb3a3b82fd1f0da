"""Benchmark 2: the length-adaptive forward with keep-all vs the stock forward (target ratio <= 1.05).

On the CPU two engines are timed against stock: with torch's GEMM (the wiring's own cost) and
with the small-GEMM kernel (what users run). On a CUDA GPU the kernel never runs (it is a CPU
kernel), so there is one engine and one ratio; every call is synchronized before its clock stops.
"""

from __future__ import annotations

import argparse
import sys

import torch

from dynlen.bench import harness
from dynlen.bench.device import describe_device, resolve_device, to_device
from dynlen.bench.features import collate
from dynlen.bench.latency import contenders, device_synchronizer, interleaved_batch_timings, ratio
from dynlen.bench.model_io import quiet_libraries
from dynlen.bench.runner import QARunner
from dynlen.bench.squad import limit_examples, load_squad
from dynlen.cli.argtypes import positive_int_list
from dynlen.engine.adaptive import LengthAdaptiveQA
from dynlen.engine.config import LengthConfig
from dynlen.errors import UserError

_batch_sizes = positive_int_list("batch sizes", "1,16")


QUESTIONS = 400  # the first dev questions; their features are the timed sample


def build_parser() -> argparse.ArgumentParser:
    parser = harness.parser(__doc__, "model", "data", "device", out="runs/keep_all_overhead", questions=QUESTIONS)
    parser.add_argument(
        "--features",
        type=int,
        default=32,
        help="features timed, spread evenly over the length range (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-sizes",
        type=_batch_sizes,
        default=[1, 16],
        help="comma-separated batch sizes, measured one after the other (default: 1,16)",
    )
    parser.add_argument(
        "--repeats", type=int, default=9, help="timed rounds after one warm-up round (default: %(default)s)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return harness.run(run, args, argv, __file__)


def run(args: argparse.Namespace, figures: harness.Figures) -> None:
    if args.features < 1 or args.repeats < 1:
        raise UserError("--features and --repeats must be at least 1")
    device = resolve_device(args.device)
    quiet_libraries()
    runner = QARunner(args.model, limit_examples(load_squad(args.data), QUESTIONS), progress=False, device=device)
    picks = runner.latency_sample(args.features)
    keep_all = LengthConfig.keep_all(runner.num_layers)
    adaptive: LengthAdaptiveQA = runner.adaptive
    on_cpu = device.type == "cpu"
    plain = LengthAdaptiveQA(runner.model, kernels=False) if on_cpu else None
    print(
        f"model {args.model}, {len(picks)} dev features spread over the length range, device {describe_device(device)}"
    )
    figures["features"] = len(picks)
    if on_cpu:
        figures["max_logit_difference_kernel"] = max_logit_difference(runner, picks, adaptive)
        figures["max_logit_difference_torch_gemm"] = max_logit_difference(runner, picks, plain)
        print(
            f"max |logit difference| from stock over these features at batch 1: small-GEMM kernel "
            f"{figures['max_logit_difference_kernel']:.2e}, torch GEMM {figures['max_logit_difference_torch_gemm']:.2e}"
        )
    else:
        figures["max_logit_difference"] = max_logit_difference(runner, picks, adaptive)
        print(
            f"max |logit difference| from stock over these features at batch 1 (torch GEMM; the CPU kernel "
            f"does not run on {device.type}): {figures['max_logit_difference']:.2e}"
        )
    sync = device_synchronizer(device)
    for bs in args.batch_sizes:
        batches = [
            to_device(collate(runner.features, picks[i : i + bs], runner.pad_id), device)
            for i in range(0, len(picks), bs)
        ]

        named = {"stock": runner.model, "adaptive_keep_all": (adaptive, keep_all)}
        if plain is not None:
            named["adaptive_keep_all_torch_gemm"] = (plain, keep_all)
        with torch.inference_mode():
            t = interleaved_batch_timings(
                contenders(**named), batches, repeats=args.repeats, warmup=1, synchronize=sync
            )
        print(
            f"batch {bs:>3} on {device.type}: stock {1000 * t['stock'].median / len(picks):.3f} ms/feature, adaptive keep-all "
            f"{1000 * t['adaptive_keep_all'].median / len(picks):.3f} ms/feature ({len(batches)} batches, {args.repeats} rounds)"
        )
        if plain is not None:
            wiring, kernel = (
                ratio(t["adaptive_keep_all_torch_gemm"], t["stock"]),
                ratio(t["adaptive_keep_all"], t["stock"]),
            )
            figures[f"batch_{bs}_latency_over_stock_torch_gemm"] = wiring.median
            figures[f"batch_{bs}_latency_over_stock_kernel"] = kernel.median
            print(f"   latency ratio adaptive/stock, torch GEMM (the wiring's own overhead): {wiring}")
            print(f"   latency ratio adaptive/stock, small-GEMM kernel (what users run):    {kernel}")
        else:
            wiring = ratio(t["adaptive_keep_all"], t["stock"])
            figures[f"batch_{bs}_latency_over_stock"] = wiring.median
            print(f"   latency ratio adaptive/stock on {device.type} (the wiring's own overhead): {wiring}")


def max_logit_difference(runner: QARunner, picks: list[int], engine: LengthAdaptiveQA) -> float:
    """Largest start/end logit gap between ``engine`` at keep-all and the stock model."""
    worst = 0.0
    with torch.inference_mode():
        for i in picks:
            b = to_device(collate(runner.features, [i], runner.pad_id), runner.device)
            ours = engine(b["input_ids"], b["attention_mask"], b["token_type_ids"])
            stock = runner.model(**b)
            for a, c in ((ours.start_logits, stock.start_logits), (ours.end_logits, stock.end_logits)):
                worst = max(worst, (a - c).abs().max().item())
    return worst


if __name__ == "__main__":
    sys.exit(main())
