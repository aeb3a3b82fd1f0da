"""``dynlen search``: search configurations, re-score the frontier on held-out, write the report."""

from __future__ import annotations

import argparse

from dynlen.bench.model_io import DEFAULT_MODEL_DIR
from dynlen.bench.squad import DEFAULT_DEV_SET
from dynlen.engine.probes import AUTO_SIGNIFICANCE
from dynlen.engine.significance import POLICIES
from dynlen.reports.report import make_report
from dynlen.search.budget import SYNTAX, parse_budget
from dynlen.search.settings import SearchSettings
from dynlen.search.space import parse_selections
from dynlen.search.study import run_search

HELP = "search configurations, re-score the frontier on held-out, write the report"
DESCRIPTION = (
    "Optuna search over per-layer length configurations (maximise F1, minimise cost) "
    "on one article-level split of the data; the frontier is re-scored on the "
    "held-out split and a report is written to the run folder. Re-running the "
    "same command resumes the study; with --storage on a database server, the same command on "
    "several processes or machines shares one study and stops at --trials completed trials in all."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = SearchSettings(model="", data="", run_dir="")
    parser.add_argument("--model", default=DEFAULT_MODEL_DIR, help="QA model folder or hub id (default: %(default)s)")
    parser.add_argument("--data", default=DEFAULT_DEV_SET, help="SQuAD 1.1 JSON (default: %(default)s)")
    parser.add_argument(
        "--run",
        dest="run_dir",
        default="reports/default",
        help="run folder: study.db, run.json, trials.json, report (default: %(default)s)",
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=d.trials,
        help="total completed trials wanted, baselines included (default: %(default)s)",
    )
    parser.add_argument(
        "--cost", choices=("flops", "latency"), default=d.cost, help="second objective (default: %(default)s)"
    )
    parser.add_argument("--budget", default=None, help=f"constraint: {SYNTAX} (relative to the model's keep-all)")
    parser.add_argument(
        "--seed", type=int, default=d.seed, help="seed of the sampler (TPE, multivariate) (default: %(default)s)"
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL, e.g. postgresql://user@host/db for many workers running the same command "
        "(default: SQLite in the run folder, one process)",
    )
    parser.add_argument(
        "--study-name",
        default=None,
        help="name of the study in the storage (default: the run folder's name, so one server holds many runs)",
    )
    parser.add_argument(
        "--heartbeat",
        type=int,
        default=d.heartbeat,
        help="seconds between a trial's heartbeats on a server storage; a trial silent for 3 beats "
        "(its worker was killed) is failed and retried (default: %(default)s)",
    )
    parser.add_argument(
        "--search-questions",
        type=int,
        default=d.search_questions,
        help="questions of the search split used (default: %(default)s; 0 = all)",
    )
    parser.add_argument(
        "--heldout-questions",
        type=int,
        default=d.heldout_questions,
        help="questions of the held-out split used for re-scoring (default: %(default)s; 0 = all)",
    )
    parser.add_argument(
        "--heldout-fraction",
        type=float,
        default=d.heldout_fraction,
        help="share of questions (whole articles) held out (default: %(default)s)",
    )
    parser.add_argument(
        "--split-seed", type=int, default=d.split_seed, help="seed of the article split (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=d.batch_size, help="evaluation batch size (default: %(default)s)"
    )
    parser.add_argument(
        "--latency-sample",
        type=int,
        default=d.latency_sample,
        help="features timed per latency measurement (default: %(default)s)",
    )
    parser.add_argument(
        "--latency-repeats",
        type=int,
        default=d.latency_repeats,
        help="timed rounds per latency measurement (default: %(default)s)",
    )
    parser.add_argument(
        "--latency-batch-size",
        type=int,
        default=d.latency_batch_size,
        help="batch size of latency timing (default: %(default)s)",
    )
    parser.add_argument(
        "--max-rescore",
        type=int,
        default=d.max_rescore,
        help="search-frontier points re-scored on held-out: first every one within 3 F1 of keep-all on the "
        "search split, then the rest evenly spread (default: %(default)s; baselines always are)",
    )
    parser.add_argument(
        "--significance",
        default=d.significance,
        help=f"token-selection policy: {', '.join(sorted(POLICIES))}; "
        "'+question' to always keep the question; a comma list is searched as a dimension; auto: "
        "lookahead+question when the model has look-ahead probes, else attention (default: %(default)s)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--bert-f1", type=float, default=88.5, help="BERT-base F1 for the BERT-1%% line (default: %(default)s)"
    )
    parser.add_argument("--no-report", action="store_true", help="skip writing the report files")


def run(args: argparse.Namespace) -> int:
    budget = parse_budget(args.budget)
    settings = SearchSettings(
        model=args.model,
        data=args.data,
        run_dir=str(args.run_dir),
        trials=args.trials,
        cost=args.cost,
        budget=str(budget) if budget else None,
        seed=args.seed,
        search_questions=args.search_questions or None,
        heldout_questions=args.heldout_questions or None,
        heldout_fraction=args.heldout_fraction,
        split_seed=args.split_seed,
        storage=args.storage,
        batch_size=args.batch_size,
        latency_sample=args.latency_sample,
        latency_repeats=args.latency_repeats,
        latency_batch_size=args.latency_batch_size,
        threads=args.threads,
        max_rescore=args.max_rescore,
        study_name=args.study_name,
        heartbeat=args.heartbeat,
        significance=args.significance
        if args.significance == AUTO_SIGNIFICANCE
        else ",".join(parse_selections(args.significance)),
    )
    run_dir = run_search(settings, budget)
    if run_dir is not None and not args.no_report:
        for path in make_report(run_dir, bert_f1=args.bert_f1):
            print(f"wrote {path}")
    return 0
