"""The exported-program benchmark on the tiny random model: three forwards timed, the same answers."""

from __future__ import annotations

import json

from fixtures import load_benchmark


def test_the_program_the_remote_model_and_the_engine_are_timed_and_agree(model_dir, squad_file, tmp_path):
    script = load_benchmark("exported_program")
    args = ["--model", str(model_dir), "--data", str(squad_file), "--config", "ratios:1,0.7,0.5,0.3"]
    args += ["--precisions", "fp32,int8", "--questions", "4", "--features", "2", "--repeats", "1"]
    assert script.main([*args, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "exported_program.json").read_text())
    fp32 = report["precisions"]["fp32"]
    assert set(fp32["timing"]) == {"program", "remote", "engine"} and "program_speedup" in fp32["timing"]["engine"]
    assert fp32["agreement"]["program"]["same_answer_as_remote"] == 1.0
    assert fp32["agreement"]["program"]["max_logit_gap_to_remote"] < 1e-4
    assert report["precisions"]["int8"]["no_program"].startswith("precision int8")
    figures = json.loads((tmp_path / "result.json").read_text())["figures"]
    assert figures["int8 program"].startswith("none") and "fp32 program speedup over remote" in figures
