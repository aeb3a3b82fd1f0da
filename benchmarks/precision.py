"""Length x precision: what a drop shape buys at each precision, against the stock model, in one run.

For every precision asked (``fp32``, ``bf16``, ...), on the same dev features, interleaved batch
by batch in one run:

* ``stock/P`` -- the stock transformers forward at that dtype (``model.to(dtype)``, sdpa);
* ``keep-all/P`` -- the engine keeping every token at that precision;
* ``CONFIG/P`` -- the engine at each drop shape given;
* ``bert-base/P`` (``--bert-base``) -- a BERT-base QA model of random weights (same latency as a
  trained one), stock, at that dtype.

Every time is a median over rounds of the round's mean ms per feature; every ratio is against
``stock/fp32`` (the field's reference) and, for the shapes, against their own keep-all at the same
precision, each with its spread (the ratio on the slowest and on the fastest round). Batch 1
times one feature per call; larger batches pad each batch to its longest feature (dynamic padding).
Writes ``precision.json`` and ``precision.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
from pathlib import Path

import torch

from dynlen.bench import harness
from dynlen.bench.device import to_device
from dynlen.bench.features import collate
from dynlen.bench.latency import Timing, device_synchronizer, interleaved_batch_timings, ratio
from dynlen.bench.model_io import bert_base_qa, quiet_libraries
from dynlen.bench.runner import QARunner
from dynlen.bench.squad import limit_examples, load_squad, split_by_article
from dynlen.bench.uncertainty import paired_interval
from dynlen.engine.config import LengthConfig, resolve_config
from dynlen.engine.merge_rules import register_merges
from dynlen.engine.precision import get_precision, resolve_precision
from dynlen.errors import UserError

QUESTIONS = 400  # the first dev questions; their features are the timed sample
REFERENCE_SHAPE = "ratios:1,1,0.7,0.49,0.343,0.0515@lookahead+question"


def build_parser() -> argparse.ArgumentParser:
    parser = harness.parser(__doc__, "model", "data", "threads", "device", out="runs/precision", questions=QUESTIONS)
    parser.add_argument(
        "--configs",
        default=REFERENCE_SHAPE,
        help="drop shapes, ';'-separated, without precision (default: %(default)s)",
    )
    parser.add_argument("--precisions", default="fp32,bf16", help="precisions to time, or auto (default: %(default)s)")
    parser.add_argument("--batch-sizes", default="1", help="comma list of batch sizes (default: %(default)s)")
    parser.add_argument("--features", type=int, default=40, help="features timed (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds after one warm-up (default: %(default)s)")
    parser.add_argument("--bert-base", action="store_true", help="also time a random-weight BERT-base (stock)")
    parser.add_argument(
        "--accuracy",
        type=int,
        default=None,
        metavar="N",
        help="also score keep-all and every shape at every precision on the first N held-out questions "
        "(0: the whole held-out half), F1 minus float32 keep-all with its paired 95%% interval (default: off)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also write where each shape's time goes (torch profiler, batch 1)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return harness.run(run, args, argv, __file__)


def _stock(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """An independent copy of the stock model at ``dtype`` on the model's device (the engine keeps its float32 weights)."""
    copy = type(model)._from_config(model.config, attn_implementation="sdpa").eval()
    copy.load_state_dict(model.state_dict())
    return copy.to(next(model.parameters()).device, dtype)


def _stock_call(model: torch.nn.Module):
    def go(batch: dict) -> None:
        model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")})

    return go


def _engine_call(engine, config: LengthConfig):
    def go(batch: dict) -> None:
        engine(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), config)

    return go


def contenders(runner: QARunner, shapes: list[LengthConfig], precisions: list[str], bert_base: bool) -> dict:
    named = {}
    model = runner.adaptive.model
    base = bert_base_qa(runner.tokenizer.vocab_size).to(runner.device) if bert_base else None
    for name in precisions:
        dtype = get_precision(name).dtype
        stock = dtype.is_floating_point  # the stock model has no int8 of its own: only the engine's is timed
        if stock:
            named[f"stock/{name}"] = _stock_call(_stock(model, dtype))
        named[f"keep-all/{name}"] = _engine_call(
            runner.adaptive, LengthConfig.keep_all(runner.num_layers).with_precision(name)
        )
        for shape in shapes:
            named[f"{shape.label()}/{name}"] = _engine_call(runner.adaptive, shape.with_precision(name))
        if base is not None and stock:
            named[f"bert-base/{name}"] = _stock_call(copy.deepcopy(base).to(dtype) if name != "fp32" else base)
    if base is not None and "fp32" not in precisions:
        named["bert-base/fp32"] = _stock_call(bert_base_qa(runner.tokenizer.vocab_size).to(runner.device))
    return named


def table(timings: dict[str, Timing], features: int, shapes: list[LengthConfig], precisions: list[str]) -> list[dict]:
    reference = timings.get("stock/fp32")
    rows = []
    for name, timing in timings.items():
        row = {"forward": name, "ms_per_feature": 1000 * timing.median / features}
        if reference is not None:
            row["vs_stock_fp32"] = ratio(reference, timing).as_dict()
        kind, _, precision = name.rpartition("/")
        if kind not in ("stock", "keep-all", "bert-base"):
            row["vs_own_keep_all"] = ratio(timings[f"keep-all/{precision}"], timing).as_dict()
        rows.append(row)
    return rows


def markdown(rows: list[dict], head: str) -> str:
    def cell(r: dict | None) -> str:
        return "" if r is None else f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"

    lines = [head, "", "| forward | ms / feature | vs stock fp32 | vs own keep-all |", "|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['forward']} | {row['ms_per_feature']:.2f} | {cell(row.get('vs_stock_fp32'))} "
            f"| {cell(row.get('vs_own_keep_all'))} |"
        )
    return "\n".join(lines) + "\n"


def profile(runner: QARunner, config: LengthConfig, features: int, top: int = 14) -> str:
    """Where the engine's time goes at ``config`` over ``features`` batch-1 features: Python's profiler by
    own time, so the native kernels (called from Python) show beside torch's operators and the host work."""
    import cProfile
    import io
    import pstats

    batches = [
        to_device(collate(runner.features, [i], runner.pad_id), runner.device) for i in runner.latency_sample(features)
    ]
    call = _engine_call(runner.adaptive, config)
    with torch.inference_mode():
        for batch in batches[:3]:
            call(batch)  # warm: packed weights, kernels loaded
        profiler = cProfile.Profile()
        profiler.enable()
        for batch in batches:
            call(batch)
        profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    lines = [line for line in text.getvalue().splitlines() if line.strip()]
    return "\n".join(line.replace(str(Path.cwd()) + "/", "") for line in lines[2:])


def accuracy(
    model: str, data, shapes: list[LengthConfig], precisions: list[str], questions: int, device: str = "cpu"
) -> list[dict]:
    """F1 of keep-all and each shape at each precision on held-out questions, against float32 keep-all."""
    _, heldout = split_by_article(data)
    runner = QARunner(model, limit_examples(heldout, questions) if questions else heldout, progress=True, device=device)
    reference = runner.evaluate(LengthConfig.keep_all(runner.num_layers), desc="keep-all/fp32")
    base = list(reference.per_question_f1)
    rows = []
    for shape in [LengthConfig.keep_all(runner.num_layers), *shapes]:
        for name in precisions:
            config = shape.with_precision(name)
            result = (
                reference if config.is_keep_all and name == "fp32" else runner.evaluate(config, desc=config.label())
            )
            low, high = paired_interval(list(result.per_question_f1), base)
            rows.append(
                {
                    "config": "keep-all" if config.is_keep_all else shape.label(),
                    "precision": name,
                    "questions": len(base),
                    "em": result.measurement.exact_match,
                    "f1": result.measurement.f1,
                    "f1_delta": result.measurement.f1 - reference.measurement.f1,
                    "f1_delta_low": low,
                    "f1_delta_high": high,
                    "flops_speedup_vs_keep_all": result.measurement.flops_speedup_vs_keep_all,
                }
            )
    return rows


def accuracy_markdown(rows: list[dict]) -> str:
    lines = [
        f"### held-out F1 ({rows[0]['questions']} questions), against float32 keep-all",
        "",
        "| configuration | precision | EM | F1 | F1 - fp32 keep-all [95% interval] | FLOPs speedup |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['precision']} | {r['em']:.2f} | {r['f1']:.2f} | {r['f1_delta']:+.2f} "
            f"[{r['f1_delta_low']:+.2f}, {r['f1_delta_high']:+.2f}] | {r['flops_speedup_vs_keep_all']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, figures: harness.Figures) -> None:
    precisions = [resolve_precision(p.strip()) for p in args.precisions.split(",") if p.strip()]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    if args.features < 1 or args.repeats < 1 or not batch_sizes or min(batch_sizes) < 1:
        raise UserError("--features, --repeats and every --batch-sizes value must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_libraries()
    register_merges()  # a shape may name a measured merge rule (…@lookahead+question/merge-window)
    runner = QARunner(args.model, limit_examples(load_squad(args.data), QUESTIONS), progress=False, device=args.device)
    shapes = [resolve_config(c.strip(), runner.num_layers) for c in args.configs.split(";") if c.strip()]
    for shape in shapes:
        runner.adaptive.check_policy(shape.significance, shape.keep_question)
    named = contenders(runner, shapes, precisions, args.bert_base)
    command = shlex.join(["python", "benchmarks/precision.py", *sys.argv[1:]])
    report = {"model": args.model, "machine": harness.machine(), "command": command, "runs": []}
    md = []
    for batch_size in batch_sizes:
        picks = runner.latency_sample(args.features * batch_size)
        order = sorted(picks, key=lambda i: runner.features.lengths[i])  # similar lengths share a batch
        groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        batches = [to_device(collate(runner.features, g, runner.pad_id), runner.device) for g in groups]
        with torch.inference_mode():
            timings = interleaved_batch_timings(
                named,
                batches,
                repeats=args.repeats,
                warmup=1,
                synchronize=device_synchronizer(runner.device),
                progress=f"timing batch {batch_size}",
            )
        rows = table(timings, len(picks), shapes, precisions)
        flops = {s.label(): runner.flops(s).speedup_vs_keep_all for s in shapes}
        head = (
            f"batch {batch_size}, {len(picks)} dev features, {runner.device.type} ({torch.get_num_threads()} threads), "
            f"{args.repeats} rounds; FLOPs speedup of each shape: "
            + ", ".join(f"{k} {v:.2f}x" for k, v in flops.items())
        )
        print(markdown(rows, head))
        md.append(markdown(rows, f"### {head}"))
        report["runs"].append({"batch_size": batch_size, "features": len(picks), "flops_speedup": flops, "rows": rows})
    if args.accuracy is not None:
        report["accuracy"] = accuracy(args.model, load_squad(args.data), shapes, precisions, args.accuracy, args.device)
        md.append(accuracy_markdown(report["accuracy"]))
        print(md[-1])
    if args.profile:
        for config in [LengthConfig.keep_all(runner.num_layers), *shapes]:
            for name in precisions:
                text = profile(runner, config.with_precision(name), args.features)
                md.append(
                    f"### where the time goes: {config.with_precision(name).label()}, batch 1\n\n```\n{text}\n```\n"
                )
                print(md[-1])
    figures.update(headline(report))
    head = f"# Length x precision\n\n`{report['command']}`\n\n"
    harness.write_tables(args.out, "precision", report, head + "\n".join(md))


def headline(report: dict) -> harness.Figures:
    """The figures result.json carries: each forward's speedup over stock fp32 and each shape's over its own
    keep-all at each batch size, and each held-out F1 difference to float32 keep-all."""
    figures: harness.Figures = {}
    for run_ in report["runs"]:
        for row in run_["rows"]:
            key = f"batch{run_['batch_size']} {row['forward']}"
            if "vs_stock_fp32" in row:
                figures[f"{key} vs stock fp32"] = round(row["vs_stock_fp32"]["median"], 3)
            if "vs_own_keep_all" in row:
                figures[f"{key} vs own keep-all"] = round(row["vs_own_keep_all"]["median"], 3)
    for row in report.get("accuracy", []):
        figures[f"F1 {row['config']}/{row['precision']} - fp32 keep-all"] = round(row["f1_delta"], 2)
    return figures


if __name__ == "__main__":
    sys.exit(main())
