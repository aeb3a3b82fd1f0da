"""GFLOP/s of the small-GEMM kernel against torch's GEMM, by number of rows, weights cold.

Twelve different (384 -> 1536 -> 384) weight pairs are cycled, as an encoder's layers are, so the
weights come from memory rather than cache, as they do at batch 1 in a real forward. The two
implementations alternate on every repeat; medians are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from dynlen.bench import harness
from dynlen.cli.argtypes import positive_int_list
from dynlen.engine.kernels import native_kernels, unavailable_reason
from dynlen.errors import UserError

_row_counts = positive_int_list("row counts", "8,16,150")


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__, "threads", out="runs/small_gemm_throughput")
    parser.add_argument(
        "--rows", type=_row_counts, default=[4, 8, 16, 32, 64, 150, 384], help="comma-separated row counts"
    )
    parser.add_argument("--repeats", type=int, default=15, help="alternating timed repeats (default: %(default)s)")
    return harness.run(_run, parser.parse_args(argv), argv, __file__)


def _run(args: argparse.Namespace, figures: harness.Figures) -> None:
    args.threads = args.threads or torch.get_num_threads()
    kernel = native_kernels()
    if kernel is None:
        raise UserError(f"the small-GEMM kernel is not available here: {unavailable_reason() or 'its build failed'}")
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    pairs = [
        (
            (torch.randn(1536, 384, generator=g), torch.randn(1536, generator=g)),
            (torch.randn(384, 1536, generator=g), torch.randn(384, generator=g)),
        )
        for _ in range(12)
    ]
    packed = [(kernel.pack_weight(*up), kernel.pack_weight(*down)) for up, down in pairs]
    print(f"{args.threads} threads; GFLOP/s over 12 cold (384->1536->384) pairs, median of {args.repeats}")
    print(f"{'rows':>5} {'torch GEMM':>11} {'kernel':>8} {'ratio':>6}")
    for rows in args.rows:
        x = torch.randn(rows, 384, generator=g)

        def torch_gemm(x=x):
            for (w1, b1), (w2, b2) in pairs:
                F.linear(F.linear(x, w1, b1), w2, b2)

        def ours(x=x):
            for (p1, c1), (p2, c2) in packed:
                kernel.packed_linear(kernel.packed_linear(x, p1, c1), p2, c2)

        spent = {"torch": [], "kernel": []}
        with torch.inference_mode():
            torch_gemm(), ours()
            for _ in range(args.repeats):
                for name, fn in (("torch", torch_gemm), ("kernel", ours)):
                    start = time.perf_counter()
                    fn()
                    spent[name].append(time.perf_counter() - start)
        flops = 12 * 2 * 2 * rows * 384 * 1536
        rate = {name: flops / statistics.median(v) / 1e9 for name, v in spent.items()}
        figures[f"kernel_over_torch_gemm[{rows} rows]"] = rate["kernel"] / rate["torch"]
        print(f"{rows:>5} {rate['torch']:>11.1f} {rate['kernel']:>8.1f} {rate['kernel'] / rate['torch']:>5.2f}x")


if __name__ == "__main__":
    sys.exit(main())
