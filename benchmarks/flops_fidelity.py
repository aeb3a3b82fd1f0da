"""Benchmark 3: does a FLOPs speedup turn into a latency speedup at batch 1 on this CPU?

For configurations with >= 2x fewer FLOPs than keep-all, fidelity = measured latency speedup
over keep-all / FLOPs speedup on the same features (target >= 0.8). Three readings per
configuration, all from one run with the contenders alternating on every feature:

- ``own``: against this engine's own keep-all, both with the native kernels — how much of
  the FLOPs saving reaches the clock when both sides run the same GEMM code (the fair reading);
- ``stock``: against the stock Hugging Face forward (torch's GEMM), what a user switching from
  the stock model sees; the kernel's speed at full length counts here too;
- ``torch ops``: the engine with its kernels off (torch's GEMM and attention ops) against stock,
  the reading before the kernels.

``--device cuda`` times on a GPU, each call synchronized before its clock stops. The native
kernels are CPU kernels, so there the engine always runs torch's ops: ``own`` and ``stock`` are
read, the ``torch ops`` column would repeat ``own`` and is left out, and ``--threads`` does not
apply (one pass). ``--batch-sizes`` measures batches of features of similar length as well.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

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
from dynlen.engine.costs import total_flops
from dynlen.engine.kernels import native_kernels
from dynlen.errors import UserError

CONFIGS = [
    "ratios:1,0.6,0.36,0.216,0.1296,0.07776",
    "ratios:0.7,0.5,0.35,0.25,0.18,0.12",
    "269,253,252,202,104,34",
    "ratios:1,1,0.5,0.3,0.2,0.1",
]


_thread_counts = positive_int_list("thread counts", "2,1")
_batch_sizes = positive_int_list("batch sizes", "1,32")


def frontier_configs(path: Path, minimum: float) -> list[str]:
    """The search frontier's configurations whose recorded FLOPs speedup over keep-all reaches ``minimum``."""
    if not path.is_file():
        raise UserError(
            f"{path} not found; give a report's frontier.csv (make pareto writes results/<run>/frontier.csv)"
        )
    with path.open() as fh:
        reader = csv.DictReader(fh)
        needed = {"label", "flops_speedup_vs_keep_all"}
        if not needed <= set(reader.fieldnames or ()):
            raise UserError(
                f"{path} lacks the columns {', '.join(sorted(needed))}; give a frontier.csv written by dynlen's reports"
            )
        rows = [r for r in reader if float(r["flops_speedup_vs_keep_all"]) >= minimum]
    return [r["label"] for r in rows]


QUESTIONS = 600  # the first dev questions; their features are the timed sample


def build_parser() -> argparse.ArgumentParser:
    parser = harness.parser(__doc__, "model", "data", "device", out="runs/flops_fidelity", questions=QUESTIONS)
    parser.add_argument(
        "--features",
        type=int,
        default=48,
        help="features timed, spread evenly over the length range (default: %(default)s)",
    )
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed rounds after one warm-up round (default: %(default)s)"
    )
    parser.add_argument("--configs", default=";".join(CONFIGS), help="';'-separated configurations")
    parser.add_argument(
        "--frontier",
        type=Path,
        default=None,
        help="also measure this frontier.csv's configurations with >= 2x FLOPs speedup",
    )
    parser.add_argument(
        "--threads",
        type=_thread_counts,
        default=[torch.get_num_threads()],
        help="comma-separated torch thread counts to measure under, one after the other (CPU only; ignored on cuda)",
    )
    parser.add_argument(
        "--batch-sizes",
        type=_batch_sizes,
        default=[1],
        help="comma-separated batch sizes; batches hold features of similar length (default: 1)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return harness.run(_run, args, argv, __file__)


def _run(args: argparse.Namespace, figures: harness.Figures) -> None:
    if args.features < 1 or args.repeats < 1:
        raise UserError("--features and --repeats must be at least 1")
    device = resolve_device(args.device)
    quiet_libraries()
    specs = args.configs.split(";") + (frontier_configs(args.frontier, 2.0) if args.frontier else [])
    configs = list({c.label(): c for c in (LengthConfig.parse(spec) for spec in specs)}.values())  # each once
    runner = QARunner(args.model, limit_examples(load_squad(args.data), QUESTIONS), progress=False, device=device)
    if device.type != "cpu":
        if len(args.threads) > 1:
            print(f"note: --threads does not apply on {device.type}; measuring once")
        for batch_size in args.batch_sizes:
            measure(runner, configs, args, "off (CPU kernels; torch ops on the GPU)", batch_size, figures)
        return
    kernel = "on" if native_kernels() is not None else "unavailable"
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch_size in args.batch_sizes:
            measure(runner, configs, args, kernel, batch_size, figures)


def measure(
    runner: QARunner,
    configs: list[LengthConfig],
    args: argparse.Namespace,
    kernel: str,
    batch_size: int = 1,
    figures: harness.Figures | None = None,
) -> None:
    """One table: every configuration against keep-all and stock (and torch ops on the CPU)."""
    device = runner.device
    on_cpu = device.type == "cpu"
    picks = runner.latency_sample(args.features)  # in length order, so a batch holds similar lengths
    lengths = [runner.features.lengths[i] for i in picks]
    batches = [
        to_device(collate(runner.features, picks[i : i + batch_size], runner.pad_id), device)
        for i in range(0, len(picks), batch_size)
    ]
    keep_all = LengthConfig.keep_all(runner.num_layers)
    fast, plain = runner.adaptive, LengthAdaptiveQA(runner.model, kernels=False)
    sync = device_synchronizer(device)
    where = f"{torch.get_num_threads()} threads" if on_cpu else describe_device(device)
    print(
        f"model {args.model}, batch {batch_size}, {len(picks)} dev features (mean {sum(lengths) / len(lengths):.0f} "
        f"tokens) in {len(batches)} batches, device {device.type}, {where}, {args.repeats} rounds alternating on "
        f"every batch, native kernels {kernel}"
    )
    gemm_head = f" {'torch ops':>9}" if on_cpu else ""
    print(
        f"{'configuration':44} {'FLOPs':>6}  {'fidelity own':>12} {'stock':>6}{gemm_head}   "
        f"latency speedups own, stock{', torch ops' if on_cpu else ''} (median, min-max)"
    )
    for config in configs:
        flops_speedup = total_flops(runner.shape, keep_all, lengths) / total_flops(runner.shape, config, lengths)

        named = {"stock": runner.model, "keep_all": (fast, keep_all), "config": (fast, config)}
        pairs = [("keep_all", "config"), ("stock", "config")]
        if on_cpu:
            named["config_torch_ops"] = (plain, config)
            pairs.append(("stock", "config_torch_ops"))
        with torch.inference_mode():
            t = interleaved_batch_timings(
                contenders(**named), batches, repeats=args.repeats, warmup=1, synchronize=sync
            )
        readings = [ratio(t[ref], t[cand]) for ref, cand in pairs]
        flag = "" if flops_speedup >= 2 else "   (< 2x FLOPs: outside the target's scope)"
        spans = "  ".join(f"{r.median:.2f} ({min(r.values):.2f}-{max(r.values):.2f})" for r in readings)
        fidelity = f"{readings[0].median / flops_speedup:12.2f} {readings[1].median / flops_speedup:6.2f}"
        if on_cpu:
            fidelity += f" {readings[2].median / flops_speedup:9.2f}"
        print(f"{config.label():44} {flops_speedup:5.2f}x  {fidelity}   {spans}{flag}")
        if figures is not None:
            figures[f"fidelity_own[{config.label()}, batch {batch_size}, {where}]"] = readings[0].median / flops_speedup


if __name__ == "__main__":
    sys.exit(main())
