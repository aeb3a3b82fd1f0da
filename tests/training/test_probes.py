"""Training look-ahead probes on a tiny model: saved with the model, loaded by the engine, idempotent."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from dynlen.bench.model_io import load_qa_model
from dynlen.engine.adaptive import LengthAdaptiveQA
from dynlen.engine.probes import CONFIG_KEY, WEIGHTS_FILE, LookaheadProbes
from dynlen.errors import UserError
from dynlen.training.probes import ProbeRecipe, train_probes


def test_probes_train_save_and_load(tmp_path, model_dir, squad_file, capsys):
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    recipe = ProbeRecipe(train=str(squad_file), features=12, width=8, epochs=2, batch_size=4)
    info = train_probes(str(folder), recipe)
    assert (folder / WEIGHTS_FILE).is_file()
    entry = json.loads((folder / "config.json").read_text())[CONFIG_KEY]
    assert entry["layers"] == [1, 2, 3] and entry["hidden"] == 8 and len(info["kl_nats_per_layer"]) == 3
    qa = LengthAdaptiveQA(load_qa_model(str(folder)))
    assert qa.probes is not None and qa.probes.flops(1) == 2 * (32 * 8 + 8 * 2)
    before = (folder / WEIGHTS_FILE).stat().st_mtime_ns
    train_probes(str(folder), recipe)  # same recipe: left alone
    assert (folder / WEIGHTS_FILE).stat().st_mtime_ns == before and "nothing to do" in capsys.readouterr().out


def test_probes_out_saves_a_copy_of_a_read_only_model_with_its_probes(tmp_path, model_dir, squad_file, capsys):
    """--out: the model folder is left untouched; the new folder is the model with its probes."""
    from dynlen.engine.probes import auto_significance

    source = tmp_path / "read-only"
    shutil.copytree(model_dir, source)
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    out = tmp_path / "with-probes"
    recipe = ProbeRecipe(train=str(squad_file), features=12, width=8, epochs=2, batch_size=4)
    train_probes(str(source), recipe, out=str(out))
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before
    assert (out / WEIGHTS_FILE).is_file() and "--model " + str(out) in capsys.readouterr().out
    assert auto_significance(str(out))[0] == "lookahead+question"
    assert LengthAdaptiveQA(load_qa_model(str(out))).probes is not None
    policy, why = auto_significance(str(source))
    assert policy == "attention" and f"dynlen probes --model {source}" in why and "--out" in why
    with pytest.raises(UserError, match="holds no model"):
        (tmp_path / "busy").mkdir()
        (tmp_path / "busy" / "notes.txt").write_text("x")
        train_probes(str(source), recipe, out=str(tmp_path / "busy"))


def test_bad_recipe_and_folder_are_one_line(tmp_path, squad_file):
    with pytest.raises(UserError, match="^epochs must be at least 1"):
        train_probes(str(tmp_path), ProbeRecipe(train=str(squad_file), epochs=0))
    with pytest.raises(UserError, match="not a model folder"):
        train_probes(str(tmp_path / "missing"), ProbeRecipe(train=str(squad_file)))


def test_stored_recipes_of_retired_options_match_only_at_what_this_version_does(squad_file):
    """Probes trained with the retired target options at their neutral values are this recipe; others are not."""
    plain = ProbeRecipe(train=str(squad_file))
    stored = {**plain.__dict__, "match_heads": 0, "temperature": 1.0, "gold_weight": 0.0}
    assert plain.same_as(stored) and plain.same_as(plain.__dict__)
    for changed in ({"match_heads": 2}, {"temperature": 3.0}, {"gold_weight": 1.0}):
        assert not plain.same_as({**stored, **changed}), changed


def test_saved_question_matching_probes_are_refused_in_one_line(tmp_path, model_dir):
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    model = load_qa_model(str(folder))
    LookaheadProbes(model.config.hidden_size, [1, 2, 3], 8).save(folder)
    config = json.loads((folder / "config.json").read_text())
    config[CONFIG_KEY]["match_heads"] = 2
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="match tokens against the question.*retrain"):
        LengthAdaptiveQA(load_qa_model(str(folder)))


def test_one_recipe_gives_one_set_of_probes(tmp_path, model_dir, squad_file):
    """The seed covers the probes' initial weights as well as the sample and order."""
    from safetensors.torch import load_file

    recipe = ProbeRecipe(train=str(squad_file), features=12, width=8, epochs=2, batch_size=4)
    weights = []
    for name in ("a", "b"):
        shutil.copytree(model_dir, tmp_path / name)
        train_probes(str(tmp_path / name), recipe)
        weights.append(load_file(tmp_path / name / WEIGHTS_FILE))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
