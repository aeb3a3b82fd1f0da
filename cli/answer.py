"""``dynlen answer``: answer questions with a model and a length configuration, as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dynlen.bench.answer import Answerer
from dynlen.bench.device import DEVICE_CHOICES
from dynlen.bench.model_io import DEFAULT_MODEL_DIR
from dynlen.errors import UserError

HELP = "answer questions with a model and a length configuration"
DESCRIPTION = (
    "Answer questions about contexts with a QA model and a length configuration "
    "(the transformers 4 question-answering pipeline's output: answer, score, "
    "start, end). Prints JSON: one object for --question/--context, a list for --input."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="*ForQuestionAnswering model: local folder or hub id (default: the model a `choose` output given as "
        f"--config records, else {DEFAULT_MODEL_DIR})",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="length configuration: 'keep-all', a JSON file (e.g. the output of choose) or inline "
        "values such as 'ratios:1,0.9,0.8,0.7,0.6,0.5@lookahead+question' (default: the one a folder exported "
        "by `choose --export` carries, else keep-all)",
    )
    parser.add_argument("--question", help="the question (with --context)")
    parser.add_argument("--context", help="the text to find the answer in (with --question)")
    parser.add_argument("--input", help='JSON-lines file, one {"question": ..., "context": ...} per line')
    parser.add_argument("--out", help="also write the JSON results to this file")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per forward pass (default: %(default)s)")
    parser.add_argument(
        "--max-answer-length",
        "--max-answer-len",
        type=int,
        default=30,
        help="longest answer in tokens (default: %(default)s)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help=f"where the model runs: {', '.join(DEVICE_CHOICES)} or cuda:N; auto = a GPU when torch sees one "
        "(default: %(default)s)",
    )
    parser.add_argument("--top-k", type=int, default=1, help="answers per question; above 1 each result is a list")
    parser.add_argument(
        "--handle-impossible-answer",
        action="store_true",
        help="allow the empty answer when the model rates 'no answer' above every span",
    )
    parser.add_argument(
        "--max-question-len", type=int, default=None, help="keep only the question's first N tokens (default: all)"
    )
    add_loading_arguments(parser)


def add_loading_arguments(parser: argparse.ArgumentParser) -> None:
    """How a model given by name is loaded, as ``from_pretrained`` takes it (token: the HF_TOKEN variable)."""
    parser.add_argument(
        "--revision", default=None, help="hub branch, tag or commit of --model (default: the main branch)"
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the model repository's own Python code (only for repositories you trust)",
    )
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "float16", "bfloat16"),
        default=None,
        help="weights' dtype; 'auto' = as saved (default: float32)",
    )


def loading_options(args: argparse.Namespace) -> dict:
    return {"revision": args.revision, "trust_remote_code": args.trust_remote_code, "dtype": args.dtype}


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
    """``dynlen answer``: prints the results as JSON (one object, or a list for --input)."""
    question, context = _cli_inputs(args)
    answerer = Answerer(
        args.model,
        args.config,
        batch_size=args.batch_size,
        max_answer_length=args.max_answer_length,
        device=args.device,
        top_k=args.top_k,
        handle_impossible_answer=args.handle_impossible_answer,
        max_question_len=args.max_question_len,
        **loading_options(args),
    )
    results = answerer(question, context)
    text = json.dumps(results, indent=2, ensure_ascii=False)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
    sys.stdout.write(text + "\n")
