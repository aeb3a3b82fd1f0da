"""choose --export: a plain Hugging Face folder that serves the chosen configuration by itself."""

from __future__ import annotations

import json

import pytest
from fixtures import save_tiny_model
from test_search import _settings

from dynlen.bench.answer import Answerer
from dynlen.engine.config import LengthConfig
from dynlen.errors import UserError
from dynlen.search.budget import parse_budget
from dynlen.search.choose import choose, export_model, write_choice
from dynlen.search.study import run_search


@pytest.fixture(scope="module")
def chosen(tmp_path_factory, model_dir, squad_file):
    tmp = tmp_path_factory.mktemp("export")
    run_dir = run_search(_settings(tmp, model_dir, squad_file, trials=7), None)
    best, record = choose(run_dir, parse_budget("flops-speedup>=1.2"))
    write_choice(record, tmp / "chosen.json")
    return tmp, best, record


def test_exported_folder_serves_the_choice_with_nothing_else(chosen):
    tmp, best, record = chosen
    folder = export_model(record, tmp / "exported")
    entry = json.loads((folder / "config.json").read_text())["dynlen_length_config"]
    assert LengthConfig.from_dict(entry) == best.length_config and entry["heldout"]["f1"] == best.heldout.f1
    qa = Answerer(folder)
    assert qa.config == best.length_config and not qa.config.is_keep_all
    assert qa("What colour was the cat?", "It was a black cat with green eyes.")["answer"] is not None
    with pytest.raises(UserError, match="not empty"):
        export_model(record, folder)


def test_a_choice_is_refused_for_other_weights(chosen, model_dir, tmp_path):
    tmp, best, _ = chosen
    assert Answerer(model_dir, config=str(tmp / "chosen.json")).config == best.length_config
    other = save_tiny_model(tmp_path / "other", seed=1)
    with pytest.raises(UserError, match="was chosen for the model .* [(]other weights[)]"):
        Answerer(other, config=str(tmp / "chosen.json"))


def test_choose_cli_exports(chosen, tmp_path, capsys):
    from dynlen.cli.main import main

    tmp, _, record = chosen
    run = record["run"]
    assert (
        main(
            [
                "choose",
                "--run",
                run,
                "--budget",
                "flops-speedup>=1.2",
                "--out",
                str(tmp_path / "c.json"),
                "--export",
                str(tmp_path / "served"),
            ]
        )
        == 0
    )
    assert (tmp_path / "served" / "config.json").is_file() and "dynlen answer --model" in capsys.readouterr().out


def test_a_choice_names_its_model_and_is_served_without_model(chosen, model_dir, capsys):
    from dynlen.cli.main import main

    tmp, best, record = chosen
    assert record["model"] == str(model_dir) and record["weights_sha"]
    assert Answerer(config=str(tmp / "chosen.json")).config == best.length_config
    args = ["answer", "--config", str(tmp / "chosen.json"), "--question", "Where did the cat sit?"]
    assert main([*args, "--context", "The cat sat on the mat."]) == 0
    assert json.loads(capsys.readouterr().out)["answer"]


def test_a_choice_without_a_fingerprint_is_refused(chosen, tmp_path):
    tmp, _, record = chosen
    old = tmp_path / "old-chosen.json"
    old.write_text(json.dumps({**record, "weights_sha": None}))
    with pytest.raises(UserError, match="not its weights' fingerprint.*choose again"):
        Answerer(config=str(old))


def test_exported_files_are_readable_by_others(chosen, tmp_path):
    _, _, record = chosen
    folder = export_model(record, tmp_path / "shared")
    assert (folder / "model.safetensors").stat().st_mode & 0o777 == 0o644
