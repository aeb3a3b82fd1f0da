"""``dynlen answer``: answer questions with a model and a length configuration, as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from dynlen.atomic import writable_folder, write_text_atomic
from dynlen.bench.answer import Answerer, AnswerSettings
from dynlen.bench.model_io import DEFAULT_MODEL_DIR, LoadOptions
from dynlen.cli.options import add_options, values
from dynlen.engine.config import resolve_config
from dynlen.errors import UserError
from dynlen.options import option

HELP = "answer questions with a model and a length configuration"
DESCRIPTION = (
    "Answer questions about contexts with a QA model and a length configuration "
    "(the transformers 4 question-answering pipeline's output: answer, score, "
    "start, end). Prints JSON: one object for --question/--context, a list for --input."
)


@dataclass(frozen=True)
class AnswerInputs:
    """What to answer, with which model and configuration, and where the answers go."""

    model: str | None = option(
        None,
        "*ForQuestionAnswering model: local folder or hub id (default: the model a `choose` output given as "
        f"--config records, else {DEFAULT_MODEL_DIR})",
    )
    config: str | None = option(
        None,
        "length configuration: 'keep-all', a JSON file (e.g. the output of choose) or inline values such as "
        "'ratios:1,0.9,0.8,0.7,0.6,0.5@lookahead+question' (default: the one a folder exported by "
        "`choose --export` carries, else keep-all)",
    )
    question: str | None = option(None, "the question, with --context (default: none)")
    context: str | None = option(None, "the text to find the answer in, with --question (default: none)")
    input: str | None = option(None, 'JSON-lines file, one {"question": ..., "context": ...} per line (default: none)')
    out: str | None = option(None, "also write the JSON results to this file (default: standard output only)")
    batch_size: int = option(16, "windows per forward pass", cli=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, AnswerInputs)
    add_options(parser.add_argument_group("windows and answers"), AnswerSettings)
    add_options(parser.add_argument_group("loading the model"), LoadOptions, exclude=("quiet",))  # no progress bars


def read_jsonl(path: str | Path) -> tuple[list[str], list[str]]:
    """Questions and contexts of a JSON-lines file; blank lines are skipped, bad lines named by number."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"input file not found: {path}")
    questions, contexts = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number} is not valid JSON ({exc})") from None
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("question"), str)
            or not isinstance(row.get("context"), str)
        ):
            raise UserError(f'{path}:{number}: each line must be an object with string "question" and "context"')
        questions.append(row["question"])
        contexts.append(row["context"])
    return questions, contexts


def _cli_inputs(inputs: AnswerInputs) -> tuple[str | list[str], str | list[str]]:
    pair = inputs.question is not None or inputs.context is not None
    if inputs.input and pair:
        raise UserError("give either --input FILE.jsonl or --question with --context, not both")
    if inputs.input:
        return read_jsonl(inputs.input)
    if inputs.question is None or inputs.context is None:
        raise UserError("give --question and --context together, or --input FILE.jsonl")
    return inputs.question, inputs.context


def run(args: argparse.Namespace) -> None:
    """``dynlen answer``: prints the results as JSON (one object, or a list for --input)."""
    inputs, load = AnswerInputs(**values(AnswerInputs, args)), LoadOptions(**values(LoadOptions, args))
    question, context = _cli_inputs(inputs)
    if inputs.config is not None:
        resolve_config(inputs.config, 1)  # its values, before the model loads (the depth is checked once it has)
    if inputs.out:
        writable_folder(Path(inputs.out).parent)
    if load.threads:
        torch.set_num_threads(load.threads)
    answerer = Answerer(
        inputs.model,
        inputs.config,
        batch_size=inputs.batch_size,
        device=load.device,
        **values(AnswerSettings, args),
        **load.from_pretrained(),
    )
    results = answerer(question, context)
    text = json.dumps(results, indent=2, ensure_ascii=False)
    if inputs.out:
        out = Path(inputs.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, text + "\n")
    sys.stdout.write(text + "\n")
