import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dynlen.bench.measurement import Measurement
from dynlen.cli.main import main
from dynlen.engine.config import LengthConfig

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "dynlen", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_eval_writes_metrics_and_official_predictions(tmp_path, model_dir, squad_file):
    out = tmp_path / "run"
    code = main(
        [
            "eval",
            "--model",
            str(model_dir),
            "--data",
            str(squad_file),
            "--config",
            "ratios:1,0.7,0.5,0.3",
            "--out",
            str(out),
            "--latency-sample",
            "3",
            "--latency-repeats",
            "1",
            "--no-bert-base-latency",
            "--quiet",
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    predictions = json.loads((out / "predictions.json").read_text())
    assert metrics["questions"] == 10 and len(predictions) == 10
    assert set(predictions) == {f"q{i}" for i in range(1, 11)}
    assert 0.0 <= metrics["exact_match"] <= 100.0 and 0.0 <= metrics["f1"] <= 100.0
    assert metrics["config"] == {"kind": "ratios", "values": [1.0, 0.7, 0.5, 0.3]}
    sp = metrics["speedups"]
    assert sp["flops_vs_keep_all"] > 1.2 and sp["flops_vs_bert_base"] > sp["flops_vs_keep_all"]
    assert sp["latency_vs_keep_all"] > 0 and sp["latency_vs_bert_base"] is None
    assert metrics["flops"]["dynamic_padding"]["macs"] * 2 == metrics["flops"]["dynamic_padding"]["flops"]
    kept = metrics["tokens_kept_per_layer"]
    assert len(kept) == 4 and kept[0] > kept[1] > kept[2] > kept[3] > 1
    lat = metrics["latency"]
    assert lat["ms_per_feature_min"] <= lat["ms_per_feature"] <= lat["ms_per_feature_max"]
    assert metrics["loading"] == {
        "device": "auto",
        "dtype": None,
        "revision": None,
        "trust_remote_code": False,
        "threads": None,
        "quiet": True,
    }, "how the model was loaded is recorded with the figures"
    measured = Measurement.from_json(metrics)  # metrics.json reads back as the one measurement type
    assert measured.f1 == metrics["f1"] and measured.config == LengthConfig.parse("ratios:1,0.7,0.5,0.3")
    assert measured.latency_speedup_vs_keep_all == sp["latency_vs_keep_all"] and measured.tokens_kept_per_layer == kept


def test_keep_all_eval_matches_limit(tmp_path, model_dir, squad_file):
    out = tmp_path / "run"
    assert (
        main(
            [
                "eval",
                "--model",
                str(model_dir),
                "--data",
                str(squad_file),
                "--limit",
                "4",
                "--out",
                str(out),
                "--no-latency",
                "--quiet",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["questions"] == 4 and metrics["speedups"]["flops_vs_keep_all"] == pytest.approx(1.0)
    assert metrics["latency"] is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "no/such/folder/anywhere"], "model folder not found"),
        (["--data", "missing.json"], "SQuAD file not found"),
        (["--config", "ratios:1,1,1"], "has 3 values but"),
        (["--config", "1,0.5,0.9,0.1"], "layer 3 keeps 0.9, more than layer 2"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, model_dir, squad_file, args, message):
    base = {"--model": str(model_dir), "--data": str(squad_file)}
    for key, value in zip(args[::2], args[1::2]):
        base[key] = value
    flat = [x for kv in base.items() for x in kv] + [a for a in args if a not in base and a not in base.values()]
    proc = _run("eval", *flat, "--out", str(tmp_path / "o"), "--no-latency", "--quiet")
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_malformed_squad_file(tmp_path, model_dir):
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [{"title": "x"}]}')
    proc = _run(
        "eval", "--model", str(model_dir), "--data", str(bad), "--no-latency", "--quiet", "--out", str(tmp_path / "o")
    )
    assert proc.returncode == 2 and "malformed SQuAD file" in proc.stderr and "Traceback" not in proc.stderr


def test_unreachable_hub_id_offline(tmp_path, squad_file):
    proc = _run(
        "eval",
        "--model",
        "someone/not-a-model",
        "--data",
        str(squad_file),
        "--no-latency",
        "--quiet",
        "--out",
        str(tmp_path / "o"),
    )
    assert proc.returncode == 2 and "not in the local cache" in proc.stderr and "Traceback" not in proc.stderr


def test_unreachable_hub_is_one_line_within_seconds(tmp_path, squad_file):
    """No retries: a hub that does not answer is said once, quickly (HF_ENDPOINT: a closed local port)."""
    import time

    env = dict(os.environ, HF_ENDPOINT="http://127.0.0.1:9", PYTHONPATH=str(ROOT))
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "dynlen", "eval", "--model", "someone/not-a-model", "--data", str(squad_file)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and time.monotonic() - started < 60
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Hugging Face hub" in lines[0], proc.stderr


def test_help_lists_every_option():
    proc = _run("eval", "--help")
    assert proc.returncode == 0
    for option in ("--model", "--data", "--config", "--limit", "--out", "--no-latency"):
        assert option in proc.stdout


def test_missing_folder_under_an_existing_directory_is_a_path(tmp_path, monkeypatch):
    """`models/foo` with a local `models/` is a folder that is missing, not a hub id."""
    from dynlen.bench.model_io import _looks_like_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    assert _looks_like_path("models/foo")
    assert not _looks_like_path("google/bert_uncased_L-2_H-128_A-2")
    assert not _looks_like_path("bert-base-uncased")


def test_a_folder_of_this_project_is_a_path_on_a_fresh_clone(tmp_path, monkeypatch):
    """`models/nope` where no models/ exists yet is still a missing folder, never a hub id."""
    from dynlen.bench.model_io import check_model_source
    from dynlen.errors import UserError

    monkeypatch.chdir(tmp_path)
    for name in ("models/nope", "runs/x", "my model", "nope/"):
        with pytest.raises(UserError, match="model folder not found"):
            check_model_source(name)
