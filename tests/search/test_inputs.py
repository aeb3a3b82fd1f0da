"""Malformed input is one line naming the field and the fix, before a model or a trial runs."""

from __future__ import annotations

import json

import pytest
from fixtures import squad_dict

from dynlen.bench.squad import load_squad
from dynlen.engine.config import LengthConfig
from dynlen.errors import UserError
from dynlen.search.settings import SearchSettings
from dynlen.search.study import run_search


def _broken(path, change):
    raw = squad_dict()
    change(raw["data"][0]["paragraphs"][0])
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize(
    "change, says",
    [
        (lambda p: p["qas"][0]["answers"][0].update(answer_start="abc"), "'answer_start' is 'abc'"),
        (lambda p: p.update(context=None), "'context' is None"),
        (lambda p: p["qas"][0].update(question=12345), "'question' is 12345"),
        (lambda p: p["qas"][0]["answers"][0].update(answer_start=10_000), "outside its context"),
        (lambda p: p["qas"][0].pop("id"), "has no 'id'"),
    ],
)
def test_malformed_squad_field_is_named(tmp_path, change, says):
    with pytest.raises(UserError, match=says) as info:
        load_squad(_broken(tmp_path / "bad.json", change))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "text, says",
    [
        ('{"kind": "ratios", "values": [1, Infinity]}', "not a finite number"),
        ('{"kind": "counts", "values": [384, Infinity]}', "not a finite number"),
        ('{"kind": "ratios", "values": [1, "0.5"]}', "not a number"),
        ('{"kind": "counts", "values": [3, 2], "max_length": "abc"}', "'max_length' is 'abc'"),
        ('{"kind": "counts", "values": [3, 2], "max_length": 0}', "at least 1"),
        ('{"kind": "ratios", "values": []}', "non-empty list"),
    ],
)
def test_malformed_configuration_json_is_one_line(tmp_path, text, says):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(UserError, match=says):
        LengthConfig.load(path)


def test_squad_error_comes_before_the_model_loads(tmp_path, model_dir, monkeypatch):
    from dynlen.search import study

    def no_model(*_a, **_k):
        raise AssertionError("model loaded before the data was checked")

    monkeypatch.setattr(study, "load_qa_model", no_model)
    bad = _broken(tmp_path / "bad.json", lambda p: p.update(context=None))
    settings = SearchSettings(model=str(model_dir), data=str(bad), run_dir=str(tmp_path / "run"), trials=6)
    with pytest.raises(UserError, match="'context' is None"):
        run_search(settings, None)


def test_negative_max_rescore_is_refused_before_the_model_loads(tmp_path, model_dir, squad_file, monkeypatch):
    from dynlen.search import study

    def no_model(*_a, **_k):
        raise AssertionError("model loaded before the settings were checked")

    monkeypatch.setattr(study, "load_qa_model", no_model)
    run_dir = tmp_path / "run"
    settings = SearchSettings(model=str(model_dir), data=str(squad_file), run_dir=str(run_dir), max_rescore=-1)
    with pytest.raises(UserError, match="--max-rescore must be 0 or more"):
        run_search(settings, None)
    assert not (run_dir / "study.db").exists()


def _search_args(model, squad_file, run_dir) -> list[str]:
    args = ["search", "--model", str(model), "--data", str(squad_file), "--run", str(run_dir)]
    return args + ["--trials", "6", "--search-questions", "0", "--heldout-questions", "0", "--no-report"]


def test_unreachable_flops_budget_is_refused_before_the_first_trial(tmp_path, model_dir, squad_file, capsys):
    from dynlen.cli.main import main

    run_dir = tmp_path / "run"
    assert main([*_search_args(model_dir, squad_file, run_dir), "--budget", "flops-speedup>=100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be met" in err[0] and "flops-speedup>=" in err[0]
    assert not run_dir.exists(), "a refused search wrote into its run folder"


@pytest.mark.parametrize(
    "wrong, says",
    [
        (["--budget", "flops-speedup>=100"], "cannot be met"),
        (["--model", "models/nope"], "model folder not found: models/nope"),
        (["--model", "someone/not-a-model"], "cannot reach the Hugging Face hub"),
        (["--significance", "lookahead"], "probes"),
    ],
)
def test_a_refused_run_leaves_nothing_and_its_corrected_command_runs(
    tmp_path, model_dir, squad_file, capsys, monkeypatch, wrong, says
):
    """The same RUN, first with a mistake, then fixed: the mistake never blocks its own fix."""
    import time

    from huggingface_hub import constants

    from dynlen.cli.main import main

    monkeypatch.chdir(tmp_path)  # models/nope: no models/ folder here, as on a fresh clone
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # a hub that does not answer
    # online as a user is, whatever the caller set (CI runs with HF_HUB_OFFLINE=1)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    run_dir = tmp_path / "reports" / "quick"
    right = _search_args(model_dir, squad_file, run_dir)
    started = time.monotonic()
    assert main([*right, *wrong]) == 2
    assert time.monotonic() - started < 20
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert not run_dir.exists() and not (tmp_path / "reports").exists()
    assert main(right) == 0
    assert (run_dir / "run.json").is_file() and not list(run_dir.glob("*.lock"))


def test_a_study_without_a_completed_trial_takes_the_new_settings(tmp_path, squad_file, capsys):
    """A study left by a run that failed before any trial completed does not pin its settings."""
    import optuna

    from dynlen.search.worker import Worker

    def opened(**change):
        settings = SearchSettings(model="m", data=str(squad_file), run_dir=str(tmp_path / "run"), **change)
        worker = Worker(settings)
        worker.check()
        worker.claim()
        try:
            return worker.open("data-sha", "model-sha")
        finally:
            worker.close()

    first = opened(cost="latency")
    first.enqueue_trial({"x": 1.0})
    second = opened(cost="flops")
    assert second.user_attrs["settings"]["cost"] == "flops" and second.trials == []
    assert "started it again" in capsys.readouterr().out
    trial = second.ask()
    second.tell(trial, [80.0, 1.0])
    with pytest.raises(UserError, match="--cost was 'flops', now 'latency'.*another --run"):
        opened(cost="latency")
    assert not list((tmp_path / "run").glob("*.lock"))
    assert len(optuna.load_study(study_name="run", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}").trials) == 1
