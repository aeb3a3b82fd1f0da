"""The Optuna study over per-layer length configurations.

Objectives: maximise F1, minimise cost (FLOPs or measured latency relative to keep-all).
A budget becomes an Optuna constraint, so trials that miss it stay in the study but never
reach the frontier. The study lives in SQLite inside the run folder (or any Optuna storage
URL), and every completed trial is committed as it finishes: re-running the same command
resumes where a killed run stopped.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
from tqdm import tqdm

from bench.config import LengthConfig
from bench.errors import UserError
from bench.model_io import load_qa_model, load_tokenizer
from bench.runner import QARunner, bert_base_qa
from bench.squad import SquadData, limit_examples, load_squad, split_by_article
from search.budget import Budget
from search.frontier import pareto_front
from search.records import RunInfo, Scores, TrialPoint, write_run
from search.space import baseline_params, sample_config

STUDY_NAME = "dynlen"
COSTS = ("flops", "latency")
SAMPLERS = ("tpe", "nsga2")


@dataclass(frozen=True)
class SearchSettings:
    """Everything a run depends on; stored in the study so a resume can check it."""

    model: str
    data: str
    run_dir: str
    trials: int = 100
    cost: str = "flops"
    budget: str | None = None
    sampler: str = "tpe"
    seed: int = 0
    search_questions: int | None = 500
    heldout_questions: int | None = 1000
    heldout_fraction: float = 0.5
    split_seed: int = 0
    storage: str | None = None
    batch_size: int = 32
    latency_sample: int = 16
    latency_repeats: int = 3
    latency_batch_size: int = 1
    threads: int | None = None
    max_rescore: int = 16

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.run_dir).resolve() / 'study.db'}"

    def identity(self) -> dict:
        """The settings that must not change between a run and its resumption."""
        keys = ("model", "data", "cost", "budget", "search_questions", "heldout_fraction", "split_seed")
        return {k: getattr(self, k) for k in keys}


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """Both samplers read the budget from each trial's constraint (``Trial.set_constraint``)."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=10)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)
    raise UserError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def split_data(settings: SearchSettings) -> tuple[SquadData, SquadData]:
    data = load_squad(settings.data)
    search, heldout = split_by_article(data, settings.heldout_fraction, settings.split_seed)
    return limit_examples(search, settings.search_questions), limit_examples(heldout, settings.heldout_questions)


def open_study(settings: SearchSettings, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """Create the study, or resume it after checking it was made with the same settings."""
    Path(settings.run_dir).mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # heartbeats let any worker fail (and retry) a trial whose process was killed
        storage = optuna.storages.RDBStorage(
            settings.storage_url,
            heartbeat_interval=30,
            grace_period=90,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=storage,
        sampler=sampler,
        directions=["maximize", "minimize"],
        load_if_exists=True,
    )
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", settings.identity())
    elif stored != settings.identity():
        changed = {k: (stored.get(k), v) for k, v in settings.identity().items() if stored.get(k) != v}
        raise UserError(
            f"{settings.run_dir} holds a study made with other settings {changed} (stored, now); "
            "pick another RUN= name or delete that folder to start over"
        )
    return study


def _fail_orphans(study: optuna.Study) -> None:
    """Trials left RUNNING by a killed single-worker run are failed so they are retried."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def enqueue_baselines(study: optuna.Study, num_layers: int) -> None:
    if study.user_attrs.get("baselines_enqueued"):
        return
    for name, params in baseline_params(num_layers).items():
        study.enqueue_trial(params, user_attrs={"baseline": name}, skip_if_exists=True)
    study.set_user_attr("baselines_enqueued", True)


def measure_scores(
    runner: QARunner, settings: SearchSettings, config: LengthConfig, timed: bool, desc: str = "evaluating"
) -> Scores:
    """EM/F1 and exact FLOPs of one configuration on the runner's split; latency vs keep-all when ``timed``."""
    result = runner.evaluate(config, desc=desc)
    flops = runner.flops(config)
    scores = Scores(
        exact_match=result.exact_match,
        f1=result.f1,
        gflops_per_question=flops.gflops_per_question,
        flops_speedup_vs_keep_all=flops.speedup_vs_keep_all,
        flops_speedup_vs_bert_base=flops.speedup_vs_bert_base,
        flops_speedup_vs_bert_base_padded384=runner.flops(config, padded=True).speedup_vs_bert_base,
    )
    if timed:
        lat = runner.latency(
            config,
            sample=settings.latency_sample,
            batch_size=settings.latency_batch_size,
            repeats=settings.latency_repeats,
            with_bert_base=False,
        )
        scores.latency_speedup_vs_keep_all = lat.vs_keep_all.median
        scores.latency_ms = lat.ms_per_feature
    return scores


class Objective:
    """Scores one sampled configuration on the search split; repeats are served from the study."""

    def __init__(self, settings: SearchSettings, runner: QARunner, budget: Budget | None):
        self.settings = settings
        self.runner = runner
        self.budget = budget
        self.seen: dict[str, dict] = {}

    def remember(self, study: optuna.Study) -> None:
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if "search_scores" in t.user_attrs:
                self.seen[t.user_attrs["label"]] = t.user_attrs["search_scores"]

    def measure(self, config: LengthConfig) -> Scores:
        timed = self.settings.cost == "latency" or bool(self.budget and self.budget.needs_latency)
        return measure_scores(self.runner, self.settings, config, timed)

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        config = sample_config(trial, self.runner.num_layers)
        label = config.label()
        cached = self.seen.get(label)
        scores = Scores(**cached) if cached else self.measure(config)
        self.seen[label] = asdict(scores)
        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("label", label)
        trial.set_user_attr("search_scores", asdict(scores))
        violation = min(self.budget.violation(scores), 1e9) if self.budget else 0.0
        trial.set_user_attr("constraint", [violation])
        trial.set_constraint("budget", violation)
        speed = (
            scores.flops_speedup_vs_keep_all if self.settings.cost == "flops" else scores.latency_speedup_vs_keep_all
        )
        return scores.f1, 1.0 / speed


def completed_points(study: optuna.Study) -> list[TrialPoint]:
    points = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if "search_scores" not in t.user_attrs:
            continue
        constraint = t.user_attrs.get("constraint", [0.0])
        points.append(
            TrialPoint(
                number=t.number,
                config=t.user_attrs["config"],
                label=t.user_attrs["label"],
                baseline=t.user_attrs.get("baseline"),
                feasible=all(c <= 1e-12 for c in constraint),
                search=Scores(**t.user_attrs["search_scores"]),
            )
        )
    return points


def search_seconds(study: optuna.Study) -> float:
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


def run_trials(settings: SearchSettings, study: optuna.Study, objective: Objective) -> None:
    done = len([t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE])
    remaining = max(0, settings.trials - done)
    if remaining == 0:
        print(f"study already has {done} completed trials (asked for {settings.trials}); re-scoring only")
        return
    bar = tqdm(total=remaining, desc=f"search ({done} done before)", unit="trial")

    def tick(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        bar.update(1)
        if trial.values:
            bar.set_postfix(f1=f"{trial.values[0]:.1f}", cost=f"{trial.values[1]:.2f}")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=remaining, callbacks=[tick], gc_after_trial=False)
    bar.close()


def spread(front: list[TrialPoint], most: int) -> list[TrialPoint]:
    """At most ``most`` points evenly spaced along a sorted frontier, both ends included.

    On a small search split, F1 noise makes many near-identical configurations non-dominated;
    re-scoring all of them would cost more than the search itself.
    """
    if len(front) <= most:
        return front
    if most == 1:
        return [front[-1]]
    picks = sorted({round(i * (len(front) - 1) / (most - 1)) for i in range(most)})
    return [front[i] for i in picks]


def points_to_rescore(points: list[TrialPoint], cost: str, most: int = 16) -> list[TrialPoint]:
    """The search-split frontier (feasible only, at most ``most`` points) plus every baseline."""
    key = "flops_speedup_vs_keep_all" if cost == "flops" else "latency_speedup_vs_keep_all"
    front = spread(pareto_front(points, key, split="search"), most)
    for p in front:
        p.on_search_frontier = True
    chosen = {p.number: p for p in front}
    for p in points:
        if p.baseline:
            chosen.setdefault(p.number, p)
    return sorted(chosen.values(), key=lambda p: p.number)


class HeldOutScorer:
    """Re-scores configurations on the held-out split; results are cached in the run folder."""

    def __init__(self, settings: SearchSettings, runner: QARunner):
        self.settings = settings
        self.runner = runner
        self.cache_path = Path(settings.run_dir) / "heldout_cache.json"
        self.cache: dict[str, dict] = json.loads(self.cache_path.read_text()) if self.cache_path.is_file() else {}
        self._keep_all_vs_base: float | None = self.cache.get("__keep_all_vs_bert_base__")

    def keep_all_vs_bert_base(self) -> float:
        """Latency of BERT-base / keep-all on the held-out timing sample, measured once per run."""
        if self._keep_all_vs_base is None:
            keep_all = LengthConfig.keep_all(self.runner.num_layers)
            lat = self.runner.latency(
                keep_all,
                sample=self.settings.latency_sample,
                batch_size=self.settings.latency_batch_size,
                repeats=self.settings.latency_repeats,
                bert_base=bert_base_qa(),
            )
            self._keep_all_vs_base = lat.vs_bert_base.median
            self.cache["__keep_all_vs_bert_base__"] = self._keep_all_vs_base
            self._save()
        return self._keep_all_vs_base

    def _save(self) -> None:
        tmp = self.cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.cache, indent=1))
        tmp.replace(self.cache_path)

    def score(self, config: LengthConfig) -> Scores:
        label = config.label()
        if label in self.cache:
            return Scores(**self.cache[label])
        scores = measure_scores(self.runner, self.settings, config, timed=True, desc=f"held-out {label}")
        scores.latency_speedup_vs_bert_base = scores.latency_speedup_vs_keep_all * self.keep_all_vs_bert_base()
        self.cache[label] = asdict(scores)
        self._save()
        return scores


def run_search(settings: SearchSettings, budget: Budget | None) -> Path:
    """Search, re-score the frontier on the held-out split, write run.json/trials.json and the report."""
    if settings.cost not in COSTS:
        raise UserError(f"unknown cost {settings.cost!r}; choose flops or latency")
    if settings.trials < 1:
        raise UserError("TRIALS must be at least 1")
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    started = time.time()
    search_data, heldout_data = split_data(settings)
    tokenizer = load_tokenizer(settings.model)
    model = load_qa_model(settings.model)
    runner = QARunner(
        settings.model, search_data, settings.batch_size, model=model, tokenizer=tokenizer, progress=False
    )
    study = open_study(settings, make_sampler(settings.sampler, settings.seed))
    _fail_orphans(study)
    enqueue_baselines(study, runner.num_layers)
    objective = Objective(settings, runner, budget)
    objective.remember(study)
    print(
        f"searching {settings.model} on {search_data.source}: {len(search_data.examples)} questions, "
        f"{len(runner.features)} features; cost={settings.cost}, budget={budget or 'none'}, sampler={settings.sampler}"
    )
    run_trials(settings, study, objective)

    points = completed_points(study)
    report_unreachable(points, budget)
    heldout_runner = QARunner(
        settings.model, heldout_data, settings.batch_size, model=model, tokenizer=tokenizer, progress=False
    )
    scorer = HeldOutScorer(settings, heldout_runner)
    to_score = points_to_rescore(points, settings.cost, settings.max_rescore)
    for p in tqdm(to_score, desc="re-scoring on held-out", unit="config"):
        p.heldout = scorer.score(p.length_config)
    keep_all = next((p for p in points if p.baseline == "keep-all" and p.heldout), None)
    info = RunInfo(
        name=Path(settings.run_dir).name,
        model=settings.model,
        data=settings.data,
        search_split=search_data.source,
        heldout_split=heldout_data.source,
        search_questions=len(search_data.examples),
        heldout_questions=len(heldout_data.examples),
        trials=len(points),
        sampler=settings.sampler,
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
            "settings": asdict(settings),
        },
    )
    write_run(Path(settings.run_dir), info, points)
    return Path(settings.run_dir)


def report_unreachable(points: list[TrialPoint], budget: Budget | None) -> None:
    if budget is None or any(p.feasible for p in points):
        return
    closest = min(points, key=lambda p: budget.violation(p.search))
    print(
        f"budget {budget} is unreachable in this study: no trial meets it. Cheapest configuration seen: "
        f"{closest.label} ({budget.name} = {budget.value(closest.search)}, F1 {closest.search.f1:.2f})"
    )
