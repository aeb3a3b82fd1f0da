"""Where a run's numbers came from: the machine, the search time and the run.json record."""

from __future__ import annotations

import datetime as dt
import os
import platform
import time
from pathlib import Path

import optuna

from dynlen.bench.squad import SquadData
from dynlen.search.budget import Budget
from dynlen.search.records import RunInfo, TrialPoint
from dynlen.search.settings import SearchSettings


def search_seconds(study: optuna.Study) -> float:
    """Time spent in completed trials, summed over every worker."""
    total = 0.0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if t.datetime_start and t.datetime_complete:
            total += (t.datetime_complete - t.datetime_start).total_seconds()
    return total


def machine_description() -> str:
    import torch

    return (
        f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads"
    )


def run_info(
    settings: SearchSettings,
    budget: Budget | None,
    study: optuna.Study,
    points: list[TrialPoint],
    search_data: SquadData,
    heldout_data: SquadData,
    started: float,
) -> RunInfo:
    """The run.json record of a finished run: what was searched, on what, how long, where."""
    keep_all = next((p for p in points if p.baseline == "keep-all" and p.heldout), None)
    stored = study.user_attrs.get("settings", {})
    return RunInfo(
        name=Path(settings.run_dir).name,
        model=settings.model,
        data=settings.data,
        search_split=search_data.source,
        heldout_split=heldout_data.source,
        search_questions=len(search_data.examples),
        heldout_questions=len(heldout_data.examples),
        trials=len(points),
        sampler=stored.get("sampler", settings.sampler),
        cost=settings.cost,
        budget=str(budget) if budget else None,
        seconds=search_seconds(study),
        machine=machine_description(),
        date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        keep_all_heldout_f1=keep_all.heldout.f1 if keep_all else None,
        latency_batch_size=settings.latency_batch_size,
        extra={
            "wall_seconds_this_invocation": round(time.time() - started, 1),
            "latency_vs_bert_base": "measured keep-all/BERT-base ratio x measured config/keep-all ratio",
            "study": study.study_name,
            "workers_started": int(study.user_attrs.get("worker_starts", 1)),
            "settings": settings.public(),
        },
    )
