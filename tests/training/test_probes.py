"""Training look-ahead probes on a tiny model: saved with the model, loaded by the engine, idempotent."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from dynlen.bench.model_io import load_qa_model
from dynlen.engine.adaptive import LengthAdaptiveQA
from dynlen.engine.probes import CONFIG_KEY, WEIGHTS_FILE
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
    with pytest.raises(UserError, match="--epochs must be at least 1"):
        train_probes(str(tmp_path), ProbeRecipe(train=str(squad_file), epochs=0))
    with pytest.raises(UserError, match="not a model folder"):
        train_probes(str(tmp_path / "missing"), ProbeRecipe(train=str(squad_file)))


def test_question_matching_probes_train_and_a_plain_recipe_still_matches_old_entries(tmp_path, model_dir, squad_file):
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    recipe = ProbeRecipe(train=str(squad_file), features=12, width=8, match_heads=2, epochs=2, batch_size=4)
    info = train_probes(str(folder), recipe)
    entry = json.loads((folder / "config.json").read_text())[CONFIG_KEY]
    assert entry["match_heads"] == 2 and all(kl > 0 for kl in info["kl_nats_per_layer"])
    qa = LengthAdaptiveQA(load_qa_model(str(folder)))
    assert qa.probes.needs_question and qa.probes.flops(10, 4) > qa.probes.flops(10, 0)
    plain = ProbeRecipe(train=str(squad_file))
    old_entry = {k: v for k, v in plain.__dict__.items() if k != "match_heads"}
    assert plain.same_as(old_entry) and not recipe.same_as(old_entry)
    with pytest.raises(UserError, match="--match-heads needs a hidden layer"):
        train_probes(str(folder), ProbeRecipe(train=str(squad_file), width=0, match_heads=2))


def test_softened_and_gold_targets_train_and_are_part_of_the_recipe(tmp_path, model_dir, squad_file):
    """Temperature and gold weight change what the probes learn, so they are in the stored recipe."""
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    plain = ProbeRecipe(train=str(squad_file), features=12, width=8, epochs=2, batch_size=4)
    soft = ProbeRecipe(**{**plain.__dict__, "temperature": 3.0, "gold_weight": 1.0})
    info = train_probes(str(folder), soft)
    entry = json.loads((folder / "config.json").read_text())[CONFIG_KEY]
    assert entry["recipe"]["temperature"] == 3.0 and entry["recipe"]["gold_weight"] == 1.0
    assert all(kl > 0 for kl in info["kl_nats_per_layer"])
    assert soft.same_as(entry["recipe"]) and not plain.same_as(entry["recipe"])
    old_entry = {k: v for k, v in plain.__dict__.items() if k not in ("temperature", "gold_weight")}
    assert plain.same_as(old_entry)  # probes trained before the options read as temperature 1, no labels
    with pytest.raises(UserError, match="--temperature must be > 0"):
        train_probes(str(folder), ProbeRecipe(train=str(squad_file), temperature=0.0))


@pytest.mark.parametrize("option", [{"temperature": 3.0}, {"gold_weight": 1.0}])
def test_each_target_option_changes_what_the_probes_learn(tmp_path, model_dir, squad_file, option):
    """Same data, seed and steps: the softened target, or the gold span's term, gives other weights."""
    from safetensors.torch import load_file

    plain = ProbeRecipe(train=str(squad_file), features=12, width=8, epochs=2, batch_size=4)
    weights = {}
    for name, recipe in (("plain", plain), ("option", ProbeRecipe(**{**plain.__dict__, **option}))):
        folder = tmp_path / name
        shutil.copytree(model_dir, folder)
        train_probes(str(folder), recipe)
        weights[name] = load_file(folder / WEIGHTS_FILE)
    assert weights["plain"].keys() == weights["option"].keys()
    assert any(not torch.equal(weights["plain"][k], weights["option"][k]) for k in weights["plain"])


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
