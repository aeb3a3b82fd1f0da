"""The benchmark scripts' one shell: the options they share, and the result.json each run leaves.

Every script in ``benchmarks/`` builds its parser with :func:`parser`, so ``--model``, ``--data``,
``--threads``, ``--device`` and ``--out`` are declared here once and read the same everywhere, and
runs its work through :func:`run`, which prints a :class:`~dynlen.errors.UserError` as one line and
writes ``OUT/result.json``: the command, the commit, the machine and the figures the script
measured. ``make docs`` turns committed ones into tables (``dynlen.reports.docs``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from dynlen.bench.device import DEVICE_CHOICES
from dynlen.bench.model_io import DEFAULT_MODEL_DIR
from dynlen.bench.regress import machine_id
from dynlen.bench.squad import DEFAULT_DEV_SET
from dynlen.errors import exit_status

RESULT_FILE = "result.json"
Figures = dict[str, float | int | str | None]


@dataclass(frozen=True)
class Option:
    """One shared option: its flag and its argparse settings (help and default included)."""

    flag: str
    settings: dict


OPTIONS: dict[str, Option] = {
    "model": Option(
        "--model", {"default": DEFAULT_MODEL_DIR, "help": "QA model folder or hub id (default: %(default)s)"}
    ),
    "data": Option("--data", {"default": DEFAULT_DEV_SET, "help": "SQuAD 1.1 dev JSON (default: %(default)s)"}),
    "threads": Option("--threads", {"type": int, "default": None, "help": "torch CPU threads (default: torch's own)"}),
    "device": Option(
        "--device",
        {
            "choices": DEVICE_CHOICES,
            "default": "auto",
            "help": "where every contender runs: cuda, cpu, or auto = cuda when torch sees a GPU (default: %(default)s)",
        },
    ),
}


def parser(description: str, *shared: str, out: str | None, questions: int | None = None) -> argparse.ArgumentParser:
    """A script's parser with the ``shared`` options named (keys of OPTIONS) and ``--out``.

    ``questions``: the timing scripts read only the dev set's first questions; the ``--data`` help says how many.
    """
    made = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in shared:
        option = OPTIONS[name]
        settings = dict(option.settings)
        if name == "data" and questions is not None:
            settings["help"] = (
                f"SQuAD 1.1 JSON; its first {questions} questions supply the features (default: %(default)s)"
            )
        made.add_argument(option.flag, **settings)
    where = "%(default)s" if out is not None else "the script names it"
    made.add_argument(
        "--out", default=out, help=f"folder for result.json and the script's own files (default: {where})"
    )
    return made


@dataclass(frozen=True)
class Result:
    """What one benchmark run measured and where: the record behind a table row in docs/results.md."""

    benchmark: str
    command: str
    commit: str | None
    uncommitted_changes: bool
    machine: str
    date: str
    figures: Figures

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / RESULT_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path


def write_tables(out: str | Path | None, stem: str, report: dict, markdown: str) -> None:
    """A benchmark's own record beside its result.json: ``stem``.json (every figure) and ``stem``.md (the tables)."""
    if not out:
        return
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / f"{stem}.md").write_text(markdown)
    print(f"wrote {folder / f'{stem}.json'} and {stem}.md")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def machine() -> str:
    """CPU model and threads (what a latency depends on), cores, torch build, and the GPU when one is seen."""
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{machine_id()}, {os.cpu_count()} cores, torch {torch.__version__}{gpu}"


def result(script: str, argv: list[str] | None, figures: Figures) -> Result:
    """The record of a finished run of ``script`` (a path) called with ``argv`` (None: this process's)."""
    args = sys.argv[1:] if argv is None else argv
    name = Path(script).stem
    return Result(
        benchmark=name,
        command=shlex.join(["python", f"benchmarks/{name}.py", *args]),
        commit=_git("rev-parse", "HEAD"),
        uncommitted_changes=bool(_git("status", "--porcelain", "--untracked-files=no")),
        machine=machine(),
        date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        figures=figures,
    )


def run(
    work: Callable[[argparse.Namespace, Figures], None], args: argparse.Namespace, argv: list[str] | None, script: str
) -> int:
    """Run ``work`` (which fills the figures it measured); on success write OUT/result.json. The exit status."""
    figures: Figures = {}
    status = exit_status(lambda: work(args, figures))
    if status == 0 and args.out is not None:
        path = result(script, argv, figures).write(Path(args.out))
        print(f"wrote {path}")
    return status
