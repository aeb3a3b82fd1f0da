"""The Optuna study over per-layer length configurations, from settings to run folder.

Objectives: maximise F1, minimise cost (FLOPs or measured latency relative to keep-all); a budget
is a constraint (``search.objective``). The study lives in SQLite inside the run folder (one
process) or on a database server (any number of workers running the same command; see
``search.worker`` and ``search.storage``). Every completed trial is committed as it finishes:
re-running the same command resumes where a killed run stopped, and the study ends with exactly
``--trials`` completed trials however many workers shared it and however many of them were killed.
The frontier is then re-scored on the held-out half (``search.heldout``) and written with its
provenance (``search.provenance``) to run.json and trials.json.
"""

from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from dynlen.bench.model_io import (
    check_model_source,
    load_qa_model,
    load_tokenizer,
    model_fingerprint,
    smoke_note,
    weights_fingerprint,
)
from dynlen.bench.runner import QARunner
from dynlen.bench.squad import SquadData, limit_examples, load_squad, split_by_article
from dynlen.engine.config import LengthConfig, parse_selection
from dynlen.search import storage as st
from dynlen.search.budget import Budget, check_reachable
from dynlen.search.heldout import HeldOutScorer, points_to_rescore
from dynlen.search.objective import Objective, completed_points
from dynlen.search.provenance import run_info
from dynlen.search.records import TrialPoint, write_run
from dynlen.search.settings import SearchSettings
from dynlen.search.space import config_from_shares, lowest_share, search_tails
from dynlen.search.worker import Worker, run_trials, writes_report


def split_data(settings: SearchSettings) -> tuple[SquadData, SquadData, SquadData]:
    """(whole file, search split, held-out split)."""
    data = load_squad(settings.data)
    search, heldout = split_by_article(data, settings.heldout_fraction, settings.split_seed)
    return data, limit_examples(search, settings.search_questions), limit_examples(heldout, settings.heldout_questions)


def cheapest_config(num_layers: int) -> LengthConfig:
    """The cheapest configuration the search space allows: every layer keeps its lowest share."""
    return config_from_shares([lowest_share(i, num_layers) for i in range(num_layers)])


def run_search(settings: SearchSettings, budget: Budget | None) -> Path | None:
    """Search, re-score the frontier on the held-out split, write run.json/trials.json.

    Returns the run folder, or None when another worker of the same study writes it. Everything
    a user can get wrong is checked before anything is written, each before the expensive step
    that needs it: settings, model source and storage before the data loads, the data before the
    model loads, the model's policies and the budget before the study is opened. A refused
    command leaves no run folder, study or lock behind, so its corrected form starts cleanly.
    """
    settings.check()
    check_model_source(settings.model)  # a missing folder or an unreachable hub: one line, at once
    settings = settings.resolved()
    if settings.load.threads:
        import torch

        torch.set_num_threads(settings.load.threads)
    started = time.time()
    worker = Worker(settings)
    worker.check()
    data, search_data, heldout_data = split_data(settings)
    runner = load_runner(settings, search_data, budget)
    try:
        worker.claim()
        study = worker.open(data.fingerprint, model_fingerprint(settings.model))
        worker.enqueue_baselines(runner.num_layers)
        objective = Objective(settings, runner, budget, reuse=worker.stored_scores)
        print(
            f"searching {settings.model}{_smoke(settings.model)} on {search_data.source}: {len(search_data.examples)} questions, "
            f"{len(runner.features)} features; cost={settings.cost}, budget={budget or 'none'}, "
            f"sampler={settings.sampler} (seed {settings.seed + worker.index}), study {study.study_name!r}"
        )
        run_trials(settings, worker, objective)
        if not writes_report(worker):
            print(f"study {study.study_name!r} is complete; the worker that finished it writes {settings.run_dir}")
            return None
        with st.file_lock(Path(settings.run_dir) / "report.lock") as mine:
            if not mine:
                print(f"another process is writing {settings.run_dir}; leaving it the run folder")
                return None
            write_results(settings, budget, worker, heldout_data, search_data, runner, started)
        return Path(settings.run_dir)
    finally:
        worker.close()


def _smoke(model: str) -> str:
    note = smoke_note(model)
    return f" ({note})" if note else ""


def load_runner(settings: SearchSettings, search_data: SquadData, budget: Budget | None) -> QARunner:
    """The model on the search split, after checking that it can run every policy and reach the budget."""
    load = settings.load
    tokenizer = load_tokenizer(settings.model, revision=load.revision, trust_remote_code=load.trust_remote_code)
    model = load_qa_model(settings.model, **load.from_pretrained())
    runner = QARunner(
        settings.model,
        search_data,
        settings.batch_size,
        model=model,
        tokenizer=tokenizer,
        progress=False,
        device=load.device,
    )
    for tail in search_tails(settings.significance, settings.precision):  # one line if the model cannot
        runner.adaptive.check_policy(*parse_selection(tail.partition("/")[0]))
    if budget is not None:
        check_reachable(budget, runner.flops(cheapest_config(runner.num_layers)), "search split")
    return runner


def write_results(
    settings: SearchSettings,
    budget: Budget | None,
    worker: Worker,
    heldout_data: SquadData,
    search_data: SquadData,
    runner: QARunner,
    started: float,
) -> None:
    """Re-score the frontier and baselines on the held-out split and write the run folder."""
    study = worker.study
    points = completed_points(study)
    report_unreachable(points, budget)
    heldout_runner = QARunner(
        settings.model,
        heldout_data,
        settings.batch_size,
        model=runner.model,
        tokenizer=runner.tokenizer,
        progress=False,
        device=runner.device,
    )
    scorer = HeldOutScorer(settings, heldout_runner, study)
    to_score = points_to_rescore(points, settings.cost, settings.max_rescore)
    for p in tqdm(to_score, desc="re-scoring on held-out", unit="config", disable=settings.load.quiet):
        p.heldout = scorer.score(p.length_config)
    info = run_info(settings, budget, study, points, search_data, heldout_data, started)
    info.extra["weights_sha"] = weights_fingerprint(runner.model)  # a choice of this run names these weights
    if smoke_note(settings.model):
        info.extra["smoke_model"] = smoke_note(settings.model)
    write_run(Path(settings.run_dir), info, points)


def report_unreachable(points: list[TrialPoint], budget: Budget | None) -> None:
    if budget is None or any(p.feasible for p in points):
        return
    closest = min(points, key=lambda p: budget.violation(p.search))
    print(
        f"budget {budget} is unreachable in this study: no trial meets it. Cheapest configuration seen: "
        f"{closest.label} ({budget.name} = {budget.value(closest.search)}, F1 {closest.search.f1:.2f})"
    )
