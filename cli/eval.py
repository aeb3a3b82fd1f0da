"""``dynlen eval``: one model x data x configuration -> metrics.json + predictions.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dynlen.atomic import writable_folder, write_text_atomic
from dynlen.bench.device import DEVICE_CHOICES, resolve_device
from dynlen.bench.metrics import metrics_record
from dynlen.bench.model_io import DEFAULT_MODEL_DIR
from dynlen.bench.runner import QARunner
from dynlen.bench.squad import DEFAULT_DEV_SET, limit_examples, load_squad
from dynlen.cli.answer import add_loading_arguments, loading_options
from dynlen.cli.argtypes import int_at_least, threads
from dynlen.engine.config import resolve_config
from dynlen.engine.costs import check_flops_consistent

HELP = "evaluate one model x data x length configuration"
DESCRIPTION = (
    "Evaluate one model x SQuAD data x length configuration; writes "
    "OUT/metrics.json (EM, F1, FLOPs, speedups, latency, tokens kept) and "
    "OUT/predictions.json (official SQuAD format)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL_DIR,
        help="*ForQuestionAnswering model: local folder or hub id (default: %(default)s, built by `make model`)",
    )
    parser.add_argument(
        "--data",
        default=DEFAULT_DEV_SET,
        help="SQuAD 1.1 JSON file, or hub:rajpurkar/squad[:split] where the hub is reachable (default: %(default)s)",
    )
    parser.add_argument(
        "--config",
        default="keep-all",
        help="length configuration: 'keep-all', a JSON file, or inline values such as "
        "'269,253,252,202,104,34' (counts at 384) or 'ratios:1,0.9,0.8,0.7,0.6,0.5' (default: %(default)s)",
    )
    parser.add_argument(
        "--limit", type=int_at_least(1), default=None, help="evaluate only the first N questions (default: all)"
    )
    parser.add_argument(
        "--out", default="runs/eval", help="folder for metrics.json and predictions.json (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size",
        type=int_at_least(1),
        default=32,
        help="evaluation batch size, length-sorted with dynamic padding (default: %(default)s)",
    )
    parser.add_argument("--threads", type=threads, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--device",
        choices=DEVICE_CHOICES,
        default="auto",
        help="where the model runs: 'cuda' (an NVIDIA GPU), 'cpu', or 'auto' = cuda when torch "
        "sees a GPU, else cpu; answers are always extracted and scored on the CPU (default: %(default)s)",
    )
    parser.add_argument(
        "--latency-sample", type=int_at_least(1), default=16, help="features timed for latency (default: %(default)s)"
    )
    parser.add_argument(
        "--latency-batch-size",
        type=int_at_least(1),
        default=1,
        help="batch size for latency timing (default: %(default)s)",
    )
    parser.add_argument(
        "--latency-repeats",
        type=int_at_least(1),
        default=5,
        help="timed rounds after one warm-up round (default: %(default)s)",
    )
    parser.add_argument("--no-latency", action="store_true", help="skip latency timing (FLOPs are still exact)")
    parser.add_argument(
        "--no-bert-base-latency",
        action="store_true",
        help="do not time the BERT-base reference (it is the slowest part)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_loading_arguments(parser)


def run(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)  # before loading anything: a missing GPU is one line, at once
    resolve_config(args.config, 1)  # the configuration's values, before data or model load (depth: below)
    out = writable_folder(Path(args.out))  # a read-only or full --out is found now, not after the evaluation
    data = limit_examples(load_squad(args.data), args.limit)
    runner = QARunner(
        args.model,
        data,
        batch_size=args.batch_size,
        threads=args.threads,
        progress=not args.quiet,
        device=device,
        load_options=loading_options(args),
    )
    config = resolve_config(args.config, runner.num_layers)
    config.check_layers(runner.num_layers, args.model)
    result = runner.evaluate(config)
    check_flops_consistent(runner, config, result.tokens_kept_per_layer)
    latency = None
    if not args.no_latency:
        latency = runner.latency(
            config,
            sample=args.latency_sample,
            batch_size=args.latency_batch_size,
            repeats=args.latency_repeats,
            with_bert_base=not args.no_bert_base_latency,
            with_stock=True,
        )
    record = metrics_record(runner, result, latency)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        out / "predictions.json", json.dumps({q: a["text"] for q, a in result.answers.items()}, indent=1) + "\n"
    )
    write_text_atomic(out / "metrics.json", json.dumps(record, indent=2) + "\n")
    _print_summary(record, out)


def _print_summary(record: dict, out: Path) -> None:
    sp = record["speedups"]
    fl = record["flops"]["dynamic_padding"]
    print(
        f"{record['model']} on {record['data']} ({record['questions']} questions, {record['features']} features), "
        f"device {record['device']}"
    )
    print(f"config {record['config_label']}")
    print(f"EM {record['exact_match']:.2f}  F1 {record['f1']:.2f}  ({record['questions_per_second']:.1f} questions/s)")
    print(
        f"FLOPs/question {fl['gflops_per_question']:.3f} GFLOPs ({fl['gflops_per_question'] / 2:.3f} GMACs); "
        f"speedup vs BERT-base {sp['flops_vs_bert_base']:.2f}x, vs keep-all {sp['flops_vs_keep_all']:.2f}x "
        f"(padded-384 convention: {sp['flops_vs_bert_base_padded384']:.2f}x, {sp['flops_vs_keep_all_padded384']:.2f}x)"
    )
    if record["latency"]:
        lat = record["latency"]
        line = (
            f"latency {lat['ms_per_feature']:.1f} ms/feature at batch {lat['batch_size']}; vs keep-all "
            f"{lat['speedup_vs_keep_all']['median']:.2f}x (min {lat['speedup_vs_keep_all']['min']:.2f}, max {lat['speedup_vs_keep_all']['max']:.2f})"
        )
        if "speedup_vs_bert_base" in lat:
            b = lat["speedup_vs_bert_base"]
            line += f"; vs BERT-base {b['median']:.2f}x (min {b['min']:.2f}, max {b['max']:.2f})"
        if "speedup_vs_stock" in lat:
            line += f"; vs the stock forward {lat['speedup_vs_stock']['median']:.2f}x"
        print(line)
    print(f"tokens kept per layer: {', '.join(f'{t:.1f}' for t in record['tokens_kept_per_layer'])}")
    print(f"wrote {out / 'metrics.json'} and {out / 'predictions.json'}")
