"""What `make` would run, read from `make -n`: no model is trained and no search starts here."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _dry_run(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _fresh_checkout(tmp_path: Path) -> Path:
    """The Makefile in a folder with no models/: what a new checkout has before `make model`."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    return tmp_path


@pytest.mark.parametrize(
    "model", ["csarron/bert-base-uncased-squad-v1", "models/minlm-squad-lengthdrop", "/no/such/folder"]
)
def test_pareto_never_trains_a_model_it_was_not_asked_to_build(model):
    """A hub id or a mistyped path is handed to the search as given; the search says if it cannot load it."""
    out = _dry_run("pareto", f"MODEL={model}")
    assert "finetune" not in out and "lengthdrop --model" not in out and "make model" not in out
    assert f"--model {model}" in out


def test_pareto_builds_the_default_model_when_missing(tmp_path):
    """The default is the LengthDrop model: the standard fine-tune and its probes come first, then LengthDrop."""
    standard, lengthdrop = "models/minilm-squad", "models/minilm-squad-lengthdrop"
    out = _dry_run("pareto", cwd=_fresh_checkout(tmp_path))
    steps = [
        f"finetune --out {standard}",
        f"probes --model {standard}",
        f"lengthdrop --model {standard} --out {lengthdrop}",
    ]
    assert all(step in out for step in steps)
    assert [out.index(step) for step in steps] == sorted(out.index(step) for step in steps)
    assert f"search --model {lengthdrop}" in out


def test_bench_retention_scores_both_models_and_builds_only_its_own(tmp_path):
    """Its fixed-budget step reads STANDARD and LENGTHDROP; a folder of the user's is read as given, never built."""
    standard, lengthdrop = "models/minilm-squad", "models/minilm-squad-lengthdrop"
    fresh = _fresh_checkout(tmp_path)
    out = _dry_run("bench-retention", cwd=fresh)
    assert f"finetune --out {standard}" in out and f"lengthdrop --model {standard}" in out
    assert f"retention.py --models {standard},{lengthdrop}" in out
    own = _dry_run("bench-retention", "STANDARD=/no/such/folder", cwd=fresh)
    assert "--out /no/such/folder" not in own and "retention.py --models /no/such/folder," in own
    assert f"lengthdrop --model /no/such/folder --out {lengthdrop}" in own, "its own LengthDrop folder is built"


def test_args_pass_through_to_the_command_and_win_over_quick(tmp_path):
    out = _dry_run("pareto", "MODEL=org/model", "QUICK=1", "ARGS=--trials 50 --cost latency")
    assert "search --model org/model --run results/quick" in out
    assert out.index("--trials 12") < out.index("--trials 50"), "the user's ARGS come last, so they win"
    assert (
        _dry_run("eval", "ARGS=--config ratios:1,0.5 --limit 10").strip().endswith("--config ratios:1,0.5 --limit 10")
    )


def test_model_builds_the_standard_model_then_lengthdrop_from_it():
    out = _dry_run("model")
    assert out.index("finetune --out models/minilm-squad") < out.index("probes --model models/minilm-squad")
    assert "lengthdrop --model models/minilm-squad --out models/minilm-squad-lengthdrop" in out


def test_plain_install_takes_pips_torch_and_cpu_install_checks_for_cuda_packages():
    plain = _dry_run("install")
    assert "torch==2.13.0'" in plain and "download.pytorch.org" not in plain and "CUDA packages" not in plain
    cpu = _dry_run("install", "TORCH=cpu")
    assert "torch==2.13.0+cpu" in cpu and "whl/cpu" in cpu and "CUDA packages were installed" in cpu


def test_help_lists_every_target_and_the_variables():
    done = subprocess.run(
        ["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    phony = next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith(".PHONY:"))
    for target in phony.split(":", 1)[1].split():
        assert f"  {target} " in done.stdout, target
    for variable in ("MODEL", "STANDARD", "LENGTHDROP", "RUN", "QUICK", "BUDGET", "ARGS", "TORCH"):
        assert f"  {variable}=" in done.stdout


def test_targets_call_the_dynlen_command():
    out = _dry_run("eval", "report", "choose", "regress")
    assert out.count(".venv/bin/dynlen ") == 4 and "-m bench" not in out


def test_quick_pareto_builds_its_own_smoke_model_and_never_the_default():
    out = _dry_run("pareto", "QUICK=1")
    assert "finetune --out models/minilm-squad-quick --articles 20 --max-steps 200" in out
    assert "probes --model models/minilm-squad-quick" in out and "lengthdrop" not in out
    assert "--out models/minilm-squad " not in out and "search --model models/minilm-squad-quick" in out
    steps = ["dynlen finetune", "dynlen probes", "dynlen search", "dynlen choose --run results/quick", "dynlen answer"]
    assert [out.index(step) for step in steps] == sorted(out.index(step) for step in steps)
    assert "answer --config results/quick/chosen.json --question" in out
    own = _dry_run("pareto", "QUICK=1", "MODEL=models/mine")
    assert "finetune" not in own and "search --model models/mine" in own


def test_full_pareto_says_how_long_the_build_takes_and_how_to_skip_it_before_building(tmp_path):
    out = _dry_run("pareto", cwd=_fresh_checkout(tmp_path))
    note = out.index("2-2.5 hours")
    assert "MODEL=" in out[note : out.index("\n", note)] and note < out.index("finetune --out")


def test_quick_pareto_runs_the_whole_path_in_a_fresh_folder(tmp_path, model_dir, squad_file):
    """A fresh clone (no models/, no results/) with a tiny recipe: build, search, report, choose, answer."""
    import json
    import sys

    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    bin_dir = Path(sys.executable).parent
    options = [
        f"DYNLEN={bin_dir / 'dynlen'}",
        f"PY={sys.executable}",
        f"QUICK_TRAIN={squad_file}",
        f"ARGS=--data {squad_file}",
        f"QUICK_BASE={model_dir}",
        "QUICK_STEPS=3",
        "QUICK_ARTICLES=2",
    ]
    done = subprocess.run(
        ["make", "--no-print-directory", "pareto", "QUICK=1", *options],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    model = tmp_path / "models" / "minilm-squad-quick"
    assert (model / "lookahead_probes.safetensors").is_file()
    assert json.loads((model / "training.json").read_text())["recipe"]["articles"] == 2
    run = tmp_path / "results" / "quick"
    assert all((run / name).is_file() for name in ("pareto.png", "report.md", "chosen.json", "frontier.csv"))
    assert "Smoke model: 3 steps on the first 2 train articles" in (run / "report.md").read_text()
    assert json.loads((run / "chosen.json").read_text())["model"] == "models/minilm-squad-quick"
    assert '"answer"' in done.stdout and "smoke model" in done.stdout
    again = subprocess.run(
        ["make", "--no-print-directory", "-n", "pareto", "QUICK=1", *options],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert "finetune" not in again.stdout, "a later quick run rebuilds the smoke model"


def test_install_says_what_it_is_doing():
    out = _dry_run("install")
    assert out.count('echo "make install: ') == 3 and out.index("installing torch") < out.index(
        "pip install --quiet 'torch"
    )
