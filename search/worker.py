"""One process's share of a study: the storage it claims, the identity it checks, the trials it runs.

Any number of workers run the same command against one study (SQLite: one process; a database
server: many). Every one counts completed trials under the study lock so the study ends with
exactly ``--trials`` of them, recovers the trials a killed worker left behind, and the one whose
trial completed last writes the run folder (:func:`writes_report`).
"""

from __future__ import annotations

import os
import socket
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from sqlalchemy.engine import make_url
from tqdm import tqdm

from dynlen.errors import UserError
from dynlen.search import storage as st
from dynlen.search.settings import SearchSettings, cost_name, make_sampler
from dynlen.search.space import baseline_params, late_params, search_tails

COMPLETE = optuna.trial.TrialState.COMPLETE
RUNNING = optuna.trial.TrialState.RUNNING
FAIL = optuna.trial.TrialState.FAIL


class Worker:
    """One process's share of a study: its storage, its lock, its seed and the trials it ran."""

    def __init__(self, settings: SearchSettings):
        self.settings = settings
        self.url = settings.storage_url
        self.sqlite = st.parse_storage_url(self.url).get_backend_name() == "sqlite"  # bad URL: one line
        self.id = f"{socket.gethostname()}:{os.getpid()}:{int(time.time())}"
        self.run_lock: st.RunLock | None = None
        self.created: Path | None = None  # the run folder, when this process made it
        self.lock: st.StudyLock | None = None
        self.patience = st.Patience(self.url)
        self.storage: optuna.storages.RDBStorage | None = None
        self.study: optuna.Study | None = None
        self.index = 0
        self.ran: list[int] = []

    # --- before anything loads: looks, writes nothing ------------------------------------------
    def check(self) -> None:
        """Refuse, in one line, a storage this process cannot use: bad URL, unreachable server,
        unwritable folder, or (SQLite) a run folder another process is searching."""
        st.validate_storage(self.url)
        if self.sqlite and self._run_lock().held_elsewhere():
            raise self._busy()

    # --- once everything is checked: the first writes -----------------------------------------
    def claim(self) -> None:
        """Make the run folder and, on SQLite, become its only process (or refuse in one line)."""
        if self.sqlite:
            lock = self._run_lock()
            self.created = None if lock.path.parent.exists() else lock.path.parent
            if not lock.acquire():
                raise self._busy()
            self.run_lock = lock
        self.lock = st.StudyLock(self.url, self.settings.name)

    def _run_lock(self) -> st.RunLock:
        database = Path(make_url(self.url).database or Path(self.settings.run_dir) / "study.db")
        return st.RunLock(database.parent, database.name + ".lock")

    def _busy(self) -> UserError:
        database = self._run_lock().path.with_suffix("")
        return UserError(
            f"another process is already searching with {database} (SQLite serves one process); "
            "wait for it, or run many workers on a server storage: "
            "--storage postgresql://user@host/db, the same command on each machine"
        )

    def locked(self, action: Callable[[], object]) -> object:
        """``action()`` under the study lock; started over when the server drops the connection (and the lock).

        Everything done under the lock is safe to repeat: creating or loading the study, enqueueing
        with ``skip_if_exists``, counting trials before starting one.
        """
        while True:
            try:
                with self.lock.held():
                    self._patient(False)
                    try:
                        return action()
                    finally:
                        self._patient(True)
            except st.StorageOutage as exc:
                self.lock.drop()
                self.patience.wait(str(exc))

    def _patient(self, patient: bool) -> None:
        if isinstance(self.storage, st.PatientStorage):
            self.storage.patient = patient

    def open(self, data_sha: str, model_sha: str) -> optuna.Study:
        """Create or load the study, check its identity and take a worker number, all under the lock."""
        study = self.locked(lambda: self._open(data_sha, model_sha))
        # a fresh seed on every start: workers started together draw different points, and a run
        # restarted after a kill does not replay the draws its first start already measured
        study.sampler = make_sampler(self.settings.sampler, self.settings.seed + self.index, shared=not self.sqlite)
        self.study = study
        return study

    def _open(self, data_sha: str, model_sha: str) -> optuna.Study:
        heartbeat = None if self.sqlite else self.settings.heartbeat
        if self.storage is None:
            patience = None if self.sqlite else self.patience
            self.storage = st.make_storage(self.url, heartbeat, 3 * heartbeat if heartbeat else None, patience)
            self._patient(False)
        storage = self.storage
        study = optuna.create_study(
            study_name=self.settings.name,
            storage=storage,
            directions=["maximize", "minimize"],
            load_if_exists=True,
        )
        identity = self.settings.identity(data_sha, model_sha)
        if not pinned(study, identity, self.sqlite):
            optuna.delete_study(study_name=self.settings.name, storage=storage)
            study = optuna.create_study(
                study_name=self.settings.name, storage=storage, directions=["maximize", "minimize"]
            )
            print(f"study {self.settings.name!r} had no completed trial; started it again with these settings")
        check_identity(study, self.settings, identity)
        self.index = int(study.user_attrs.get("worker_starts", 0))
        study.set_user_attr("worker_starts", self.index + 1)
        if study.metric_names is None:  # optuna-dashboard shows these instead of values_0/1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(["f1", cost_name(self.settings.cost)])
        if self.sqlite:
            recover_orphans(study)
        return study

    def enqueue_baselines(self, num_layers: int) -> None:
        """Keep-all, the constant ratios and the late-drop seeds, queued once per study however many workers start.

        The seeds are ordinary trials (no ``baseline`` attribute): starting points, not comparisons,
        so only as many are queued as the run's trials leave room for after the baselines.
        """
        self.locked(lambda: self._enqueue_baselines(num_layers))

    def _enqueue_baselines(self, num_layers: int) -> None:
        if self.study.user_attrs.get("baselines_enqueued"):
            return
        selections = search_tails(self.settings.significance, self.settings.precision)
        baselines = baseline_params(num_layers, selections=selections)
        for name, params in baselines.items():
            self.study.enqueue_trial(params, user_attrs={"baseline": name}, skip_if_exists=True)
        room = max(0, self.settings.trials - len(baselines))
        for name, params in list(late_params(num_layers, selections=selections).items())[:room]:
            self.study.enqueue_trial(params, user_attrs={"seed": name}, skip_if_exists=True)
        self.study.set_user_attr("baselines_enqueued", True)

    def stored_scores(self, trial: optuna.Trial) -> tuple[int, dict] | None:
        """(trial number, search-split measurement record) of a trial with the same parameters,
        waiting for an earlier running one (another worker measuring the same point) to finish first:
        the objective's ``reuse``, so no configuration is measured twice however many workers run."""
        while True:
            same = [
                t
                for t in self.study.get_trials(deepcopy=False, states=(COMPLETE, RUNNING))
                if t.number != trial.number and t.params == trial.params
            ]
            done = [t for t in same if t.state == COMPLETE and "search_scores" in t.user_attrs]
            if done:
                return done[0].number, done[0].user_attrs["search_scores"]
            if not any(t.state == RUNNING and t.number < trial.number for t in same):
                return None
            self.fail_stale()
            time.sleep(0.5)

    def drop_if_failed_elsewhere(self) -> bool:
        """Whether this worker's last trial was failed by another one (its heartbeat went stale while this
        worker was paused or cut off): then it is dropped, its retry already queued, and the worker carries on."""
        if not self.ran:
            return False
        number = self.ran[-1]
        trial = next((t for t in self.study.get_trials(deepcopy=False) if t.number == number), None)
        if trial is None or trial.state != FAIL:
            return False
        self.ran.pop()
        print(
            f"trial {number} was failed by another worker while this one was silent past its heartbeat; "
            "its configuration is queued again, carrying on",
            file=sys.stderr,
            flush=True,
        )
        return True

    def fail_stale(self) -> None:
        if not self.sqlite:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)

    def close(self) -> None:
        """Release the locks; a run folder this process made and left empty goes too."""
        if self.lock is not None:
            self.lock.close()
        if self.run_lock is not None:
            self.run_lock.release()
        if self.created is not None and self.created.is_dir() and not any(self.created.iterdir()):
            self.created.rmdir()


def pinned(study: optuna.Study, identity: dict, sqlite: bool) -> bool:
    """Whether the study's stored settings bind this run: they do once a trial completed under them
    (or, on a server, while another worker may be running one); a study that only ever failed is
    started again with the new settings instead of refusing the command that fixes it."""
    stored = study.user_attrs.get("settings")
    if stored is None or not differing_keys(stored, identity):
        return True
    states = (COMPLETE,) if sqlite else (COMPLETE, RUNNING)  # on SQLite a RUNNING trial is a killed run's
    return bool(study.get_trials(deepcopy=False, states=states))


# Paths whose content has a fingerprint in the identity: the fingerprint is compared, the path only recorded,
# so a worker with another mount path, a byte-identical copy or a relative path is the same run.
BY_CONTENT = {"model": "model_sha", "data": "data_sha"}


def differing_keys(stored: dict, identity: dict) -> list[str]:
    """The identity keys whose stored value differs: fingerprints where both sides have them, paths otherwise."""
    return [
        k
        for k, v in identity.items()
        if k in stored
        and stored[k] != v
        and not (k in BY_CONTENT and BY_CONTENT[k] in stored and BY_CONTENT[k] in identity)
    ]


def check_identity(study: optuna.Study, settings: SearchSettings, identity: dict) -> None:
    """Refuse, in one line naming the option, a resume whose numbers would not be comparable.

    A study made before a key was recorded adopts the current value for it.
    """
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", identity)
        return
    changed = differing_keys(stored, identity)
    if changed:
        what = "; ".join(f"{settings.changed(k)} was {stored[k]!r}, now {identity[k]!r}" for k in changed)
        raise UserError(
            f"study {study.study_name!r} ({settings.run_dir}) was made with other settings: {what}. "
            "Re-run with the stored values to resume, or start fresh with another --run (RUN=), "
            "or delete the run folder"
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


def run_trials(
    settings: SearchSettings, worker: Worker, objective: Callable[[optuna.Trial], tuple[float, float]]
) -> None:
    """Run trials until the study holds ``settings.trials`` completed ones, counting every worker's.

    A trial starts only while completed + running trials fall short of the target, checked and
    started under the study lock (released once the trial exists), so workers
    never overshoot. A worker that sees the target covered by running trials waits: if one of
    them belonged to a killed worker, its heartbeat goes stale, it is failed and queued again,
    and the count drops back below the target for someone to run the retry.
    """
    study, target = worker.study, settings.trials
    done = len(study.get_trials(deepcopy=False, states=(COMPLETE,)))
    if done >= target:
        print(f"study already has {done} completed trials (asked for {target}); re-scoring only")
        return
    bar = tqdm(total=target - done, desc=f"search ({done} done before)", unit="trial", disable=settings.load.quiet)

    def tick(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        bar.update(1)
        if trial.values:
            bar.set_postfix(f1=f"{trial.values[0]:.1f}", cost=f"{trial.values[1]:.2f}")

    def owned(trial: optuna.Trial) -> tuple[float, float]:
        worker.lock.release()  # the trial exists and counts: other workers may start theirs
        worker._patient(True)  # from here a lost connection is waited out, not a reason to start over
        trial.set_user_attr("worker", worker.id)
        worker.ran.append(trial.number)
        return objective(trial)

    def step() -> str:
        """Under the lock: 'done', 'wait' (running trials cover the target) or 'ran' one trial."""
        worker.fail_stale()
        trials = study.get_trials(deepcopy=False, states=(COMPLETE, RUNNING))
        if sum(t.state == COMPLETE for t in trials) >= target:
            return "done"
        if len(trials) >= target:  # completed + running (every worker's) cover it
            return "wait"
        try:
            study.optimize(owned, n_trials=1, callbacks=[tick], gc_after_trial=False)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            if not worker.drop_if_failed_elsewhere():
                raise
        return "ran"

    # optuna's own "trial failed" warning carries a traceback; what went wrong is reported once, below
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        while (state := worker.locked(step)) != "done":
            if state == "wait":
                time.sleep(min(1.0, settings.heartbeat / 2))
    finally:
        bar.close()


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
