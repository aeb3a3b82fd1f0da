"""The --device option and GPU-safe timing, checked on the CPU (CI has no GPU).

A GPU is simulated where it matters: ``torch.cuda.is_available`` is patched to False so
``--device cuda`` must fail in one line on any machine, and asynchronous device work is
imitated by a background thread that only ``synchronize`` waits for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from fixtures import load_benchmark

from dynlen.bench.device import resolve_device
from dynlen.bench.latency import device_synchronizer, interleaved_batch_timings
from dynlen.bench.runner import QARunner
from dynlen.cli.main import main as bench_main
from dynlen.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_gpu(monkeypatch):
    """Behave as a machine without a CUDA GPU, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(autouse=True)
def _torch_gemm(monkeypatch):
    """The CPU kernel is not what these tests are about; torch's GEMM spares a compile."""
    monkeypatch.setenv("DYNLEN_KERNELS", "off")


# --- resolving the device -------------------------------------------------------------------
def test_cpu_and_auto_without_gpu_resolve_to_cpu(no_gpu):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_cuda_without_gpu_is_a_user_error_naming_the_fix(no_gpu):
    with pytest.raises(UserError, match="sees no CUDA GPU; use --device cpu"):
        resolve_device("cuda")


def test_unknown_device_is_a_user_error():
    with pytest.raises(UserError, match="use one of auto, cpu, cuda"):
        resolve_device("tpu")


def test_auto_picks_cuda_when_torch_sees_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


# --- the runner and the command line ---------------------------------------------------------
def test_runner_on_explicit_cpu_matches_the_default(model_dir, squad_file):
    from dynlen.bench.squad import load_squad
    from dynlen.engine.config import LengthConfig

    data = load_squad(str(squad_file))
    config = LengthConfig.parse("ratios:1,0.7,0.5,0.3")
    default = QARunner(str(model_dir), data, batch_size=4, progress=False).evaluate(config)
    explicit = QARunner(str(model_dir), data, batch_size=4, progress=False, device="cpu")
    assert explicit.device == torch.device("cpu")
    assert next(explicit.model.parameters()).device.type == "cpu"
    result = explicit.evaluate(config)
    assert (result.exact_match, result.f1) == (default.exact_match, default.f1)
    assert result.tokens_kept_per_layer == default.tokens_kept_per_layer


def test_eval_on_cpu_records_the_device(tmp_path, model_dir, squad_file):
    out = tmp_path / "run"
    code = bench_main(
        [
            "eval",
            "--model",
            str(model_dir),
            "--data",
            str(squad_file),
            "--device",
            "cpu",
            "--out",
            str(out),
            "--latency-sample",
            "2",
            "--latency-repeats",
            "1",
            "--no-bert-base-latency",
            "--quiet",
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["device"].startswith("cpu") and metrics["latency"]["speedup_vs_keep_all"]["median"] > 0


def test_eval_on_cuda_without_gpu_fails_in_one_line_before_loading(tmp_path, squad_file, no_gpu, capsys):
    # the model folder does not exist: the device check must come first, with its own message
    code = bench_main(
        [
            "eval",
            "--model",
            str(tmp_path / "not-loaded"),
            "--data",
            str(squad_file),
            "--device",
            "cuda",
            "--out",
            str(tmp_path / "o"),
            "--no-latency",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "sees no CUDA GPU; use --device cpu" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_eval_device_cuda_subprocess_without_gpu(tmp_path, squad_file, model_dir):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dynlen",
            "eval",
            "--model",
            str(model_dir),
            "--data",
            str(squad_file),
            "--device",
            "cuda",
            "--no-latency",
            "--quiet",
            "--out",
            str(tmp_path / "o"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "use --device cpu" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_eval_help_documents_device(capsys):
    with pytest.raises(SystemExit):
        bench_main(["eval", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--device DEVICE" in help_text and "auto (a GPU when torch sees one, else the CPU), cpu, cuda" in help_text


# --- synchronized timing ----------------------------------------------------------------------
class FakeDevice:
    """Work queued by a contender finishes later on another thread, as GPU kernels do."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.pending: list[threading.Thread] = []
        self.synchronized = 0

    def launch(self, _batch) -> None:
        worker = threading.Thread(target=time.sleep, args=(self.seconds,))
        worker.start()
        self.pending.append(worker)

    def synchronize(self) -> None:
        self.synchronized += 1
        while self.pending:
            self.pending.pop().join()


def test_synchronize_charges_queued_work_to_the_contender_that_queued_it():
    device = FakeDevice(0.02)
    timings = interleaved_batch_timings(
        {"gpu": device.launch, "idle": lambda b: None},
        batches=[0, 1],
        repeats=2,
        warmup=1,
        synchronize=device.synchronize,
    )
    assert all(s >= 2 * 0.02 for s in timings["gpu"].samples)  # both batches' work, every round
    assert all(s < 0.02 for s in timings["idle"].samples)  # none of it leaks into the next contender
    assert device.synchronized == 2 * (3 * 2 * 2)  # before and after each call: rounds x batches x contenders


def test_without_synchronize_the_clock_stops_at_launch():
    # the queued work is long (0.25 s) so that starting its thread, slow on a loaded machine, stays far below it
    device = FakeDevice(0.25)
    timings = interleaved_batch_timings({"gpu": device.launch}, batches=[0], repeats=1, warmup=0)
    device.synchronize()
    assert timings["gpu"].samples[0] < 0.25 and device.synchronized == 1  # only the call above


def test_device_synchronizer_is_none_on_cpu():
    assert device_synchronizer("cpu") is None
    assert device_synchronizer(torch.device("cpu")) is None


# --- the benchmark scripts --------------------------------------------------------------------
def test_keep_all_overhead_on_cpu_prints_the_device(model_dir, squad_file, capsys, tmp_path):
    script = load_benchmark("keep_all_overhead")
    code = script.main(
        [
            "--model",
            str(model_dir),
            "--data",
            str(squad_file),
            "--features",
            "3",
            "--batch-sizes",
            "1,2",
            "--repeats",
            "1",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "device cpu" in out and "batch   1 on cpu" in out and "batch   2 on cpu" in out
    assert "torch GEMM (the wiring's own overhead)" in out
    figures = json.loads((tmp_path / "result.json").read_text())["figures"]
    assert set(figures) >= {"batch_1_latency_over_stock_kernel", "batch_2_latency_over_stock_torch_gemm"}


def test_flops_fidelity_on_cpu_prints_the_device_and_batch_sizes(model_dir, squad_file, capsys, tmp_path):
    script = load_benchmark("flops_fidelity")
    code = script.main(
        [
            "--model",
            str(model_dir),
            "--data",
            str(squad_file),
            "--features",
            "4",
            "--repeats",
            "1",
            "--configs",
            "ratios:1,0.5,0.25,0.125",
            "--batch-sizes",
            "1,2",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "batch 1," in out and "batch 2," in out and "device cpu" in out
    assert out.count("ratios:1,0.5,0.25,0.125") == 2
    figures = json.loads((tmp_path / "result.json").read_text())["figures"]
    assert sorted(figures) == [
        "fidelity_own[ratios:1,0.5,0.25,0.125, batch 1, 1 threads]",
        "fidelity_own[ratios:1,0.5,0.25,0.125, batch 2, 1 threads]",
    ]


@pytest.mark.parametrize("name", ["keep_all_overhead", "flops_fidelity"])
def test_benchmarks_refuse_cuda_without_gpu_in_one_line(name, tmp_path, squad_file, no_gpu, capsys):
    script = load_benchmark(name)
    code = script.main(["--model", str(tmp_path / "not-loaded"), "--data", str(squad_file), "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and "use --device cpu" in err and len(err.strip().splitlines()) == 1
