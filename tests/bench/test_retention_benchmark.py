"""The retention benchmark's oracles: the gold answer and the model's own keep-all answer are kept.

Runs the script on the tiny random model and SQuAD fixture, so what is checked is the mechanism
(which tokens the oracles protect and what the survival columns count), not any figure.
"""

from __future__ import annotations

import json

import pytest
from fixtures import load_benchmark


@pytest.fixture(autouse=True)
def _torch_gemm(monkeypatch):
    """The native kernels are not what these tests are about; torch's ops spare a compile."""
    monkeypatch.setenv("DYNLEN_KERNELS", "off")


def _rows(model_dir, squad_file, out, policies: str, config: str = "ratios:1,0.7,0.7,0.7") -> dict:
    script = load_benchmark("retention")
    code = script.main(
        ["--models", str(model_dir), "--data", str(squad_file), "--questions", "50"]
        + ["--policies", policies, "--configs", config, "--out", str(out)]
    )
    assert code == 0
    return {
        row["policy"] if row["config"] != "keep-all" else "keep-all": row
        for row in json.loads((out / "retention.json").read_text())
    }


def test_each_oracle_keeps_its_span_to_the_last_layer(model_dir, squad_file, tmp_path):
    rows = _rows(model_dir, squad_file, tmp_path, "attention,oracle,self-oracle")
    assert rows["keep-all"]["own_answer_survival"] is None
    assert rows["oracle"]["answer_survival"] == 1.0
    assert rows["self-oracle"]["own_answer_survival"] == 1.0
    assert rows["self-oracle"]["own_answer_survival_per_layer"] == [1.0] * 4
    # without the protection, attention received drops the random model's own answers
    assert rows["attention"]["own_answer_survival"] < 1.0


def test_a_merge_is_paired_with_dropping_at_the_same_shape(model_dir, squad_file, tmp_path):
    rows = _rows(
        model_dir,
        squad_file,
        tmp_path,
        "attention,attention/merge-window,attention/merge-window-flat",
        "ratios:1,0.5,0.4,0.3",
    )
    drop, merged = rows["attention"], rows["attention/merge-window"]
    assert "f1_vs_drop" not in drop
    assert merged["f1_vs_drop"] == pytest.approx(merged["f1"] - drop["f1"])
    assert merged["f1_vs_drop_low"] <= merged["f1_vs_drop"] <= merged["f1_vs_drop_high"]
    assert merged["flops_speedup_vs_keep_all"] < drop["flops_speedup_vs_keep_all"]  # summary slots cost FLOPs
    assert "f1_vs_drop" in (tmp_path / "retention.md").read_text()
    flat = rows["attention/merge-window-flat"]  # the ablation: same slots, no proportional attention
    assert flat["flops_speedup_vs_keep_all"] == merged["flops_speedup_vs_keep_all"] and "f1_vs_drop" in flat
