"""Does bf16 mixed precision pay for training here, and does it cost accuracy?

Step time: the standard fine-tuning step (``transformers.Trainer``, batch 16, SQuAD train
features at 384/128) timed per step by a Trainer callback, fp32 and bf16 alternating in blocks
in one run so that both see the same machine load; the first steps of each block are warm-up.
Every block replays the same batches (same seed), so the ratio is paired step by step.
Reported: median seconds per step, the spread (quartiles) and the paired fp32/bf16 ratio.

Accuracy (``--f1-steps N``): the same recipe trained N steps from the pretrained encoder in each
precision, then scored at keep-all on the first ``--dev-questions`` dev questions.

Writes ``train_precision.json`` and ``train_precision.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.errors import exit_status
from bench.features import build_features
from bench.model_io import default_encoder_dir, load_tokenizer, quiet_libraries
from bench.squad import DEFAULT_DEV_SET, limit_examples, load_squad
from training import finetune
from training.recipe import DEFAULT_TRAIN_SET, training_device
from training.trainer import make_trainer, resolve_precision, training_arguments


class StepTimer:
    """A Trainer callback keeping the wall time of every optimizer step."""

    def __new__(cls):
        from transformers import TrainerCallback

        class Timer(TrainerCallback):
            def __init__(self):
                self.times: list[float] = []
                self._start = 0.0

            def on_step_begin(self, args, state, control, **kwargs):
                self._start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                self.times.append(time.perf_counter() - self._start)

        return Timer()


def time_steps(recipe: finetune.Recipe, feats, tokenizer, precision: str, steps: int, warmup: int) -> list[float]:
    """Seconds per step of ``steps`` Trainer steps after ``warmup`` untimed ones."""
    from transformers import AutoModelForQuestionAnswering

    device = training_device()
    model = AutoModelForQuestionAnswering.from_pretrained(recipe.base, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as folder:
        args = training_arguments(Path(folder), recipe, precision, device, warmup + steps, save_every=10**9)
        args.disable_tqdm = True
        args.logging_steps = 10**9
        args.logging_first_step = False
        trainer = make_trainer(model, args, feats, tokenizer.pad_token_id or 0)
        timer = StepTimer()
        trainer.add_callback(timer)
        trainer.train()
    return timer.times[warmup:]


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4)
    return q[0], statistics.median(values), q[2]


def short_run_f1(recipe: finetune.Recipe, steps: int, dev: str, questions: int, work: Path) -> dict:
    """Train ``steps`` steps in the recipe's precision, then EM/F1 at keep-all on the first dev questions."""
    from bench.config import LengthConfig
    from bench.runner import QARunner

    out = work / f"short-{recipe.precision}"
    started = time.time()
    finetune.train(recipe, out, max_steps=steps, save_every=10**9)
    minutes = (time.time() - started) / 60
    data = limit_examples(load_squad(dev), questions)
    runner = QARunner(str(out), data, device=training_device())
    result = runner.evaluate(LengthConfig.keep_all(runner.num_layers))
    return {
        "precision": recipe.precision,
        "steps": steps,
        "minutes": round(minutes, 1),
        "em": result.exact_match,
        "f1": result.f1,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--train", default=DEFAULT_TRAIN_SET, help="SQuAD 1.1 training JSON")
    parser.add_argument("--data", default=DEFAULT_DEV_SET, help="SQuAD 1.1 dev JSON (for --f1-steps)")
    parser.add_argument("--model", default=None, help="pretrained encoder (default: the shipped all-MiniLM-L6-v2)")
    parser.add_argument("--questions", type=int, default=2000, help="train questions the timed steps draw from")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per block")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps at the start of each block")
    parser.add_argument("--blocks", type=int, default=3, help="alternating fp32/bf16 blocks of each precision")
    parser.add_argument(
        "--f1-steps", type=int, default=0, help="also train this many steps in each precision and score"
    )
    parser.add_argument("--dev-questions", type=int, default=1000, help="dev questions scored after --f1-steps")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default="reports/train-precision", help="output folder")
    args = parser.parse_args(argv)
    return exit_status(lambda: run(args))


def run(args: argparse.Namespace) -> None:
    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = args.model or default_encoder_dir()
    recipe = finetune.Recipe(base=base, train=args.train)
    device = training_device()
    bf16 = resolve_precision("bf16", device)  # refuses, in one line, hardware without native bf16
    tokenizer = load_tokenizer(base)
    examples = limit_examples(load_squad(args.train), args.questions).examples
    feats = build_features(examples, tokenizer, recipe.max_length, recipe.stride, with_labels=True)
    times: dict[str, list[float]] = {"fp32": [], bf16: []}
    for block in range(args.blocks):
        for precision in ("fp32", bf16):
            times[precision] += time_steps(recipe, feats, tokenizer, precision, args.steps, args.warmup)
            print(
                f"block {block + 1}/{args.blocks} {precision}: {statistics.median(times[precision]):.3f} s/step",
                flush=True,
            )
    summary = {p: dict(zip(("q1", "median", "q3"), quartiles(t))) for p, t in times.items()}
    # every block replays the same batches (same seed), so step i of each precision is the same batch
    paired = [a / b for a, b in zip(times["fp32"], times[bf16])]
    ratio = statistics.median(paired)
    report = {
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "batch_size": recipe.batch_size,
        "max_length": recipe.max_length,
        "steps_per_precision": len(times["fp32"]),
        "seconds_per_step": summary,
        "fp32_over_bf16": round(ratio, 2),
        "fp32_over_bf16_quartiles": [round(x, 2) for x in quartiles(paired)[::2]],
        "short_runs": [],
    }
    if args.f1_steps:
        with tempfile.TemporaryDirectory() as work:
            for precision in ("fp32", bf16):
                run_recipe = finetune.Recipe(base=base, train=args.train, precision=precision)
                report["short_runs"].append(
                    short_run_f1(run_recipe, args.f1_steps, args.data, args.dev_questions, Path(work))
                )
    write(report, Path(args.out), " ".join(sys.argv))


def write(report: dict, out: Path, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_precision.json").write_text(json.dumps(report, indent=2))
    lines = [
        "# Training step time: fp32 vs bf16 mixed precision",
        "",
        f"`{command}` on {report['device']} ({report['cpu_threads']} threads), batch {report['batch_size']}, "
        f"max length {report['max_length']}, {report['steps_per_precision']} timed steps per precision.",
        "",
        "| precision | median s/step | quartiles |",
        "|---|---|---|",
    ]
    for precision, s in report["seconds_per_step"].items():
        lines.append(f"| {precision} | {s['median']:.3f} | {s['q1']:.3f}–{s['q3']:.3f} |")
    low, high = report["fp32_over_bf16_quartiles"]
    lines += [
        "",
        f"fp32 / bf16 step time, paired on the same batches: **{report['fp32_over_bf16']:.2f}×** "
        f"(quartiles {low:.2f}–{high:.2f})",
    ]
    if report["short_runs"]:
        lines += ["", "| precision | steps | minutes | EM | F1 |", "|---|---|---|---|---|"]
        for r in report["short_runs"]:
            lines.append(f"| {r['precision']} | {r['steps']} | {r['minutes']} | {r['em']:.2f} | {r['f1']:.2f} |")
    (out / "train_precision.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
