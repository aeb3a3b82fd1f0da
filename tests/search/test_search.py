import dataclasses
import json

import optuna
import pytest
from fixtures import scores_at

from dynlen.bench.measurement import Measurement
from dynlen.engine.config import LengthConfig
from dynlen.errors import UserError
from dynlen.search.budget import parse_budget
from dynlen.search.choose import NothingMeetsBudget, choose
from dynlen.search.objective import Objective
from dynlen.search.records import TrialPoint, read_run
from dynlen.search.settings import SearchSettings
from dynlen.search.space import baseline_params, config_from_shares, sample_config
from dynlen.search.study import run_search


def _scores(**kw):
    base = dict(
        exact_match=50.0,
        f1=60.0,
        gflops_per_question=2.0,
        flops_speedup_vs_keep_all=2.0,
        flops_speedup_vs_bert_base=10.0,
        latency_speedup_vs_keep_all=1.5,
        latency_ms=12.0,
    )
    base.update(kw)
    return Measurement(**base)


@pytest.mark.parametrize(
    "text, met, missed",
    [
        ("flops-speedup>=2", dict(flops_speedup_vs_keep_all=2.0), dict(flops_speedup_vs_keep_all=1.9)),
        ("latency-speedup>=1.5", dict(latency_speedup_vs_keep_all=1.6), dict(latency_speedup_vs_keep_all=1.2)),
        ("gflops<=2.5", dict(gflops_per_question=2.5), dict(gflops_per_question=2.6)),
        ("latency-ms<=10", dict(latency_ms=9.0), dict(latency_ms=11.0)),
    ],
)
def test_budget_syntax(text, met, missed):
    budget = parse_budget(text)
    assert str(budget) == text.replace(" ", "")
    assert budget.is_met(_scores(**met)) and budget.violation(_scores(**met)) <= 0
    assert not budget.is_met(_scores(**missed)) and budget.violation(_scores(**missed)) > 0


@pytest.mark.parametrize("text", ["speed>=2", "flops-speedup<=2", "gflops>=1", "flops-speedup>=-1", "fast"])
def test_bad_budget_is_a_clear_error(text):
    with pytest.raises(UserError, match="budget"):
        parse_budget(text)


def test_sampled_configurations_are_valid_and_baselines_are_in_the_space():
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        config = sample_config(trial, 6)
        assert list(config.values) == sorted(config.values, reverse=True)
        study.tell(trial, [0.0, 1.0])
    params = baseline_params(4)
    assert config_from_shares(list(params["keep-all"].values())).is_keep_all
    assert config_from_shares(list(params["constant-0.50"].values())) == LengthConfig("ratios", (1.0, 0.5, 0.25, 0.125))


def test_only_the_last_layer_may_keep_less_than_the_lowest_share():
    """The last layer computes only answer candidates' final states, so its share goes lower; no other layer's does."""
    from dynlen.search.space import LAST_LAYER_LOWEST_SHARE, LOWEST_SHARE, param_name
    from dynlen.search.study import cheapest_config

    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(60):
        trial = study.ask()
        sample_config(trial, 4)
        study.tell(trial, [0.0, 1.0])
    lows = {i: min(t.params[param_name(i)] for t in study.trials) for i in range(4)}
    assert all(lows[i] >= LOWEST_SHARE - 1e-9 for i in range(3))
    assert LAST_LAYER_LOWEST_SHARE - 1e-9 <= lows[3] < LOWEST_SHARE
    cheapest = cheapest_config(4).values
    assert cheapest[2] == LOWEST_SHARE**3 and cheapest[3] == round(LOWEST_SHARE**3 * LAST_LAYER_LOWEST_SHARE, 6)


def _settings(tmp_path, model_dir, squad_file, trials, **kw):
    return SearchSettings(
        model=str(model_dir),
        data=str(squad_file),
        run_dir=str(tmp_path / "run"),
        trials=trials,
        search_questions=None,
        heldout_questions=None,
        latency_sample=2,
        latency_repeats=1,
        batch_size=4,
        **kw,
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, model_dir, squad_file):
    tmp = tmp_path_factory.mktemp("search")
    settings = _settings(tmp, model_dir, squad_file, trials=10)
    run_dir = run_search(settings, None)
    return settings, run_dir


def test_search_writes_run_with_held_out_scores(finished_run):
    settings, run_dir = finished_run
    info, points = read_run(run_dir)
    assert info.trials == 10 and len(points) == 10
    assert info.search_questions + info.heldout_questions == 10
    assert {p.baseline for p in points if p.baseline} == {
        "keep-all",
        "constant-0.90",
        "constant-0.80",
        "constant-0.70",
        "constant-0.60",
        "constant-0.50",
    }
    rescored = [p for p in points if p.heldout is not None]
    assert all(p.baseline or p.on_search_frontier for p in rescored)
    keep_all = next(p for p in points if p.baseline == "keep-all")
    assert keep_all.heldout.flops_speedup_vs_keep_all == pytest.approx(1.0)
    assert info.keep_all_heldout_f1 == keep_all.heldout.f1
    assert all(p.heldout.latency_speedup_vs_bert_base > 0 for p in rescored)


def test_late_drop_seeds_run_as_ordinary_trials(finished_run):
    """The late-drop seeds are queued once, run, and are never reported as baselines."""
    _, run_dir = finished_run
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{run_dir / 'study.db'}")
    seeds = {t.user_attrs["seed"]: t for t in study.trials if "seed" in t.user_attrs}
    assert set(seeds) == {"late-0.80", "late-0.70", "late-0.60"}
    assert all("baseline" not in t.user_attrs and t.state == optuna.trial.TrialState.COMPLETE for t in seeds.values())
    _, points = read_run(run_dir)
    assert not any(p.baseline and p.baseline.startswith("late") for p in points)


def test_late_drop_seeds_are_in_the_space():
    """Full layers first, then a constant share, then the last layer's low share: valid, non-increasing shapes."""
    from dynlen.search.space import LAST_LAYER_LOWEST_SHARE, LATE_LAST_SHARE, late_params

    seeds = late_params(6)
    assert set(seeds) == {"late-0.80", "late-0.70", "late-0.60"}
    config = config_from_shares(list(seeds["late-0.70"].values()))
    assert config == LengthConfig("ratios", (1.0, 1.0, 0.7, 0.49, 0.343, round(0.343 * LATE_LAST_SHARE, 6)))
    assert LATE_LAST_SHARE >= LAST_LAYER_LOWEST_SHARE
    assert late_params(2) == {}  # no room for a family distinct from the constant ratios
    both = late_params(6, selections=("attention", "lookahead+question"))
    assert len(both) == 6 and {p["significance"] for p in both.values()} == {"attention", "lookahead+question"}


def test_rerun_resumes_without_repeating_trials(finished_run, model_dir, squad_file):
    settings, run_dir = finished_run
    study = optuna.load_study(study_name=settings.name, storage=settings.storage_url)
    before = [(t.number, t.params) for t in study.trials]
    more = SearchSettings(**{**settings.__dict__, "trials": 12})
    run_search(more, None)
    study = optuna.load_study(study_name=settings.name, storage=settings.storage_url)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 12
    assert [(t.number, t.params) for t in study.trials[: len(before)]] == before


def test_killed_search_loses_no_completed_trial(tmp_path, model_dir, squad_file, monkeypatch):
    settings = _settings(tmp_path, model_dir, squad_file, trials=8)
    calls = {"n": 0}
    original = Objective.measure

    def dies_on_fourth(self, config):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, config)

    monkeypatch.setattr(Objective, "measure", dies_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        run_search(settings, None)
    study = optuna.load_study(study_name=settings.name, storage=settings.storage_url)
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 3
    monkeypatch.setattr(Objective, "measure", original)
    run_search(settings, None)
    info, points = read_run(tmp_path / "run")
    assert len(points) == 8


def test_changed_settings_are_refused(finished_run):
    settings, _ = finished_run
    other = SearchSettings(**{**settings.__dict__, "cost": "latency"})
    with pytest.raises(UserError, match="--cost was"):
        run_search(other, None)


def test_budget_keeps_infeasible_trials_out_of_the_frontier(tmp_path, model_dir, squad_file):
    budget = parse_budget("flops-speedup>=1.5")
    run_dir = run_search(_settings(tmp_path, model_dir, squad_file, trials=8, budget=str(budget)), budget)
    _, points = read_run(run_dir)
    assert any(not p.feasible for p in points)  # keep-all misses it but stays in the study
    assert all(p.feasible for p in points if p.on_search_frontier)
    assert all(p.search.flops_speedup_vs_keep_all >= 1.5 for p in points if p.on_search_frontier)


def test_choose_picks_best_held_out_f1_meeting_the_budget(finished_run, tmp_path):
    _, run_dir = finished_run
    budget = parse_budget("flops-speedup>=1.3")
    best, record = choose(run_dir, budget)
    _, points = read_run(run_dir)
    meeting = [p for p in points if p.heldout and p.heldout.flops_speedup_vs_keep_all >= 1.3]
    assert best.heldout.f1 == max(p.heldout.f1 for p in meeting)
    assert LengthConfig.from_dict(record) == best.length_config
    with pytest.raises(NothingMeetsBudget, match="closest"):
        choose(run_dir, parse_budget("flops-speedup>=100"))


def test_choose_cli_writes_json_and_exits_1_when_unreachable(finished_run, tmp_path, capsys):
    from dynlen.cli.main import main

    _, run_dir = finished_run
    out = tmp_path / "chosen.json"
    assert main(["choose", "--run", str(run_dir), "--budget", "flops-speedup>=1.2", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["config"]["kind"] == "ratios"
    assert main(["choose", "--run", str(run_dir), "--budget", "flops-speedup>=100"]) == 1
    assert "closest" in capsys.readouterr().out


def test_spread_keeps_both_ends_and_caps_the_count():
    from dynlen.search.heldout import spread

    front = list(range(42))
    picked = spread(front, 16)
    assert len(picked) == 16 and picked[0] == 0 and picked[-1] == 41
    assert picked == sorted(set(picked))
    assert spread(front[:5], 16) == front[:5]


def _front_point(number: int, f1: float, speed: float, baseline: str | None = None):
    config = LengthConfig.keep_all(6) if baseline == "keep-all" else LengthConfig.constant(6, 1.0 - number / 200)
    return TrialPoint(number, config.to_dict(), config.label(), baseline, True, scores_at(f1, speed))


def test_rescoring_takes_every_frontier_point_near_keep_all_before_thinning_the_tail():
    """A long tail of heavy drops must not crowd out the points where 'within 1 F1' is decided."""
    from dynlen.search.heldout import points_to_rescore

    keep_all = _front_point(0, 79.0, 1.0, "keep-all")
    near = [_front_point(1, 78.9, 1.43), _front_point(2, 78.7, 1.46), _front_point(3, 78.1, 1.60)]
    tail = [_front_point(10 + i, 74.0 - i, 1.7 + 0.05 * i) for i in range(50)]
    chosen = points_to_rescore([keep_all, *near, *tail], "flops", most=8)
    numbers = {p.number for p in chosen}
    assert {0, 1, 2, 3} <= numbers, "keep-all (a baseline) and every near point are re-scored"
    assert len([p for p in chosen if p.number >= 10]) == 8 - 4, "the tail gets the places left (keep-all is near too)"
    assert {10, 59} <= numbers, "the thinned tail keeps both its ends"
    assert all(p.on_search_frontier for p in chosen)
    crowded = points_to_rescore([keep_all, *near, *tail], "flops", most=2)
    assert {p.number for p in crowded} == {0, 3}, "too many near points: they are thinned, the tail gets none"


@pytest.mark.parametrize(
    "change, option",
    [
        ({"seed": 1}, "seed"),
        ({"latency_repeats": 2}, "--latency-repeats"),
        ({"heldout_questions": 3}, "--heldout-questions"),
    ],
)
def test_resume_with_settings_that_change_numbers_is_refused(finished_run, change, option):
    settings, _ = finished_run
    with pytest.raises(UserError, match=f"{option} was"):
        run_search(SearchSettings(**{**settings.__dict__, **change}), None)


def test_resume_with_changed_data_content_is_refused(tmp_path, model_dir, squad_file):
    data = tmp_path / "squad.json"
    data.write_bytes(squad_file.read_bytes())
    settings = _settings(tmp_path, model_dir, data, trials=6)
    run_search(settings, None)
    raw = json.loads(data.read_text())
    raw["data"][0]["paragraphs"][0]["qas"][0]["question"] = "Where did the cat sit down?"
    data.write_text(json.dumps(raw))
    with pytest.raises(UserError, match="content changed"):
        run_search(settings, None)


def test_run_json_names_the_study_and_hides_passwords(finished_run):
    settings, run_dir = finished_run
    info, _ = read_run(run_dir)
    assert info.sampler == settings.sampler and info.extra["study"] == "run"
    assert info.extra["settings"]["load"] == dataclasses.asdict(settings.load), "how the model was loaded is recorded"
    shown = SearchSettings(**{**settings.__dict__, "storage": "postgresql://u:secret@h/db"}).public()
    assert "secret" not in shown["storage"]


def test_precision_is_a_searched_dimension_beside_the_selection(tmp_path, model_dir, squad_file):
    from dynlen.search.space import search_tails

    assert search_tails("attention", "bf16,fp32") == ("attention", "attention/bf16")
    assert baseline_params(4, selections=("attention", "attention/bf16"))["keep-all/bf16"]["significance"] == (
        "attention/bf16"
    )
    settings = _settings(tmp_path, model_dir, squad_file, trials=9, significance="attention", precision="fp32,bf16")
    _, points = read_run(run_search(settings, None))
    precisions = {p.length_config.precision for p in points}
    assert precisions == {"fp32", "bf16"}
    keep_all = {p.baseline: p for p in points if p.length_config.is_keep_all and p.heldout}
    assert keep_all["keep-all"].length_config.precision == "fp32"
    bf16 = keep_all["keep-all/bf16"].heldout
    assert bf16.f1_delta_low is not None and bf16.f1_delta_low <= bf16.f1_delta_high  # a point, not the reference
    assert keep_all["keep-all"].heldout.f1_delta_low == keep_all["keep-all"].heldout.f1_delta_high == 0.0


def test_an_unknown_precision_is_refused_before_the_search_starts(tmp_path, model_dir, squad_file):
    settings = _settings(tmp_path, model_dir, squad_file, trials=3, significance="attention", precision="fp32,int4")
    with pytest.raises(UserError, match="unknown precision 'int4'"):
        run_search(settings, None)
    assert not (tmp_path / "run" / "study.db").exists()


def test_the_same_model_and_data_under_other_paths_resume_the_run(tmp_path, model_dir, squad_file, monkeypatch, capsys):
    import shutil

    settings = _settings(tmp_path, model_dir, squad_file, trials=6)
    run_search(settings, None)
    copy, data = tmp_path / "elsewhere" / "model", tmp_path / "elsewhere" / "squad.json"
    shutil.copytree(model_dir, copy)
    shutil.copyfile(squad_file, data)
    monkeypatch.chdir(copy.parent)  # the same command from another directory, with relative paths
    moved = SearchSettings(
        **{**settings.__dict__, "model": "model", "data": "squad.json", "run_dir": str(tmp_path / "run")}
    )
    capsys.readouterr()
    run_search(moved, None)
    assert "study already has 6 completed trials" in capsys.readouterr().out


def test_other_weights_under_the_same_path_are_refused(tmp_path, model_dir, squad_file):
    import shutil

    from fixtures import save_tiny_model

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    settings = _settings(tmp_path, model, squad_file, trials=6)
    run_search(settings, None)
    shutil.rmtree(model)
    save_tiny_model(model, seed=1)  # retrained in place
    with pytest.raises(UserError, match=r"--model \(its files changed\) was"):
        run_search(settings, None)
