"""The three ways an exported choice runs the same drop: what each costs per feature, and whether they agree.

For each precision asked, ``choose --export``'s own ``export_model`` writes a folder for the
configuration, and on the same dev features, interleaved feature by feature in one run:

* ``program/P`` -- ``torch.export.load(DIR/dynlen_exported.pt2).module()`` (torch alone);
* ``remote/P`` -- ``AutoModelForQuestionAnswering.from_pretrained(DIR, trust_remote_code=True)``
  (the folder's ``modeling_dynlen.py``, one example at a time);
* ``engine/P`` -- dynlen's length-adaptive engine (native kernels where the CPU has them).

Batch 1, each feature unpadded. Every time is a median over rounds of the round's mean ms per
feature; the ratios are the engine's and the remote-code model's time over the program's (above 1:
the program is faster), with their spread over rounds. The agreement check runs each on every
feature of the first ``--questions`` dev questions and compares the answers the suite's span
search picks (same text as the engine's, same as the remote-code model's), with each one's EM/F1
and the largest logit difference to the remote-code model. Writes ``exported_program.json`` and
``exported_program.md`` to ``--out``. CPU only: the program is exported on the CPU.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dynlen.bench import harness
from dynlen.bench.features import collate
from dynlen.bench.latency import Timing, interleaved_batch_timings, ratio
from dynlen.bench.model_io import quiet_libraries
from dynlen.bench.runner import QARunner
from dynlen.bench.squad import limit_examples, load_squad
from dynlen.engine.config import LengthConfig, resolve_config
from dynlen.engine.precision import resolve_precision
from dynlen.errors import UserError
from dynlen.search.choose import PROGRAM_FILE, export_model

REFERENCE_SHAPE = "ratios:1,1,0.7,0.49,0.343,0.0515@lookahead+question"
FORWARDS = ("program", "remote", "engine")


def build_parser() -> argparse.ArgumentParser:
    parser = harness.parser(__doc__, "model", "data", "threads", out="runs/exported-program")
    parser.add_argument(
        "--config", default=REFERENCE_SHAPE, help="drop shape, without precision (default: %(default)s)"
    )
    parser.add_argument(
        "--precisions", default="fp32,bf16", help="precisions to export and time (default: %(default)s)"
    )
    parser.add_argument(
        "--questions",
        type=int,
        default=100,
        help="first dev questions: their features are timed and their answers compared (default: %(default)s)",
    )
    parser.add_argument("--features", type=int, default=40, help="features timed (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds after one warm-up (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return harness.run(run, args, argv, __file__)


def _inputs(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]


def forwards(folder: Path, runner: QARunner, config: LengthConfig) -> dict:
    """Each way to run the exported folder's drop: batch -> (start_logits, end_logits)."""
    from transformers import AutoModelForQuestionAnswering

    program = torch.export.load(str(folder / PROGRAM_FILE)).module()
    remote = AutoModelForQuestionAnswering.from_pretrained(folder, trust_remote_code=True).eval()

    def run_program(batch: dict):
        return program(*_inputs(batch))

    def run_remote(batch: dict):
        out = remote(*_inputs(batch))
        return out.start_logits, out.end_logits

    def run_engine(batch: dict):
        out = runner.adaptive(*_inputs(batch), config)
        return out.start_logits, out.end_logits

    return {"program": run_program, "remote": run_remote, "engine": run_engine}


def agreement(runner: QARunner, named: dict, batches: list[dict]) -> dict:
    """Each forward's answers over every feature: EM/F1, answers equal to the engine's and the remote model's."""
    from dynlen.bench.postprocess import predict_answers
    from dynlen.bench.scoring import squad_scores

    logits, answers = {}, {}
    with torch.inference_mode():
        for name, call in named.items():
            pairs = [call(batch) for batch in batches]
            logits[name] = [(s[0].float().numpy(), e[0].float().numpy()) for s, e in pairs]
            found = predict_answers(
                runner.data.examples, runner.features, [s for s, _ in logits[name]], [e for _, e in logits[name]]
            )
            answers[name] = {qid: a["text"] for qid, a in found.items()}
    rows = {}
    for name in named:
        scores = squad_scores(answers[name], runner.data.examples)
        gap = max(
            max(np.abs(s - rs).max(), np.abs(e - re).max()) for (s, e), (rs, re) in zip(logits[name], logits["remote"])
        )
        rows[name] = {
            "em": scores["exact_match"],
            "f1": scores["f1"],
            "same_answer_as_engine": _same(answers[name], answers["engine"]),
            "same_answer_as_remote": _same(answers[name], answers["remote"]),
            "max_logit_gap_to_remote": float(gap),
        }
    return rows


def _same(a: dict, b: dict) -> float:
    return sum(a[q] == b[q] for q in a) / len(a)


def run(args: argparse.Namespace, figures: harness.Figures) -> None:
    precisions = [resolve_precision(p.strip()) for p in args.precisions.split(",") if p.strip()]
    if args.features < 1 or args.repeats < 1 or args.questions < 1:
        raise UserError("--features, --repeats and --questions must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_libraries()
    runner = QARunner(args.model, limit_examples(load_squad(args.data), args.questions), progress=False, device="cpu")
    shape = resolve_config(args.config, runner.num_layers)
    runner.adaptive.check_policy(shape.significance, shape.keep_question)
    every = [collate(runner.features, [i], runner.pad_id) for i in range(len(runner.features))]
    timed = [every[i] for i in runner.latency_sample(args.features)]
    command = shlex.join(["python", "benchmarks/exported_program.py", *sys.argv[1:]])
    report = {
        "model": args.model,
        "machine": harness.machine(),
        "command": command,
        "config": shape.label(),
        "questions": runner.questions,
        "features": len(every),
        "timed_features": len(timed),
        "threads": torch.get_num_threads(),
        "precisions": {},
    }
    md = [
        f"# torch.export program vs remote code vs engine\n\n`{command}`\n",
        f"{shape.label()}, {runner.questions} dev questions ({len(every)} features), {len(timed)} timed at batch 1, "
        f"{args.repeats} rounds, CPU ({torch.get_num_threads()} threads); {report['machine']}\n",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name in precisions:
            config = shape.with_precision(name)
            record = {"model": args.model, "config": config.to_dict(), "label": config.label(), "run": "benchmark"}
            started = time.perf_counter()
            folder = export_model({**record, "budget": None, "heldout": None}, Path(tmp) / name)
            seconds = time.perf_counter() - started
            entry: dict = {"export_seconds": round(seconds, 1)}
            if not (folder / PROGRAM_FILE).is_file():
                entry["no_program"] = (folder / "README.md").read_text().split(f"No `{PROGRAM_FILE}`: ")[-1].strip()
                report["precisions"][name] = entry
                md.append(f"## {name}\n\nno program: {entry['no_program']}\n")
                continue
            entry["program_mb"] = round((folder / PROGRAM_FILE).stat().st_size / 2**20, 1)
            named = forwards(folder, runner, config)
            with torch.inference_mode():
                timings = interleaved_batch_timings(
                    {f"{k}/{name}": v for k, v in named.items()},
                    timed,
                    repeats=args.repeats,
                    warmup=1,
                    progress=f"timing {name}",
                )
            entry["timing"] = _timing_rows(timings, len(timed), name)
            entry["agreement"] = agreement(runner, named, every)
            report["precisions"][name] = entry
            md.append(markdown(name, entry))
            print(md[-1])
    figures.update(headline(report))
    harness.write_tables(args.out, "exported_program", report, "\n".join(md))


def _timing_rows(timings: dict[str, Timing], features: int, precision: str) -> dict:
    program = timings[f"program/{precision}"]
    rows = {}
    for forward in FORWARDS:
        timing = timings[f"{forward}/{precision}"]
        rows[forward] = {"ms_per_feature": 1000 * timing.median / features}
        if forward != "program":
            rows[forward]["program_speedup"] = ratio(timing, program).as_dict()
    return rows


def markdown(precision: str, entry: dict) -> str:
    lines = [
        f"## {precision}\n",
        f"export {entry['export_seconds']} s (folder and program), program {entry['program_mb']} MiB\n",
        "| forward | ms / feature | program speedup over it | EM | F1 | same answer as engine | same as remote "
        "| max logit gap to remote |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for forward in FORWARDS:
        t, a = entry["timing"][forward], entry["agreement"][forward]
        speed = t.get("program_speedup")
        cell = f"{speed['median']:.2f}x ({speed['min']:.2f}-{speed['max']:.2f})" if speed else ""
        lines.append(
            f"| {forward} | {t['ms_per_feature']:.2f} | {cell} | {a['em']:.2f} | {a['f1']:.2f} "
            f"| {a['same_answer_as_engine']:.1%} | {a['same_answer_as_remote']:.1%} | {a['max_logit_gap_to_remote']:.2g} |"
        )
    return "\n".join(lines) + "\n"


def headline(report: dict) -> harness.Figures:
    """result.json's figures: ms per feature, the program's speedups and its answer agreement per precision."""
    figures: harness.Figures = {}
    for name, entry in report["precisions"].items():
        if "no_program" in entry:
            figures[f"{name} program"] = f"none: {entry['no_program']}"
            continue
        for forward, row in entry["timing"].items():
            figures[f"{name} {forward} ms/feature"] = round(row["ms_per_feature"], 2)
            if "program_speedup" in row:
                figures[f"{name} program speedup over {forward}"] = round(row["program_speedup"]["median"], 3)
        agree = entry["agreement"]["program"]
        figures[f"{name} program same answer as engine"] = round(agree["same_answer_as_engine"], 3)
        figures[f"{name} program same answer as remote"] = round(agree["same_answer_as_remote"], 3)
        figures[f"{name} program F1"] = round(agree["f1"], 2)
    return figures


if __name__ == "__main__":
    sys.exit(main())
