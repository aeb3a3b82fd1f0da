"""Many workers and kills, on real processes: a PostgreSQL server, and the SQLite run folder.

Each worker is ``dynlen search`` in its own process, as a user starts it. Trials time
latency (``--cost latency`` with many repeats) so that one lasts long enough to be killed in
the middle; the model is the tiny random BERT and the data the ten-question fixture.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from dynlen.search.storage import RunLock

COMPLETE = optuna.trial.TrialState.COMPLETE
RUNNING = optuna.trial.TrialState.RUNNING
FAIL = optuna.trial.TrialState.FAIL
ROOT = Path(__file__).resolve().parents[2]


def _command(model_dir, squad_file, run_dir, trials, *extra, slow=False):
    cmd = [
        sys.executable,
        "-m",
        "dynlen",
        "search",
        "--model",
        str(model_dir),
        "--data",
        str(squad_file),
        "--run",
        str(run_dir),
        "--trials",
        str(trials),
        "--search-questions",
        "0",
        "--heldout-questions",
        "0",
        "--latency-sample",
        "2",
        "--latency-repeats",
        "40" if slow else "1",
        "--max-rescore",
        "2",
        "--no-report",
        *extra,
    ]
    if slow:
        cmd += ["--cost", "latency"]
    return cmd


def _start(cmd, log: Path) -> subprocess.Popen:
    env = {**os.environ, "DYNLEN_KERNELS": "off", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _wait(procs, timeout=240):
    deadline = time.time() + timeout
    for p in procs:
        p.wait(timeout=max(1, deadline - time.time()))
    return [p.returncode for p in procs]


def _trials(url, name):
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def _measured_twice(trials):
    counts = collections.Counter(tuple(sorted(t.params.items())) for t in trials if t.user_attrs.get("measured"))
    return [params for params, n in counts.items() if n > 1]


def _kill_mid_trial(proc: subprocess.Popen, url: str, name: str, timeout=120) -> int:
    """``kill -9`` ``proc`` while one of its trials is running; the number of that trial."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the worker finished before it could be killed"
        try:
            trials = _trials(url, name)
        except Exception:  # noqa: BLE001 - the study may not exist yet
            trials = []
        mine = [
            t
            for t in trials
            if t.state == RUNNING and str(t.user_attrs.get("worker", "")).split(":")[1:2] == [str(proc.pid)]
        ]
        if mine and "config" in mine[0].user_attrs:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return mine[0].number
        time.sleep(0.05)
    raise AssertionError("no trial of the worker was seen running")


def test_three_workers_finish_exactly_the_trials_asked(postgres_url, tmp_path, model_dir, squad_file):
    """Started together on an empty database: tables, baselines and seeds race, the count does not."""
    run_dir, trials = tmp_path / "run", 14
    procs = [
        _start(_command(model_dir, squad_file, run_dir, trials, "--storage", postgres_url), tmp_path / f"w{i}.log")
        for i in range(3)
    ]
    codes = _wait(procs)
    logs = [(tmp_path / f"w{i}.log").read_text() for i in range(3)]
    assert codes == [0, 0, 0], logs
    all_trials = _trials(postgres_url, "run")
    complete = [t for t in all_trials if t.state == COMPLETE]
    assert len(complete) == trials
    assert not [t for t in all_trials if t.state == RUNNING]
    assert _measured_twice(all_trials) == []
    assert sorted(t.user_attrs["baseline"] for t in all_trials if "baseline" in t.user_attrs) == sorted(
        ["keep-all", "constant-0.90", "constant-0.80", "constant-0.70", "constant-0.60", "constant-0.50"]
    )
    assert len({t.user_attrs["worker"] for t in complete}) >= 2  # the work was shared
    assert sum("the worker that finished it writes" in log or "leaving it the run folder" in log for log in logs) == 2
    assert (run_dir / "run.json").is_file()


def test_killed_worker_trial_is_failed_and_retried(postgres_url, tmp_path, model_dir, squad_file):
    run_dir, trials = tmp_path / "run", 10
    cmd = _command(model_dir, squad_file, run_dir, trials, "--storage", postgres_url, "--heartbeat", "1", slow=True)
    victim = _start(cmd, tmp_path / "victim.log")
    killed = _kill_mid_trial(victim, postgres_url, "run")
    survivor = _start(cmd, tmp_path / "survivor.log")
    assert _wait([survivor]) == [0], (tmp_path / "survivor.log").read_text()
    all_trials = _trials(postgres_url, "run")
    assert len([t for t in all_trials if t.state == COMPLETE]) == trials
    assert not [t for t in all_trials if t.state == RUNNING]
    assert all_trials[killed].state == FAIL
    retries = [t for t in all_trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state == COMPLETE
    assert retries[0].params == all_trials[killed].params


def test_killed_sqlite_run_is_recovered_by_an_immediate_rerun(tmp_path, model_dir, squad_file):
    run_dir, trials = tmp_path / "run", 8
    url = f"sqlite:///{run_dir / 'study.db'}"
    cmd = _command(model_dir, squad_file, run_dir, trials, slow=True)
    first = _start(cmd, tmp_path / "first.log")
    killed = _kill_mid_trial(first, url, "run")
    second = _start(cmd, tmp_path / "second.log")
    assert _wait([second]) == [0], (tmp_path / "second.log").read_text()
    all_trials = _trials(url, "run")
    assert len([t for t in all_trials if t.state == COMPLETE]) == trials
    assert not [t for t in all_trials if t.state in (RUNNING, optuna.trial.TrialState.WAITING)]
    assert all_trials[killed].state == FAIL
    retry = next(t for t in all_trials if t.system_attrs.get("failed_trial") == killed)
    assert retry.state == COMPLETE and retry.params == all_trials[killed].params
    assert _measured_twice(all_trials) == []


def test_second_process_on_a_sqlite_run_folder_is_refused(tmp_path, model_dir, squad_file, capsys):
    from dynlen.cli.main import main

    run_dir = tmp_path / "run"
    lock = RunLock(run_dir)
    assert lock.acquire()
    try:
        code = main(_command(model_dir, squad_file, run_dir, 6)[3:])
    finally:
        lock.release()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "another process" in err[0] and "postgresql://" in err[0]


@pytest.mark.parametrize(
    "storage, says",
    [
        ("foo://bar", "unknown database kind"),
        ("not a url", "not a database URL"),
        ("postgresql+pg8000://u@127.0.0.1/db", "driver is not installed"),
        ("postgresql+psycopg://u@127.0.0.1:1/db", "cannot reach"),
        ("postgresql://u:pw@127.0.0.1:notaport/db", "not a database URL"),
        ("sqlite:////proc/no/study.db", "cannot create /proc/no"),
        ("sqlite:////proc/study.db", "cannot write /proc/study.db.lock"),
    ],
)
def test_bad_storage_is_one_line_before_data_loads(storage, says, tmp_path, model_dir, squad_file, capsys, monkeypatch):
    from dynlen.cli.main import main
    from dynlen.search import study

    def no_data(*_a, **_k):
        raise AssertionError("data loaded before the storage was checked")

    monkeypatch.setattr(study, "load_squad", no_data)
    code = main(_command(model_dir, squad_file, tmp_path / "run", 6, "--storage", storage)[3:])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and says in err[0] and ":pw@" not in err[0], err


def test_wrong_credentials_on_a_real_server_are_one_line(postgres_url, tmp_path, model_dir, squad_file, capsys):
    from dynlen.cli.main import main

    wrong = postgres_url.replace("postgres@", "nosuchuser:pw@")
    code = main(_command(model_dir, squad_file, tmp_path / "run", 6, "--storage", wrong)[3:])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot reach" in err[0] and "pw" not in err[0], err


def test_two_run_folders_on_one_storage_are_two_studies(postgres_url, tmp_path, model_dir, squad_file):
    from dynlen.cli.main import main

    for name in ("first", "second"):
        assert main(_command(model_dir, squad_file, tmp_path / name, 6, "--storage", postgres_url)[3:]) == 0
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(postgres_url))
    assert names == ["first", "second"]
    assert all(len([t for t in _trials(postgres_url, n) if t.state == COMPLETE]) == 6 for n in names)


def test_workers_outlive_a_server_restart(postgres_url, postgres_control, tmp_path, model_dir, squad_file):
    """The server stops for a few seconds under running workers and comes back: every worker carries on."""
    run_dir, trials = tmp_path / "run", 14
    cmd = _command(model_dir, squad_file, run_dir, trials, "--storage", postgres_url, "--heartbeat", "2", slow=True)
    procs = [_start(cmd, tmp_path / f"w{i}.log") for i in range(3)]
    deadline = time.time() + 180
    while time.time() < deadline:  # the outage comes in the middle of the search
        try:
            done = [t for t in _trials(postgres_url, "run") if t.state == COMPLETE]
        except Exception:  # noqa: BLE001 - the study may not exist yet
            done = []
        if len(done) >= 3:
            break
        time.sleep(0.2)
    postgres_control.stop()
    time.sleep(4)
    postgres_control.start()
    codes = _wait(procs, timeout=300)
    logs = [(tmp_path / f"w{i}.log").read_text() for i in range(3)]
    tails = "\n".join(line for log in logs for line in log.splitlines()[-15:] if "search (" not in line)
    assert codes == [0, 0, 0], tails
    assert not [log for log in logs if "Traceback" in log], tails
    assert any("is not answering" in log for log in logs), tails
    all_trials = _trials(postgres_url, "run")
    complete = [t for t in all_trials if t.state == COMPLETE]
    assert len(complete) == trials
    assert not [t for t in all_trials if t.state == RUNNING]
    assert _measured_twice(complete) == []


def test_a_lock_held_by_a_hung_connection_is_named_and_given_up(postgres_url, monkeypatch, capsys):
    import sqlalchemy

    from dynlen.errors import UserError
    from dynlen.search import storage

    monkeypatch.setattr(storage, "LOCK_NOTICE_S", 0.2)
    monkeypatch.setattr(storage, "LOCK_TIMEOUT_S", 1.0)
    hung, waiting = storage.StudyLock(postgres_url, "run"), storage.StudyLock(postgres_url, "run")
    hung.acquire()
    try:
        pid = hung._conn.execute(sqlalchemy.text("SELECT pg_backend_pid()")).scalar()
        with pytest.raises(UserError, match=rf"held for \d+ s by database connection {pid}.*pg_terminate_backend"):
            waiting.acquire()
        assert f"waiting for the study lock of 'run', held by database connection {pid}" in capsys.readouterr().err
    finally:
        hung.close()
        waiting.close()
    waiting.acquire()  # free again: taken at once
    waiting.close()


def test_a_worker_paused_past_its_heartbeat_drops_its_failed_trial_and_carries_on(
    postgres_url, tmp_path, model_dir, squad_file
):
    run_dir, trials = tmp_path / "run", 10
    cmd = _command(model_dir, squad_file, run_dir, trials, "--storage", postgres_url, "--heartbeat", "1", slow=True)
    paused = _start(cmd, tmp_path / "paused.log")
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            mine = [t for t in _trials(postgres_url, "run") if t.state == RUNNING and "config" in t.user_attrs]
        except Exception:  # noqa: BLE001 - the study may not exist yet
            mine = []
        if mine:
            break
        time.sleep(0.05)
    os.kill(paused.pid, signal.SIGSTOP)
    other = _start(cmd, tmp_path / "other.log")
    deadline = time.time() + 120
    while _trials(postgres_url, "run")[mine[0].number].state != FAIL:  # 3 missed beats: the other worker fails it
        assert time.time() < deadline, "the paused worker's trial was never failed"
        time.sleep(0.2)
    os.kill(paused.pid, signal.SIGCONT)
    codes = _wait([paused, other], timeout=300)
    logs = [(tmp_path / name).read_text() for name in ("paused.log", "other.log")]
    assert codes == [0, 0], logs
    assert "was failed by another worker" in logs[0] and "Traceback" not in logs[0], logs[0]
    all_trials = _trials(postgres_url, "run")
    assert len([t for t in all_trials if t.state == COMPLETE]) == trials
    assert not [t for t in all_trials if t.state == RUNNING]
