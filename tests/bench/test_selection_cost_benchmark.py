"""The selection-cost benchmark: its floor runs the model's own layers on the configuration's token counts.

Checked on the tiny random model and SQuAD fixture: the mechanism, not any timing.
"""

from __future__ import annotations

import json

import pytest
import torch
from fixtures import load_benchmark, tiny_bert

from dynlen.engine.adaptive import LengthAdaptiveQA
from dynlen.engine.config import LengthConfig


@pytest.fixture(autouse=True)
def _torch_gemm(monkeypatch):
    monkeypatch.setenv("DYNLEN_KERNELS", "off")


def test_the_floor_at_keep_all_is_the_engine_at_keep_all():
    script = load_benchmark("selection_cost")
    engine = LengthAdaptiveQA(tiny_bert(), kernels=False)
    ids = torch.randint(5, 60, (1, 17), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    with torch.no_grad():
        floor = script.floor_forward(engine, LengthConfig.keep_all(4), batch)
        ours = engine(ids, batch["attention_mask"], batch["token_type_ids"]).start_logits
    torch.testing.assert_close(floor, ours, atol=1e-5, rtol=0)


def test_the_floor_runs_each_layer_on_the_configuration_s_counts(monkeypatch):
    script = load_benchmark("selection_cost")
    engine = LengthAdaptiveQA(tiny_bert(), kernels=False)
    rows = []
    original = engine.adapter.finish_layer

    def spy(layer, context, carry):
        rows.append(context.shape[1])
        return original(layer, context, carry)

    monkeypatch.setattr(engine.adapter, "finish_layer", spy)
    ids = torch.randint(5, 60, (1, 20), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    with torch.no_grad():
        script.floor_forward(engine, LengthConfig.parse("counts:20,10,6,3"), batch)
    assert rows == [20, 10, 6, 3]


def test_the_script_writes_all_contenders(model_dir, squad_file, tmp_path):
    script = load_benchmark("selection_cost")
    code = script.main(
        ["--model", str(model_dir), "--data", str(squad_file), "--config", "ratios:1,0.7,0.5,0.3@attention+question"]
        + ["--features", "3", "--repeats", "1", "--out", str(tmp_path)]
    )
    assert code == 0
    report = json.loads((tmp_path / "selection_cost.json").read_text())
    assert set(report["contenders"]) == {"engine", "free_scores", "floor"}
    assert report["flops_speedup_vs_keep_all"] > 1


def test_a_configuration_of_the_wrong_depth_is_refused_before_timing(model_dir, squad_file, capsys):
    script = load_benchmark("selection_cost")
    code = script.main(["--model", str(model_dir), "--data", str(squad_file), "--config", "ratios:1,0.5"])
    assert code != 0
    err = capsys.readouterr().err
    assert "one value per layer" in err and "timing" not in err
