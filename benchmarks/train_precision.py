"""Which training settings pay here, and do they cost accuracy? Two arms of the fine-tuning step, paired.

``--compare precision`` (default): fp32 against bf16 mixed precision, both at the recipe's
attention dropout. ``--compare attention-dropout``: the encoder config's attention-probability
dropout (0.1 for MiniLM) against none, both in the precision ``auto`` picks.

Step time: the standard fine-tuning step (``transformers.Trainer``, batch 16, SQuAD train
features at 384/128, length-grouped batches padded to their longest member) timed per step by a
Trainer callback, the two arms alternating in blocks in one run so that both see the same machine
load; the first steps of each block are warm-up. Every block replays the same batches (same
seed), so the ratio is paired step by step. Reported: median seconds per step, the spread
(quartiles) and the paired first/second ratio.

Accuracy (``--f1-steps N``): the same recipe trained N steps from the pretrained encoder in each
arm, then scored at keep-all on the first ``--dev-questions`` dev questions.

Writes ``train_precision.json`` and ``train_precision.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoConfig

from dynlen.bench import harness
from dynlen.bench.features import build_features
from dynlen.bench.model_io import default_encoder_dir, load_tokenizer, quiet_libraries
from dynlen.bench.squad import limit_examples, load_squad
from dynlen.training import finetune
from dynlen.training.recipe import DEFAULT_TRAIN_SET, training_device
from dynlen.training.trainer import make_trainer, resolve_precision, training_arguments


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


def time_steps(recipe: finetune.Recipe, feats, tokenizer, steps: int, warmup: int) -> list[float]:
    """Seconds per step of ``steps`` Trainer steps of ``recipe`` (its precision resolved) after ``warmup`` untimed ones."""
    from transformers import AutoModelForQuestionAnswering

    device = training_device()
    precision = resolve_precision(recipe.precision, device)
    dropout = finetune.attention_dropout_option(recipe.base, recipe.attention_dropout)
    model = AutoModelForQuestionAnswering.from_pretrained(recipe.base, dtype=torch.float32, **dropout)
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


def short_run_f1(label: str, recipe: finetune.Recipe, steps: int, dev: str, questions: int, work: Path) -> dict:
    """Train ``steps`` steps of ``recipe``, then EM/F1 at keep-all on the first dev questions."""
    from dynlen.bench.runner import QARunner
    from dynlen.engine.config import LengthConfig

    out = work / f"short-{len(list(work.iterdir()))}"
    started = time.time()
    finetune.train(recipe, out, max_steps=steps, save_every=10**9)
    minutes = (time.time() - started) / 60
    data = limit_examples(load_squad(dev), questions)
    runner = QARunner(str(out), data, device=training_device())
    result = runner.evaluate(LengthConfig.keep_all(runner.num_layers))
    return {
        "arm": label,
        "steps": steps,
        "minutes": round(minutes, 1),
        "em": result.exact_match,
        "f1": result.f1,
    }


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__, "data", "threads", out=None)
    parser.add_argument("--train", default=DEFAULT_TRAIN_SET, help="SQuAD 1.1 training JSON (default: %(default)s)")
    parser.add_argument(
        "--model",
        default=None,
        help="pretrained encoder (default: the shipped all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--questions", type=int, default=2000, help="train questions the timed steps draw from (default: %(default)s)"
    )
    parser.add_argument("--steps", type=int, default=12, help="timed steps per block (default: %(default)s)")
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed steps at the start of each block (default: %(default)s)"
    )
    parser.add_argument("--blocks", type=int, default=3, help="alternating blocks of each arm (default: %(default)s)")
    parser.add_argument(
        "--compare", choices=COMPARISONS, default="precision", help="which two arms to time (default: %(default)s)"
    )
    parser.add_argument(
        "--f1-steps",
        type=int,
        default=0,
        help="also train this many steps in each arm and score (default: %(default)s)",
    )
    parser.add_argument(
        "--dev-questions", type=int, default=1000, help="dev questions scored after --f1-steps (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.steps * args.blocks < 2:
        parser.error("--steps x --blocks must give at least 2 timed steps per arm (quartiles need two)")
    args.out = args.out or f"results/train-{args.compare}"  # named after the arms
    return harness.run(run, args, argv, __file__)


COMPARISONS = ("precision", "attention-dropout")


def arms(compare: str, base: str, train: str) -> dict[str, finetune.Recipe]:
    """The two recipes ``compare`` sets against each other, by label; they differ in one field only."""
    recipe = finetune.Recipe(base=base, train=train)
    device = training_device()
    if compare == "precision":
        bf16 = resolve_precision("bf16", device)  # refuses, in one line, hardware without native bf16
        return {"fp32": replace(recipe, precision="fp32"), bf16: replace(recipe, precision=bf16)}
    config = AutoConfig.from_pretrained(base)
    own = getattr(config, "attention_probs_dropout_prob", getattr(config, "attention_dropout", None))
    return {
        f"attention dropout {own:g} (config)": replace(recipe, attention_dropout=None),
        "attention dropout 0": replace(recipe, attention_dropout=0.0),
    }


def run(args: argparse.Namespace, figures: harness.Figures) -> None:
    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = args.model or default_encoder_dir()
    recipes = arms(args.compare, base, args.train)
    first, second = recipes
    tokenizer = load_tokenizer(base)
    recipe = recipes[first]
    examples = limit_examples(load_squad(args.train), args.questions).examples
    feats = build_features(examples, tokenizer, recipe.max_length, recipe.stride, with_labels=True)
    times: dict[str, list[float]] = {label: [] for label in recipes}
    for block in range(args.blocks):
        for label, arm in recipes.items():
            times[label] += time_steps(arm, feats, tokenizer, args.steps, args.warmup)
            print(f"block {block + 1}/{args.blocks} {label}: {statistics.median(times[label]):.3f} s/step", flush=True)
    summary = {label: dict(zip(("q1", "median", "q3"), quartiles(t))) for label, t in times.items()}
    # every block replays the same batches (same seed), so step i of each arm is the same batch
    paired = [a / b for a, b in zip(times[first], times[second])]
    report = {
        "compare": args.compare,
        "device": str(training_device()),
        "precision": resolve_precision(recipe.precision, training_device()) if args.compare != "precision" else None,
        "cpu_threads": torch.get_num_threads(),
        "batch_size": recipe.batch_size,
        "max_length": recipe.max_length,
        "steps_per_arm": len(times[first]),
        "seconds_per_step": summary,
        "first_over_second": round(statistics.median(paired), 2),
        "first_over_second_quartiles": [round(x, 2) for x in quartiles(paired)[::2]],
        "short_runs": [],
    }
    figures["first_over_second"] = report["first_over_second"]
    figures.update({f"median_seconds_per_step[{label}]": s["median"] for label, s in summary.items()})
    if args.f1_steps:
        with tempfile.TemporaryDirectory() as work:
            for label, arm in recipes.items():
                report["short_runs"].append(
                    short_run_f1(label, arm, args.f1_steps, args.data, args.dev_questions, Path(work))
                )
    write(report, Path(args.out), " ".join(sys.argv))


def write(report: dict, out: Path, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_precision.json").write_text(json.dumps(report, indent=2))
    first, second = report["seconds_per_step"]
    setting = f", {report['precision']}" if report["precision"] else ""
    lines = [
        f"# Training step time: {first} vs {second}",
        "",
        f"`{command}` on {report['device']} ({report['cpu_threads']} threads{setting}), batch {report['batch_size']}, "
        f"max length {report['max_length']}, {report['steps_per_arm']} timed steps per arm.",
        "",
        "| arm | median s/step | quartiles |",
        "|---|---|---|",
    ]
    for label, s in report["seconds_per_step"].items():
        lines.append(f"| {label} | {s['median']:.3f} | {s['q1']:.3f}–{s['q3']:.3f} |")
    low, high = report["first_over_second_quartiles"]
    lines += [
        "",
        f"{first} / {second} step time, paired on the same batches: **{report['first_over_second']:.2f}×** "
        f"(quartiles {low:.2f}–{high:.2f})",
    ]
    if report["short_runs"]:
        lines += ["", "| arm | steps | minutes | EM | F1 |", "|---|---|---|---|---|"]
        for r in report["short_runs"]:
            lines.append(f"| {r['arm']} | {r['steps']} | {r['minutes']} | {r['em']:.2f} | {r['f1']:.2f} |")
    (out / "train_precision.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
