"""The length x precision benchmark on the tiny random model: its contenders, ratios and accuracy rows."""

from __future__ import annotations

import json

from fixtures import load_benchmark


def test_the_script_times_every_precision_and_scores_against_float32_keep_all(model_dir, squad_file, tmp_path):
    script = load_benchmark("precision")
    args = ["--model", str(model_dir), "--data", str(squad_file), "--configs", "ratios:1,0.7,0.5,0.3"]
    args += ["--precisions", "fp32,bf16,int8", "--batch-sizes", "1,2", "--features", "2", "--repeats", "1"]
    assert script.main([*args, "--accuracy", "0", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "precision.json").read_text())
    assert [run["batch_size"] for run in report["runs"]] == [1, 2]
    names = {row["forward"] for row in report["runs"][0]["rows"]}
    assert names == {
        "stock/fp32",
        "keep-all/fp32",
        "ratios:1,0.7,0.5,0.3/fp32",
        "stock/bf16",
        "keep-all/bf16",
        "ratios:1,0.7,0.5,0.3/bf16",
        "keep-all/int8",
        "ratios:1,0.7,0.5,0.3/int8",
    }
    shape = next(r for r in report["runs"][0]["rows"] if r["forward"] == "ratios:1,0.7,0.5,0.3/bf16")
    assert {"vs_stock_fp32", "vs_own_keep_all"} <= set(shape)
    rows = {(r["config"], r["precision"]): r for r in report["accuracy"]}
    assert rows[("keep-all", "fp32")]["f1_delta"] == 0.0
    assert set(rows) == {(c, p) for c in ("keep-all", "ratios:1,0.7,0.5,0.3") for p in ("fp32", "bf16", "int8")}
    assert "held-out F1" in (tmp_path / "precision.md").read_text()
    assert json.loads((tmp_path / "result.json").read_text())["benchmark"] == "precision"

    from dynlen.reports.docs import results_page

    page = results_page(tmp_path.parent)
    assert "## Length x precision" in page and "`keep-all/bf16`" in page and "`ratios:1,0.7,0.5,0.3/int8`" in page


def test_an_unknown_precision_is_one_line_before_the_model_loads(model_dir, squad_file, capsys):
    script = load_benchmark("precision")
    code = script.main(["--model", str(model_dir / "absent"), "--data", str(squad_file), "--precisions", "int4"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown precision 'int4'" in err[0]
