"""``python -m search``: run a study (``run``) or pick a configuration for a budget (``choose``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.errors import exit_status
from bench.model_io import DEFAULT_MODEL_DIR
from search.budget import SYNTAX, parse_budget

DEFAULT_DATA = "../shared/data/squad/dev-v1.1.json"


def _add_run(sub) -> None:
    from search.study import SearchSettings

    d = SearchSettings(model="", data="", run_dir="")
    p = sub.add_parser("run", help="search configurations, re-score the frontier on held-out, write the report",
                       description="Optuna search over per-layer length configurations (maximise F1, minimise cost) "
                                   "on one article-level split of the data; the frontier is re-scored on the "
                                   "held-out split and a report is written to the run folder. Re-running the "
                                   "same command resumes the study.")
    p.add_argument("--model", default=DEFAULT_MODEL_DIR, help="QA model folder or hub id (default: %(default)s)")
    p.add_argument("--data", default=DEFAULT_DATA, help="SQuAD 1.1 JSON (default: %(default)s)")
    p.add_argument("--run-dir", default="reports/default", help="run folder: study.db, run.json, trials.json, report (default: %(default)s)")
    p.add_argument("--trials", type=int, default=d.trials, help="total completed trials wanted, baselines included (default: %(default)s)")
    p.add_argument("--cost", choices=("flops", "latency"), default=d.cost, help="second objective (default: %(default)s)")
    p.add_argument("--budget", default=None, help=f"constraint: {SYNTAX} (relative to the model's keep-all)")
    p.add_argument("--sampler", choices=("tpe", "nsga2"), default=d.sampler, help="TPE (multivariate) or NSGA-II (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="sampler seed (default: %(default)s)")
    p.add_argument("--storage", default=None, help="Optuna storage URL, e.g. postgresql://user@host/db for many workers (default: SQLite in the run folder)")
    p.add_argument("--search-questions", type=int, default=d.search_questions, help="questions of the search split used (default: %(default)s; 0 = all)")
    p.add_argument("--heldout-questions", type=int, default=d.heldout_questions, help="questions of the held-out split used for re-scoring (default: %(default)s; 0 = all)")
    p.add_argument("--heldout-fraction", type=float, default=d.heldout_fraction, help="share of questions (whole articles) held out (default: %(default)s)")
    p.add_argument("--split-seed", type=int, default=d.split_seed, help="seed of the article split (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="evaluation batch size (default: %(default)s)")
    p.add_argument("--latency-sample", type=int, default=d.latency_sample, help="features timed per latency measurement (default: %(default)s)")
    p.add_argument("--latency-repeats", type=int, default=d.latency_repeats, help="timed rounds per latency measurement (default: %(default)s)")
    p.add_argument("--latency-batch-size", type=int, default=d.latency_batch_size, help="batch size of latency timing (default: %(default)s)")
    p.add_argument("--max-rescore", type=int, default=d.max_rescore, help="frontier points re-scored on held-out, evenly spread (default: %(default)s; baselines always are)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--bert-f1", type=float, default=88.5, help="BERT-base F1 for the BERT-1%% line (default: %(default)s)")
    p.add_argument("--no-report", action="store_true", help="skip writing the report files")


def _add_choose(sub) -> None:
    p = sub.add_parser("choose", help="pick the best configuration of a run for a budget",
                       description="Read a finished run and print the configuration with the highest held-out F1 "
                                   "that meets the budget; write it as JSON that `python -m bench answer --config` "
                                   "and `bench.answer.Answerer` accept. Exits 1 when nothing meets the budget.")
    p.add_argument("--run", required=True, help="run folder (e.g. reports/default) or its name under reports/")
    p.add_argument("--budget", default=None, help=f"{SYNTAX}")
    p.add_argument("--out", default=None, help="output JSON (default: RUN/chosen.json)")


def _run_dir(name: str) -> Path:
    path = Path(name)
    return path if path.exists() or "/" in name else Path("reports") / name


def cmd_run(args: argparse.Namespace) -> int:
    from search.study import SearchSettings, run_search

    budget = parse_budget(args.budget)
    settings = SearchSettings(
        model=args.model, data=args.data, run_dir=str(args.run_dir), trials=args.trials, cost=args.cost,
        budget=str(budget) if budget else None, sampler=args.sampler, seed=args.seed,
        search_questions=args.search_questions or None, heldout_questions=args.heldout_questions or None,
        heldout_fraction=args.heldout_fraction, split_seed=args.split_seed, storage=args.storage,
        batch_size=args.batch_size, latency_sample=args.latency_sample, latency_repeats=args.latency_repeats,
        latency_batch_size=args.latency_batch_size, threads=args.threads, max_rescore=args.max_rescore,
    )
    run_dir = run_search(settings, budget)
    if not args.no_report:
        from reports.__main__ import make_report

        for path in make_report(run_dir, bert_f1=args.bert_f1):
            print(f"wrote {path}")
    return 0


def cmd_choose(args: argparse.Namespace) -> int:
    from search.choose import NothingMeetsBudget, choose, write_choice

    run_dir = _run_dir(args.run)
    budget = parse_budget(args.budget)
    try:
        best, record = choose(run_dir, budget)
    except NothingMeetsBudget as exc:
        print(str(exc))
        return 1
    out = Path(args.out) if args.out else run_dir / "chosen.json"
    write_choice(record, out)
    h = best.heldout
    lat = f", latency {h.latency_speedup_vs_keep_all:.2f}x" if h.latency_speedup_vs_keep_all else ""
    print(f"budget {budget or 'none'}: {best.label}")
    print(f"held-out EM {h.exact_match:.2f} F1 {h.f1:.2f}; vs keep-all: FLOPs {h.flops_speedup_vs_keep_all:.2f}x{lat}; "
          f"vs BERT-base: FLOPs {h.flops_speedup_vs_bert_base:.2f}x"
          + (f", latency {h.latency_speedup_vs_bert_base:.2f}x" if h.latency_speedup_vs_bert_base else ""))
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search",
                                     description="dynlen search: per-layer length configurations under a budget.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run(sub)
    _add_choose(sub)
    args = parser.parse_args(argv)
    from bench.model_io import quiet_libraries

    quiet_libraries()
    if args.command is None:
        parser.print_help()
        return 1
    return exit_status(lambda: cmd_run(args) if args.command == "run" else cmd_choose(args))


if __name__ == "__main__":
    sys.exit(main())
