"""``python -m bench``: measure one configuration, answer questions, or build the default model."""

from __future__ import annotations

import argparse
import sys

from bench.errors import exit_status


def build_parser() -> argparse.ArgumentParser:
    from bench.answer import add_answer_arguments
    from bench.cli_eval import add_eval_arguments

    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="dynlen bench: length-adaptive QA inference, SQuAD 1.1 EM/F1, exact FLOPs and latency.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    ev = sub.add_parser("eval", help="evaluate one model x data x length configuration",
                        description="Evaluate one model x SQuAD data x length configuration; writes "
                                    "OUT/metrics.json (EM, F1, FLOPs, speedups, latency, tokens kept) and "
                                    "OUT/predictions.json (official SQuAD format).")
    add_eval_arguments(ev)
    ans = sub.add_parser("answer", help="answer questions with a model and a length configuration",
                         description="Answer questions about contexts with a QA model and a length configuration "
                                     "(the transformers 4 question-answering pipeline's output: answer, score, "
                                     "start, end). Prints JSON: one object for --question/--context, a list for --input.")
    add_answer_arguments(ans)
    sub.add_parser("train", help="fine-tune the default QA model (see python -m bench.train --help)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        from bench.train import main as train_main

        return train_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    from bench.model_io import quiet_libraries

    quiet_libraries()
    if args.command is None:
        parser.print_help()
        return 1

    def run() -> None:
        if args.command == "eval":
            from bench.cli_eval import run_eval

            run_eval(args)
        elif args.command == "answer":
            from bench.answer import run_answer

            run_answer(args)

    return exit_status(run)


if __name__ == "__main__":
    sys.exit(main())
