"""``python -m bench answer``: answer questions with a model and a length configuration, as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.answer import Answerer
from bench.errors import UserError
from bench.model_io import DEFAULT_MODEL_DIR

HELP = "answer questions with a model and a length configuration"
DESCRIPTION = (
    "Answer questions about contexts with a QA model and a length configuration "
    "(the transformers 4 question-answering pipeline's output: answer, score, "
    "start, end). Prints JSON: one object for --question/--context, a list for --input."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL_DIR,
        help="*ForQuestionAnswering model: local folder or hub id (default: %(default)s)",
    )
    parser.add_argument(
        "--config",
        default="keep-all",
        help="length configuration: 'keep-all', a JSON file (e.g. the output of choose) or inline "
        "values such as 'ratios:1,0.9,0.8,0.7,0.6,0.5' (default: %(default)s)",
    )
    parser.add_argument("--question", help="the question (with --context)")
    parser.add_argument("--context", help="the text to find the answer in (with --question)")
    parser.add_argument("--input", help='JSON-lines file, one {"question": ..., "context": ...} per line')
    parser.add_argument("--out", help="also write the JSON results to this file")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per forward pass (default: %(default)s)")
    parser.add_argument(
        "--max-answer-length", type=int, default=30, help="longest answer in tokens (default: %(default)s)"
    )


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


def _cli_inputs(args: argparse.Namespace) -> tuple[str | list[str], str | list[str]]:
    pair = args.question is not None or args.context is not None
    if args.input and pair:
        raise UserError("give either --input FILE.jsonl or --question with --context, not both")
    if args.input:
        return read_jsonl(args.input)
    if args.question is None or args.context is None:
        raise UserError("give --question and --context together, or --input FILE.jsonl")
    return args.question, args.context


def run(args: argparse.Namespace) -> None:
    """``python -m bench answer``: prints the results as JSON (one object, or a list for --input)."""
    question, context = _cli_inputs(args)
    answerer = Answerer(args.model, args.config, batch_size=args.batch_size, max_answer_length=args.max_answer_length)
    results = answerer(question, context)
    text = json.dumps(results, indent=2, ensure_ascii=False)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
    sys.stdout.write(text + "\n")
