"""``dynlen eval``: one model x data x configuration -> metrics.json + predictions.json."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from dynlen.atomic import writable_folder, write_text_atomic
from dynlen.bench.device import resolve_device
from dynlen.bench.metrics import metrics_record
from dynlen.bench.model_io import DEFAULT_MODEL_DIR, LoadOptions
from dynlen.bench.runner import QARunner
from dynlen.bench.squad import DEFAULT_DEV_SET, limit_examples, load_squad
from dynlen.cli.options import add_options, values
from dynlen.engine.config import resolve_config
from dynlen.engine.costs import check_flops_consistent
from dynlen.options import int_at_least, option

HELP = "evaluate one model x data x length configuration"
DESCRIPTION = (
    "Evaluate one model x SQuAD data x length configuration; writes "
    "OUT/metrics.json (EM, F1, FLOPs, speedups, latency, tokens kept) and "
    "OUT/predictions.json (official SQuAD format)."
)


@dataclass(frozen=True)
class EvalSettings:
    """What one evaluation measures, each option declared once."""

    model: str = option(
        DEFAULT_MODEL_DIR, "*ForQuestionAnswering model: local folder or hub id (built by `make model`)"
    )
    data: str = option(
        DEFAULT_DEV_SET, "SQuAD 1.1 JSON file, or hub:rajpurkar/squad[:split] where the hub is reachable"
    )
    config: str = option(
        "keep-all",
        "length configuration: 'keep-all', a JSON file, or inline values such as '269,253,252,202,104,34' "
        "(counts at 384) or 'ratios:1,0.9,0.8,0.7,0.6,0.5@lookahead+question'",
    )
    limit: int | None = option(None, "evaluate only the first N questions (default: all)", type=int_at_least(1))
    out: str = option("runs/eval", "folder for metrics.json and predictions.json")
    batch_size: int = option(
        32, "evaluation batch size, length-sorted with dynamic padding", type=int_at_least(1), cli=False
    )
    latency_sample: int = option(16, "features timed for latency", type=int_at_least(1))
    latency_repeats: int = option(5, "timed rounds after one warm-up round", type=int_at_least(1))
    latency_batch_size: int = option(1, "batch size of latency timing", cli=False)
    no_latency: bool = option(False, "skip latency timing (FLOPs are still exact)")
    no_bert_base_latency: bool = option(False, "do not time the BERT-base reference (it is the slowest part)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, EvalSettings)
    add_options(parser.add_argument_group("loading the model"), LoadOptions)


def run(args: argparse.Namespace) -> None:
    settings, load = EvalSettings(**values(EvalSettings, args)), LoadOptions(**values(LoadOptions, args))
    device = resolve_device(load.device)  # before loading anything: a missing GPU is one line, at once
    resolve_config(settings.config, 1)  # the configuration's values, before data or model load (depth: below)
    writable_folder(Path(settings.out))  # a read-only or full --out is found now, not after the evaluation
    data = limit_examples(load_squad(settings.data), settings.limit)
    runner = QARunner(
        settings.model,
        data,
        batch_size=settings.batch_size,
        threads=load.threads,
        progress=not load.quiet,
        device=device,
        load_options=load.from_pretrained(),
    )
    config = resolve_config(settings.config, runner.num_layers)
    config.check_layers(runner.num_layers, settings.model)
    result = runner.evaluate(config)
    check_flops_consistent(runner, config, result.tokens_kept_per_layer)
    latency = None
    if not settings.no_latency:
        latency = runner.latency(
            config,
            sample=settings.latency_sample,
            batch_size=settings.latency_batch_size,
            repeats=settings.latency_repeats,
            with_bert_base=not settings.no_bert_base_latency,
            with_stock=True,
        )
    record = {**metrics_record(runner, result, latency), "loading": load.record()}
    out = Path(settings.out)
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
