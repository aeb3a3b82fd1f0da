"""The Optuna study over per-layer length configurations.

Objectives: maximise F1, minimise cost (FLOPs or measured latency relative to keep-all).
A budget becomes an Optuna constraint, so trials that miss it stay in the study but never
reach the frontier. The study lives in SQLite inside the run folder (one process) or on a
database server (any number of workers running the same command; see ``search.storage``).
Every completed trial is committed as it finishes: re-running the same command resumes where a
killed run stopped, and the study ends with exactly ``--trials`` completed trials however many
workers shared it and however many of them were killed.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
from sqlalchemy.engine import make_url
from tqdm import tqdm

from bench.config import LengthConfig
from bench.errors import UserError
from bench.model_io import load_qa_model, load_tokenizer, model_fingerprint
from bench.runner import QARunner, bert_base_qa
from bench.squad import SquadData, limit_examples, load_squad, split_by_article
from bench.uncertainty import paired_interval
from search import storage as st
from search.budget import Budget, check_reachable
from search.frontier import pareto_front
from search.records import RunInfo, Scores, TrialPoint, write_run
from search.space import LOWEST_SHARE, baseline_params, config_from_shares, parse_selections, sample_config

LEGACY_STUDY_NAME = "dynlen"  # the one fixed name every run used before names came from the run folder
COSTS = ("flops", "latency")
SAMPLERS = ("tpe", "nsga2")
COMPLETE = optuna.trial.TrialState.COMPLETE
RUNNING = optuna.trial.TrialState.RUNNING
WAITING = optuna.trial.TrialState.WAITING
FAIL = optuna.trial.TrialState.FAIL
# Which command-line option each identity key comes from, for the refusal message.
OPTION = {
    "model": "--model",
    "model_sha": "--model (its files changed)",
    "data": "--data",
    "data_sha": "--data (the file's content changed)",
    "cost": "--cost",
    "budget": "--budget",
    "sampler": "--sampler",
    "seed": "--seed",
    "search_questions": "--search-questions",
    "heldout_questions": "--heldout-questions",
    "heldout_fraction": "--heldout-fraction",
    "split_seed": "--split-seed",
    "latency_sample": "--latency-sample",
    "latency_repeats": "--latency-repeats",
    "latency_batch_size": "--latency-batch-size",
    "significance": "--significance",
}


@dataclass(frozen=True)
class SearchSettings:
    """Everything a run depends on; the part that changes numbers is stored in the study."""

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
    study_name: str | None = None
    heartbeat: int = 30  # seconds between a trial's heartbeats on a server storage; stale after 3 missed
    significance: str = "attention"  # the policy, or a comma list searched as a categorical dimension

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.run_dir).resolve() / 'study.db'}"

    @property
    def default_storage(self) -> bool:
        return self.storage is None

    @property
    def name(self) -> str:
        """The study's name: ``--study-name``, else the run folder's name, so one server holds many runs."""
        return self.study_name or Path(self.run_dir).resolve().name

    def identity(self, data_sha: str | None = None, model_sha: str | None = None) -> dict:
        """The settings that change the numbers: a resumed study must have been made with the same."""
        keys = [k for k in OPTION if k not in ("model_sha", "data_sha")]
        out = {k: getattr(self, k) for k in keys}
        if data_sha is not None:
            out["data_sha"] = data_sha
        if model_sha is not None:
            out["model_sha"] = model_sha
        return out

    def public(self) -> dict:
        """The settings as written to run.json: a server password never reaches the run folder."""
        out = asdict(self)
        if self.storage:
            try:
                out["storage"] = make_url(self.storage).render_as_string(hide_password=True)
            except Exception:  # noqa: BLE001 - an unparsable URL was refused earlier; never print it raw
                out["storage"] = "<hidden>"
        return out


def make_sampler(name: str, seed: int, shared: bool = False) -> optuna.samplers.BaseSampler:
    """Both samplers read the budget from each trial's constraint (``Trial.set_constraint``).

    ``shared``: other workers run trials at the same time; TPE then treats their running trials
    as bad points (constant liar) so the workers spread out instead of piling on one region.
    """
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=10, constant_liar=shared)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)
    raise UserError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def split_data(settings: SearchSettings) -> tuple[SquadData, SquadData, SquadData]:
    """(whole file, search split, held-out split)."""
    data = load_squad(settings.data)
    search, heldout = split_by_article(data, settings.heldout_fraction, settings.split_seed)
    return data, limit_examples(search, settings.search_questions), limit_examples(heldout, settings.heldout_questions)


def cost_name(cost: str) -> str:
    return f"{cost}_vs_keep_all"


class Worker:
    """One process's share of a study: its storage, its lock, its seed and the trials it ran."""

    def __init__(self, settings: SearchSettings):
        self.settings = settings
        self.url = settings.storage_url
        self.sqlite = st.parse_storage_url(self.url).get_backend_name() == "sqlite"  # bad URL: one line
        self.id = f"{socket.gethostname()}:{os.getpid()}:{int(time.time())}"
        self.run_lock: st.RunLock | None = None
        self.lock: st.StudyLock | None = None
        self.study: optuna.Study | None = None
        self.index = 0
        self.ran: list[int] = []

    # --- before anything loads ------------------------------------------------------------
    def claim(self) -> None:
        """Check the storage and, on SQLite, become its only process (or refuse in one line)."""
        st.validate_storage(self.url)
        if self.sqlite:
            database = Path(make_url(self.url).database or Path(self.settings.run_dir) / "study.db")
            self.run_lock = st.RunLock(database.parent, database.name + ".lock")
            if not self.run_lock.acquire():
                raise UserError(
                    f"another process is already searching with {database} (SQLite serves one process); "
                    "wait for it, or run many workers on a server storage: "
                    "--storage postgresql://user@host/db (make search WORKERS=3 STORAGE=...)"
                )
        self.lock = st.StudyLock(self.url, self.settings.name)

    def open(self, data_sha: str, model_sha: str) -> optuna.Study:
        """Create or load the study, check its identity and take a worker number, all under the lock."""
        heartbeat = None if self.sqlite else self.settings.heartbeat
        with self.lock.held():
            storage = st.make_storage(self.url, heartbeat, 3 * heartbeat if heartbeat else None)
            name = self._study_name(storage)
            study = optuna.create_study(
                study_name=name,
                storage=storage,
                directions=["maximize", "minimize"],
                load_if_exists=True,
            )
            check_identity(study, self.settings, self.settings.identity(data_sha, model_sha))
            self.index = int(study.user_attrs.get("worker_starts", 0))
            study.set_user_attr("worker_starts", self.index + 1)
            if study.metric_names is None:  # optuna-dashboard shows these instead of values_0/1
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.set_metric_names(["f1", cost_name(self.settings.cost)])
            if self.sqlite:
                recover_orphans(study)
        # a fresh seed on every start: workers started together draw different points, and a run
        # restarted after a kill does not replay the draws its first start already measured
        study.sampler = make_sampler(self.settings.sampler, self.settings.seed + self.index, shared=not self.sqlite)
        self.study = study
        return study

    def _study_name(self, storage: optuna.storages.BaseStorage) -> str:
        """The run's name; a run folder made before names were derived keeps its one old study."""
        if self.settings.study_name or not self.settings.default_storage:
            return self.settings.name
        names = [s.study_name for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)]
        if names == [LEGACY_STUDY_NAME] and self.settings.name != LEGACY_STUDY_NAME:
            return LEGACY_STUDY_NAME
        return self.settings.name

    def enqueue_baselines(self, num_layers: int) -> None:
        """Keep-all and the constant ratios, queued once per study however many workers start."""
        with self.lock.held():
            if self.study.user_attrs.get("baselines_enqueued"):
                return
            for name, params in baseline_params(
                num_layers, selections=parse_selections(self.settings.significance)
            ).items():
                self.study.enqueue_trial(params, user_attrs={"baseline": name}, skip_if_exists=True)
            self.study.set_user_attr("baselines_enqueued", True)

    def fail_stale(self) -> None:
        if not self.sqlite:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)

    def close(self) -> None:
        if self.lock is not None:
            self.lock.close()
        if self.run_lock is not None:
            self.run_lock.release()


def check_identity(study: optuna.Study, settings: SearchSettings, identity: dict) -> None:
    """Refuse, in one line naming the option, a resume whose numbers would not be comparable.

    A study made before a key was recorded adopts the current value for it.
    """
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", identity)
        return
    changed = [k for k, v in identity.items() if k in stored and stored[k] != v]
    if changed:
        what = "; ".join(f"{OPTION.get(k, k)} was {stored[k]!r}, now {identity[k]!r}" for k in changed)
        raise UserError(
            f"study {study.study_name!r} ({settings.run_dir}) was made with other settings: {what}. "
            "Re-run with the stored values to resume, or start fresh with another --run-dir (RUN=) or "
            "--study-name, or delete the run folder"
        )
    if any(k not in stored for k in identity):
        study.set_user_attr("settings", {**identity, **stored})


def recover_orphans(study: optuna.Study) -> None:
    """Fail the trials a killed single process left RUNNING and queue their parameters again.

    Only called by the holder of the SQLite run lock: no other process can be running them.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)
    for t in study.get_trials(deepcopy=False, states=(RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, state=FAIL)
        retry(study, study._storage.get_trial(t._trial_id))
        print(f"trial {t.number} was left running by a killed run: failed it and queued its configuration again")


def measure_scores(
    runner: QARunner,
    settings: SearchSettings,
    config: LengthConfig,
    timed: bool,
    desc: str = "evaluating",
    per_question: list | None = None,
) -> Scores:
    """EM/F1 and exact FLOPs of one configuration on the runner's split; latency vs keep-all when ``timed``.

    ``per_question``, when given, receives each question's F1 (for paired intervals).
    """
    result = runner.evaluate(config, desc=desc)
    if per_question is not None:
        per_question.extend(result.per_question_f1 or [])
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
    """Scores one sampled configuration on the search split; a configuration any worker already
    measured is read back from the study instead of measured again."""

    def __init__(self, settings: SearchSettings, runner: QARunner, budget: Budget | None, worker: Worker | None = None):
        self.settings = settings
        self.runner = runner
        self.budget = budget
        self.worker = worker
        self.on_start = None  # called once when the trial exists (releases the start lock)

    def measure(self, config: LengthConfig) -> Scores:
        timed = self.settings.cost == "latency" or bool(self.budget and self.budget.needs_latency)
        return measure_scores(self.runner, self.settings, config, timed)

    def stored_scores(self, trial: optuna.Trial) -> tuple[int, dict] | None:
        """(trial number, search scores) of a trial with the same parameters, waiting for an earlier
        running one (another worker measuring the same point) to finish first."""
        study = trial.study
        while True:
            same = [
                t
                for t in study.get_trials(deepcopy=False, states=(COMPLETE, RUNNING))
                if t.number != trial.number and t.params == trial.params
            ]
            done = [t for t in same if t.state == COMPLETE and "search_scores" in t.user_attrs]
            if done:
                return done[0].number, done[0].user_attrs["search_scores"]
            if not any(t.state == RUNNING and t.number < trial.number for t in same):
                return None
            if self.worker is not None:
                self.worker.fail_stale()
            time.sleep(0.5)

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        if self.on_start is not None:
            self.on_start()
            self.on_start = None
        if self.worker is not None:
            trial.set_user_attr("worker", self.worker.id)
            self.worker.ran.append(trial.number)
        probes = self.runner.adaptive.probes
        config = sample_config(
            trial,
            self.runner.num_layers,
            selections=parse_selections(self.settings.significance),
            probed_layers=None if probes is None else probes.layer_ids,
        )
        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("label", config.label())
        stored = self.stored_scores(trial)
        if stored is not None:
            trial.set_user_attr("copied_from", stored[0])
            scores = Scores(**stored[1])
        else:
            scores = self.measure(config)
            trial.set_user_attr("measured", True)
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


def run_trials(settings: SearchSettings, worker: Worker, objective: Objective) -> None:
    """Run trials until the study holds ``settings.trials`` completed ones, counting every worker's.

    A trial starts only while completed + running trials fall short of the target, checked and
    started under the study lock (released by the objective once the trial exists), so workers
    never overshoot. A worker that sees the target covered by running trials waits: if one of
    them belonged to a killed worker, its heartbeat goes stale, it is failed and queued again,
    and the count drops back below the target for someone to run the retry.
    """
    study, target = worker.study, settings.trials
    done = len(study.get_trials(deepcopy=False, states=(COMPLETE,)))
    if done >= target:
        print(f"study already has {done} completed trials (asked for {target}); re-scoring only")
        return
    bar = tqdm(total=target - done, desc=f"search ({done} done before)", unit="trial")

    def tick(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        bar.update(1)
        if trial.values:
            bar.set_postfix(f1=f"{trial.values[0]:.1f}", cost=f"{trial.values[1]:.2f}")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        while True:
            worker.lock.acquire()
            started = False
            try:
                worker.fail_stale()
                trials = study.get_trials(deepcopy=False, states=(COMPLETE, RUNNING))
                complete = sum(t.state == COMPLETE for t in trials)
                if complete >= target:
                    break
                if len(trials) < target:  # completed + running (every worker's) still short
                    started = True
                    objective.on_start = worker.lock.release
                    study.optimize(objective, n_trials=1, callbacks=[tick], gc_after_trial=False)
            finally:
                objective.on_start = None
                worker.lock.release()
            if not started:
                time.sleep(min(1.0, settings.heartbeat / 2))
    finally:
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
    """Re-scores configurations on the held-out split; the scores are kept in the study.

    The study is where the identity of a run is checked, so scores cached there can never come
    from another split size, seed or model; and every machine sharing a server study reuses them.
    Optuna freezes a finished trial's attributes, so they are study user attributes keyed by the
    configuration's label (``heldout:<label>``), copied into each trial's record in trials.json.
    """

    KEEP_ALL_VS_BASE = "heldout:keep_all_vs_bert_base"

    def __init__(self, settings: SearchSettings, runner: QARunner, study: optuna.Study):
        self.settings = settings
        self.runner = runner
        self.study = study
        self.cache = {k: v for k, v in study.user_attrs.items() if k.startswith(("heldout:", "heldout-f1:"))}

    def keep_all_vs_bert_base(self) -> float:
        """Latency of BERT-base / keep-all on the held-out timing sample, measured once per run."""
        if self.KEEP_ALL_VS_BASE not in self.cache:
            keep_all = LengthConfig.keep_all(self.runner.num_layers)
            lat = self.runner.latency(
                keep_all,
                sample=self.settings.latency_sample,
                batch_size=self.settings.latency_batch_size,
                repeats=self.settings.latency_repeats,
                bert_base=bert_base_qa(),
            )
            self._store(self.KEEP_ALL_VS_BASE, lat.vs_bert_base.median)
        return self.cache[self.KEEP_ALL_VS_BASE]

    def _store(self, key: str, value) -> None:
        self.cache[key] = value
        self.study.set_user_attr(key, value)

    def score(self, config: LengthConfig) -> Scores:
        """Held-out scores with the paired 95% interval of the F1 difference to keep-all.

        Keep-all drops nothing, so one key serves it under every policy; each configuration's
        per-question F1 is kept too (``heldout-f1:<label>``), so intervals survive a resume.
        """
        keep_all = LengthConfig.keep_all(self.runner.num_layers)
        label = keep_all.label() if config.is_keep_all else config.label()
        key = f"heldout:{label}"
        if key in self.cache:
            return Scores(**self.cache[key])
        per_question: list[float] = []
        scores = measure_scores(
            self.runner, self.settings, config, timed=True, desc=f"held-out {label}", per_question=per_question
        )
        scores.latency_speedup_vs_bert_base = scores.latency_speedup_vs_keep_all * self.keep_all_vs_bert_base()
        self._store(f"heldout-f1:{label}", per_question)
        if config.is_keep_all:
            scores.f1_delta_low = scores.f1_delta_high = 0.0
        else:
            reference = self.cache.get(f"heldout-f1:{keep_all.label()}")
            if reference is None:
                self.score(keep_all)
                reference = self.cache[f"heldout-f1:{keep_all.label()}"]
            scores.f1_delta_low, scores.f1_delta_high = paired_interval(per_question, reference)
        self._store(key, asdict(scores))
        return scores


def cheapest_config(num_layers: int) -> LengthConfig:
    """The cheapest configuration the search space allows: every layer keeps the lowest share."""
    return config_from_shares([LOWEST_SHARE] * num_layers)


def writes_report(worker: Worker) -> bool:
    """Whether this worker writes the run folder: the one whose trial completed last, or a run
    that found the study already complete (a re-run, or a report step). Every worker reads the
    same stored trials, so exactly one of those that ran trials elects itself."""
    if not worker.ran:
        return True
    complete = [t for t in worker.study.get_trials(deepcopy=False, states=(COMPLETE,)) if t.datetime_complete]
    if not complete:
        return True
    last = max(complete, key=lambda t: (t.datetime_complete, t.number))
    return last.user_attrs.get("worker") == worker.id


def run_search(settings: SearchSettings, budget: Budget | None) -> Path | None:
    """Search, re-score the frontier on the held-out split, write run.json/trials.json.

    Returns the run folder, or None when another worker of the same study writes it. Everything
    a user can get wrong is checked before the expensive step that needs it: settings and storage
    before the data loads, the data and the run's identity before the model loads, the budget
    before the first trial.
    """
    if settings.cost not in COSTS:
        raise UserError(f"unknown cost {settings.cost!r}; choose flops or latency")
    if settings.sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {settings.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if settings.trials < 1:
        raise UserError("TRIALS must be at least 1")
    if settings.heartbeat < 1:
        raise UserError("--heartbeat must be at least 1 second")
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    started = time.time()
    worker = Worker(settings)
    try:
        worker.claim()
        data, search_data, heldout_data = split_data(settings)
        study = worker.open(data.fingerprint, model_fingerprint(settings.model))
        tokenizer = load_tokenizer(settings.model)
        model = load_qa_model(settings.model)
        runner = QARunner(
            settings.model, search_data, settings.batch_size, model=model, tokenizer=tokenizer, progress=False
        )
        if budget is not None:
            check_reachable(budget, runner.flops(cheapest_config(runner.num_layers)), "search split")
        worker.enqueue_baselines(runner.num_layers)
        objective = Objective(settings, runner, budget, worker)
        print(
            f"searching {settings.model} on {search_data.source}: {len(search_data.examples)} questions, "
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


def write_results(
    settings: SearchSettings,
    budget: Budget | None,
    worker: Worker,
    heldout_data: SquadData,
    search_data: SquadData,
    runner: QARunner,
    started: float,
) -> None:
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
    )
    scorer = HeldOutScorer(settings, heldout_runner, study)
    to_score = points_to_rescore(points, settings.cost, settings.max_rescore)
    for p in tqdm(to_score, desc="re-scoring on held-out", unit="config"):
        p.heldout = scorer.score(p.length_config)
    keep_all = next((p for p in points if p.baseline == "keep-all" and p.heldout), None)
    stored = study.user_attrs.get("settings", {})
    info = RunInfo(
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
    write_run(Path(settings.run_dir), info, points)


def report_unreachable(points: list[TrialPoint], budget: Budget | None) -> None:
    if budget is None or any(p.feasible for p in points):
        return
    closest = min(points, key=lambda p: budget.violation(p.search))
    print(
        f"budget {budget} is unreachable in this study: no trial meets it. Cheapest configuration seen: "
        f"{closest.label} ({budget.name} = {budget.value(closest.search)}, F1 {closest.search.f1:.2f})"
    )
