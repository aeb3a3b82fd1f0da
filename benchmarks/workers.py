"""Several search workers on one PostgreSQL study: exact trial counts, kills, wall time.

Starts its own throw-away PostgreSQL server (Debian binaries under /usr/lib/postgresql), a tiny
random BERT and the ten-question test fixture, then runs the same search with 1 and 2 workers,
and with 2 workers of which one is killed (``kill -9``) mid-trial. Prints a markdown table:
trials asked, completed, failed and retried, configurations measured twice, trials lost, wall time.

    .venv/bin/python benchmarks/workers.py --trials 30
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dynlen.bench import harness

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def start_server(base: Path) -> tuple[str, list[str], Path]:
    bindir = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1]).parent
    prefix = []
    if os.geteuid() == 0:
        shutil.chown(base, "nobody")
        prefix = ["runuser", "-u", "nobody", "--"]
    subprocess.run([*prefix, "mkdir", str(base / "sock")], check=True)
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(base / "data"), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = f"-p {port} -k {base / 'sock'} -c listen_addresses=127.0.0.1"
    subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(base / "data"), "-o", opts, "-l", str(base / "log"),
                    "-w", "start"], check=True, capture_output=True)  # fmt: skip
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}", [*prefix, str(bindir / "pg_ctl")], base / "data"


def new_database(server: str, name: str) -> str:
    import sqlalchemy

    engine = sqlalchemy.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return f"{server}/{name}"


def worker_command(args, model, data, run_dir, url) -> list[str]:
    return [sys.executable, __file__, "--worker", "--model", str(model), "--data", str(data), "--run",
            str(run_dir), "--storage", url, "--trials", str(args.trials)]  # fmt: skip


def run_worker(args) -> None:
    """One worker: the library call behind ``dynlen search`` (latency cost, so a trial takes a while)."""
    import torch

    from dynlen.search.settings import SearchSettings
    from dynlen.search.study import run_search

    torch.set_num_threads(1)
    settings = SearchSettings(
        model=args.model, data=args.data, run_dir=args.run, trials=args.trials, storage=args.storage,
        cost="latency", search_questions=None, heldout_questions=None, batch_size=4, latency_sample=2,
        latency_repeats=8, max_rescore=2, heartbeat=1,
    )  # fmt: skip
    run_search(settings, None)


def summarise(url: str, name: str) -> dict:
    import optuna

    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    state = collections.Counter(t.state.name for t in trials)
    measured = collections.Counter(tuple(sorted(t.params.items())) for t in trials if t.user_attrs.get("measured"))
    return {
        "completed": state["COMPLETE"],
        "failed": state["FAIL"],
        "retried": sum(1 for t in trials if "failed_trial" in t.system_attrs and t.state.name == "COMPLETE"),
        "duplicates": sum(n - 1 for n in measured.values()),
        "running": state["RUNNING"],
    }


def scenario(args, server, tmp: Path, workers: int, kill: bool, model, data) -> dict:
    name = f"w{workers}{'k' if kill else ''}"
    url = new_database(server, name)
    run_dir = tmp / name
    env = {**os.environ, "DYNLEN_KERNELS": "off"}
    started = time.time()
    procs = [
        subprocess.Popen(
            worker_command(args, model, data, run_dir, url),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(workers)
    ]
    if kill:
        import optuna

        victim = procs[0]
        while victim.poll() is None:
            try:
                trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
            except Exception:  # noqa: BLE001 - not created yet
                trials = []
            if any(t.state.name == "RUNNING" and f":{victim.pid}:" in str(t.user_attrs.get("worker")) for t in trials):
                os.kill(victim.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
    for p in procs:
        p.wait()
    wall = time.time() - started
    return {"workers": workers, "killed": 1 if kill else 0, "asked": args.trials, **summarise(url, name), "wall": wall}


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__, out="runs/workers")
    parser.add_argument("--trials", type=int, default=30, help="completed trials asked of each scenario")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for option in ("--model", "--data", "--run", "--storage"):
        parser.add_argument(option, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args)
        return 0
    return harness.run(measure, args, argv, __file__)


def measure(args: argparse.Namespace, figures: dict) -> None:
    """The three scenarios on a throw-away server, printed as a table; wall time against one worker in ``figures``."""
    from fixtures import save_tiny_model, write_squad

    tmp = Path(tempfile.mkdtemp(prefix="dynlen-workers-"))
    model, data = save_tiny_model(tmp / "model"), write_squad(tmp / "squad.json")
    pg = Path(tempfile.mkdtemp(prefix="dynlen-pg-"))
    server, pg_ctl, pg_data = start_server(pg)
    try:
        rows = [scenario(args, server, tmp, w, k, model, data) for w, k in ((1, False), (2, False), (2, True))]
    finally:
        subprocess.run([*pg_ctl, "-D", str(pg_data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(pg, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    one = rows[0]["wall"]
    print("| workers | killed | trials asked | completed | failed | retried | measured twice | lost | "
          "left running | wall s | vs 1 worker |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        figures[f"speed_vs_one_worker[{r['workers']} workers, {r['killed']} killed]"] = one / r["wall"]
        figures[f"completed[{r['workers']} workers, {r['killed']} killed]"] = r["completed"]
        print(f"| {r['workers']} | {r['killed']} | {r['asked']} | {r['completed']} | {r['failed']} | {r['retried']} | "
              f"{r['duplicates']} | {r['asked'] - r['completed']} | {r['running']} | {r['wall']:.1f} | "
              f"{one / r['wall']:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
