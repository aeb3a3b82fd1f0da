"""Is bf16 native on this CPU? The training-shaped matrix product timed in float32 and bf16.

``--precision auto`` trains in bf16 only where the hardware computes it natively; this is the
measurement behind that rule. One GEMM of the shape a MiniLM training step spends most of its time
in (batch 16 x ~176 tokens = 2,816 rows, hidden 384, FFN 1,536), float32 and bf16 timed in
alternating rounds so both see the same machine load. Reported: median GFLOP/s per dtype (2 FLOPs
per multiply-add), the paired float32/bf16 time ratio per round (median, min, max), and whether
torch reports AVX512-BF16 or AMX. On CPUs with them bf16 is faster; on AVX2-only CPUs it is
emulated and far slower, which is why ``auto`` falls back to float32 there.

Writes ``gemm_precision.json`` and ``gemm_precision.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from dynlen.bench import harness
from dynlen.training.trainer import hardware_has_bf16

SHAPE = (2816, 384, 1536)  # rows, inner, columns


def seconds_per_product(a: torch.Tensor, b: torch.Tensor, repeats: int) -> float:
    """Mean seconds of ``repeats`` products after one warm-up."""
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return (time.perf_counter() - started) / repeats


def measure(rounds: int, threads: int | None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    rows, inner, cols = SHAPE
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(rows, inner, generator=generator)
    b = torch.randn(inner, cols, generator=generator)
    pairs = {"float32": (a, b), "bfloat16": (a.bfloat16(), b.bfloat16())}
    times: dict[str, list[float]] = {name: [] for name in pairs}
    flops = 2 * rows * inner * cols
    for _ in range(rounds):
        for name, (x, y) in pairs.items():
            # bf16 emulation can be ~100x slower: one product per round keeps the run short there
            repeats = 10 if name == "float32" else 1
            times[name].append(seconds_per_product(x, y, repeats))
    ratios = [bf / fp for fp, bf in zip(times["float32"], times["bfloat16"])]
    return {
        "shape": list(SHAPE),
        "threads": torch.get_num_threads(),
        "native_bf16": hardware_has_bf16(torch.device("cpu")),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gflops": {name: flops / statistics.median(t) / 1e9 for name, t in times.items()},
        "bf16_time_over_fp32": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
        "rounds": rounds,
    }


def markdown(result: dict) -> str:
    ratio = result["bf16_time_over_fp32"]
    rows, inner, cols = result["shape"]
    return "\n".join(
        [
            f"GEMM {rows} x {inner} x {cols}, {result['threads']} threads, CPU capability "
            f"{result['cpu_capability']}, native bf16: {'yes' if result['native_bf16'] else 'no'}",
            "",
            "| dtype | GFLOP/s (median) |",
            "|---|---|",
            *(f"| {name} | {value:.1f} |" for name, value in result["gflops"].items()),
            "",
            f"bf16 time / float32 time: {ratio['median']:.2f}x (min {ratio['min']:.2f}, max {ratio['max']:.2f}, "
            f"{result['rounds']} rounds)",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__.split("\n\n")[0], "threads", out="results/gemm-precision")
    parser.add_argument("--rounds", type=int, default=7, help="alternating float32/bf16 rounds (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return harness.run(_run, args, argv, __file__)


def _run(args: argparse.Namespace, figures: harness.Figures) -> None:
    result = measure(args.rounds, args.threads)
    figures["bf16_time_over_fp32"] = result["bf16_time_over_fp32"]
    figures.update({f"gflops[{name}]": value for name, value in result["gflops"].items()})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gemm_precision.json").write_text(json.dumps(result, indent=2))
    (out / "gemm_precision.md").write_text(markdown(result) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    sys.exit(main())
