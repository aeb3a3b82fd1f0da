"""The search with significance policies: fixed or searched, probes respected, intervals on held-out."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from test_search import _settings

from dynlen.engine.config import LengthConfig, config_cells, config_from_cells
from dynlen.engine.probes import LookaheadProbes
from dynlen.errors import UserError
from dynlen.search.records import read_run
from dynlen.search.space import SELECTION_PARAM, baseline_params, parse_selections, sample_config
from dynlen.search.study import run_search


def test_selections_are_validated_and_fixed_or_categorical():
    assert parse_selections("lookahead+question") == ("lookahead+question",)
    assert parse_selections("attention, lookahead") == ("attention", "lookahead")
    with pytest.raises(UserError, match="unknown significance policy"):
        parse_selections("attention,lookhead")
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    fixed = sample_config(trial, 4, selections=("lookahead+question",), probed_layers=[1, 2, 3])
    assert fixed.selection == "lookahead+question" and fixed.values[0] == 1.0 and "keep_01" not in trial.params
    trial = study.ask()
    both = sample_config(trial, 4, selections=("attention", "lookahead"))
    assert (
        trial.params[SELECTION_PARAM] in ("attention", "lookahead") and both.selection == trial.params[SELECTION_PARAM]
    )
    params = baseline_params(4, shares=(0.5,), selections=("attention", "lookahead"))
    assert set(params) == {"keep-all", "constant-0.50@attention", "constant-0.50@lookahead"}


def test_the_csv_form_keeps_the_policy():
    config = LengthConfig.parse("ratios:1,0.5,0.3@lookahead-attention+question")
    assert config_from_cells(config_cells(config)) == config
    old_row = {"kind": "ratios", "values": "1.0;0.5"}  # frontier.csv written before policies existed
    assert config_from_cells(old_row).selection == "attention"


def test_held_out_points_carry_their_interval_to_keep_all(tmp_path, model_dir, squad_file):
    run_dir = run_search(_settings(tmp_path, model_dir, squad_file, trials=7), None)
    _, points = read_run(run_dir)
    rescored = [p for p in points if p.heldout is not None]
    keep_all = next(p for p in rescored if p.baseline == "keep-all")
    assert (keep_all.heldout.f1_delta_low, keep_all.heldout.f1_delta_high) == (0.0, 0.0)
    others = [p for p in rescored if p.baseline != "keep-all"]
    assert others and all(p.heldout.f1_delta_low <= p.heldout.f1_delta_high for p in others)
    for p in others:  # the point estimate lies inside its interval
        delta = p.heldout.f1 - keep_all.heldout.f1
        assert p.heldout.f1_delta_low - 1e-9 <= delta <= p.heldout.f1_delta_high + 1e-9
    from dynlen.reports.report import make_report

    make_report(run_dir, tmp_path / "report")
    report = (tmp_path / "report" / "report.md").read_text()
    assert "95% interval" in report and "significance" in (tmp_path / "report" / "frontier.csv").read_text()


def test_lookahead_search_runs_on_a_model_with_probes(tmp_path, model_dir, squad_file):
    import shutil

    from transformers import AutoModelForQuestionAnswering

    folder = tmp_path / "with-probes"
    shutil.copytree(model_dir, folder)
    model = AutoModelForQuestionAnswering.from_pretrained(folder)
    LookaheadProbes(model.config.hidden_size, [1, 2, 3], 8).save(folder)
    settings = _settings(tmp_path, folder, squad_file, trials=7, significance="lookahead+question")
    run_dir = run_search(settings, None)
    _, points = read_run(run_dir)
    assert all(p.length_config.selection == "lookahead+question" for p in points)
    assert all(p.length_config.values[0] == 1.0 for p in points)  # the embeddings' layer has no probe


def test_auto_significance_follows_whether_the_model_has_probes(tmp_path, model_dir, capsys):
    import shutil

    from transformers import AutoModelForQuestionAnswering

    from dynlen.search.settings import SearchSettings

    plain = SearchSettings(model=str(model_dir), data="unused.json", run_dir=str(tmp_path / "a"))
    assert plain.significance == "auto" and plain.resolved().significance == "attention"
    assert "no look-ahead probes" in capsys.readouterr().out
    folder = tmp_path / "with-probes"
    shutil.copytree(model_dir, folder)
    model = AutoModelForQuestionAnswering.from_pretrained(folder)
    LookaheadProbes(model.config.hidden_size, [1, 2, 3], 8).save(folder)
    probed = SearchSettings(model=str(folder), data="unused.json", run_dir=str(tmp_path / "b"))
    assert probed.resolved().significance == "lookahead+question"
    fixed = SearchSettings(model=str(folder), data="unused.json", run_dir=str(tmp_path / "c"), significance="attention")
    assert fixed.resolved() is fixed


def test_a_search_refuses_a_policy_the_model_cannot_run_before_its_first_trial(tmp_path, model_dir, squad_file):
    settings = _settings(tmp_path, model_dir, squad_file, trials=3, significance="attention,lookahead")
    with pytest.raises(UserError, match="'lookahead' needs look-ahead probes"):
        run_search(settings, None)
    assert not Path(settings.run_dir).exists(), "the refusal came after the study was opened"
