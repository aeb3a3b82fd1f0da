"""``dynlen choose``: the best configuration of a finished run for a budget, as JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from dynlen.search.budget import SYNTAX, parse_budget
from dynlen.search.choose import NothingMeetsBudget, choose, export_model, write_choice

HELP = "pick the best configuration of a run for a budget"
DESCRIPTION = (
    "Read a finished run and print the configuration with the highest held-out F1 "
    "that meets the budget; write it as JSON that `dynlen answer --config` "
    "and `dynlen.bench.answer.Answerer` accept. Exits 1 when nothing meets the budget."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run folder (e.g. reports/default) or its name under reports/")
    parser.add_argument("--budget", default=None, help=f"{SYNTAX} (default: none)")
    parser.add_argument("--out", default=None, help="output JSON (default: RUN/chosen.json)")
    parser.add_argument(
        "--export",
        default=None,
        help="also write a Hugging Face model folder that serves the choice by itself (weights, tokenizer, "
        "probes, the configuration in config.json, its own modeling file and, where torch.export takes it, "
        "dynlen_exported.pt2; its README.md says how to load each) (default: none)",
    )


def _run_dir(name: str) -> Path:
    path = Path(name)
    return path if path.exists() or "/" in name else Path("results") / name


def run(args: argparse.Namespace) -> int:
    run_dir = _run_dir(args.run)
    budget = parse_budget(args.budget)
    try:
        best, record = choose(run_dir, budget)
    except NothingMeetsBudget as exc:
        print(str(exc))
        return 1
    out = Path(args.out) if args.out else run_dir / "chosen.json"
    write_choice(record, out)
    h = best.heldout
    lat = f", latency {h.latency_speedup_vs_keep_all:.2f}x" if h.latency_speedup_vs_keep_all else ""
    print(f"budget {budget or 'none'}: {best.label}")
    if record.get("smoke_model"):
        print(f"({record['smoke_model']}: these scores show the path runs)")
    print(
        f"held-out EM {h.exact_match:.2f} F1 {h.f1:.2f}; vs keep-all: FLOPs {h.flops_speedup_vs_keep_all:.2f}x{lat}; "
        f"vs BERT-base: FLOPs {h.flops_speedup_vs_bert_base:.2f}x"
        + (f", latency {h.latency_speedup_vs_bert_base:.2f}x" if h.latency_speedup_vs_bert_base else "")
    )
    if h.f1_delta_low is not None:
        print(
            f"F1 minus keep-all on the same held-out questions: 95% interval [{h.f1_delta_low:+.2f}, "
            f"{h.f1_delta_high:+.2f}] (paired bootstrap)"
        )
    print(f"wrote {out}")
    if args.export:
        print(f"wrote {export_model(record, Path(args.export))} (serve it: dynlen answer --model {args.export} ...)")
    return 0
