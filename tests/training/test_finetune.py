import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from fixtures import KilledAt, kill_after, model_weights, tiny_recipe

from dynlen.bench.squad import load_squad
from dynlen.errors import UserError
from dynlen.training import finetune, recipe
from dynlen.training import trainer as tr


def _recipe(model_dir: Path, squad_file: Path, **overrides) -> finetune.Recipe:
    return tiny_recipe(finetune.Recipe, model_dir, squad_file, **overrides)


def test_training_saves_a_float32_model_and_is_idempotent(model_dir, squad_file, tmp_path, capsys):
    out = tmp_path / "qa"
    finetune.train(_recipe(model_dir, squad_file), out, save_every=2)
    info = json.loads((out / "training.json").read_text())
    assert info["steps"] == 6 and info["precision"] == "fp32" and info["resumed_from"] is None
    assert not (out / tr.CHECKPOINTS).exists(), "checkpoints are removed once the model is saved"
    assert all(t.dtype == torch.float32 for t in model_weights(out).values())
    before = (out / "training.json").stat().st_mtime_ns
    finetune.train(_recipe(model_dir, squad_file), out)
    assert "nothing to do" in capsys.readouterr().out
    assert (out / "training.json").stat().st_mtime_ns == before


def test_training_changes_the_weights_towards_the_labels(model_dir, squad_file, tmp_path):
    out = tmp_path / "qa"
    finetune.train(_recipe(model_dir, squad_file, epochs=4.0), out)
    trained, start = model_weights(out), model_weights(model_dir)
    changed = [k for k in trained if k in start and not torch.equal(trained[k], start[k])]
    assert len(changed) > len(trained) // 2
    assert json.loads((out / "training.json").read_text())["final_loss"] is not None


def _whole_and_killed_at_4(model_dir, squad_file, tmp_path, monkeypatch):
    """An uninterrupted run's folder, and one of the same recipe killed after step 4 (checkpoints every 2)."""
    whole = tmp_path / "whole"
    finetune.train(_recipe(model_dir, squad_file), whole, save_every=2)
    resumed = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        kill_after(finetune, 4, patch)
        with pytest.raises(KilledAt):
            finetune.train(_recipe(model_dir, squad_file), resumed, save_every=2)
    return whole, resumed


def test_a_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_one(model_dir, squad_file, tmp_path, monkeypatch):
    whole, resumed = _whole_and_killed_at_4(model_dir, squad_file, tmp_path, monkeypatch)
    assert tr.last_checkpoint(resumed / tr.CHECKPOINTS).endswith("checkpoint-4")
    assert not (resumed / "training.json").exists()
    finetune.train(_recipe(model_dir, squad_file), resumed, save_every=2)
    assert json.loads((resumed / "training.json").read_text())["resumed_from"] == "checkpoint-4"
    a, b = model_weights(whole), model_weights(resumed)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)


def test_checkpoints_of_other_options_are_refused_before_training(model_dir, squad_file, tmp_path, monkeypatch):
    out = tmp_path / "qa"
    with monkeypatch.context() as patch:
        kill_after(finetune, 2, patch)
        with pytest.raises(KilledAt):
            finetune.train(_recipe(model_dir, squad_file), out, save_every=2)
    with pytest.raises(UserError, match="differs in: learning_rate.*same options to resume"):
        finetune.train(_recipe(model_dir, squad_file, learning_rate=5e-4), out)


def test_a_finished_model_of_other_options_is_refused_not_trained_over(model_dir, squad_file, tmp_path):
    out = tmp_path / "qa"
    finetune.train(_recipe(model_dir, squad_file, max_steps=1), out)
    before = model_weights(out)
    with pytest.raises(UserError, match=r"finished model.*learning_rate \(.*stored, 0.0005 now\).*another --out"):
        finetune.train(_recipe(model_dir, squad_file, learning_rate=5e-4, max_steps=1), out)
    after = model_weights(out)
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_a_checkpoint_cut_short_by_a_kill_is_skipped(tmp_path):
    folder = tmp_path / "checkpoints"
    complete = folder / "checkpoint-4"
    complete.mkdir(parents=True)
    (complete / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    partial = folder / "checkpoint-6"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    assert tr.last_checkpoint(folder) == str(complete)
    assert not partial.exists()
    assert tr.last_checkpoint(tmp_path / "none") is None


def test_precision_auto_follows_the_hardware(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(tr, "hardware_has_bf16", lambda device: False)
    assert tr.resolve_precision("auto", cpu) == "fp32"
    with pytest.raises(UserError, match="no native bf16; use --precision fp32"):
        tr.resolve_precision("bf16", cpu)
    monkeypatch.setattr(tr, "hardware_has_bf16", lambda device: True)
    assert tr.resolve_precision("auto", cpu) == "bf16"
    assert tr.resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(UserError, match="unknown precision"):
        tr.resolve_precision("fp8", cpu)


@pytest.mark.skipif(not tr.hardware_has_bf16(torch.device("cpu")), reason="this CPU has no native bf16")
def test_bf16_training_keeps_float32_weights(model_dir, squad_file, tmp_path):
    out = tmp_path / "qa"
    finetune.train(_recipe(model_dir, squad_file, precision="bf16"), out)
    assert json.loads((out / "training.json").read_text())["precision"] == "bf16"
    assert all(t.dtype == torch.float32 for t in model_weights(out).values())


def test_global_batch_splits_over_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert tr.per_device_batch(16) == 4
    with pytest.raises(UserError, match="multiple of 4"):
        tr.per_device_batch(10)


def test_a_file_named_like_the_official_set_must_be_it(squad_file, tmp_path):
    fake = tmp_path / "train-v1.1.json"
    fake.write_bytes(squad_file.read_bytes())
    with pytest.raises(UserError, match="not the official train-v1.1.json .*download it again"):
        load_squad(fake)
    renamed = tmp_path / "my-train.json"
    renamed.write_bytes(squad_file.read_bytes())
    assert load_squad(renamed).examples


def test_a_run_that_failed_before_its_first_checkpoint_does_not_claim_the_folder(model_dir, squad_file, tmp_path):
    out = tmp_path / "qa"
    with pytest.raises(UserError, match="not found"):
        finetune.train(_recipe(model_dir, tmp_path / "typo.json"), out)
    finetune.train(_recipe(model_dir, squad_file), out)  # the corrected command is not refused
    assert json.loads((out / "training.json").read_text())["steps"] == 6


def test_attention_dropout_is_off_by_default_and_recorded_in_the_saved_config(model_dir, squad_file, tmp_path):
    assert json.loads((model_dir / "config.json").read_text())["attention_probs_dropout_prob"] > 0
    out = tmp_path / "qa"
    finetune.train(_recipe(model_dir, squad_file, epochs=1.0), out)
    assert json.loads((out / "config.json").read_text())["attention_probs_dropout_prob"] == 0.0
    kept = tmp_path / "kept"
    finetune.train(_recipe(model_dir, squad_file, epochs=1.0, attention_dropout=None), kept)
    config = json.loads((kept / "config.json").read_text())
    assert (
        config["attention_probs_dropout_prob"]
        == json.loads((model_dir / "config.json").read_text())["attention_probs_dropout_prob"]
    )


def test_a_stored_recipe_reads_a_field_it_lacks_as_its_default(model_dir, squad_file):
    from dynlen.training.recipe import same_recipe

    today = _recipe(model_dir, squad_file)
    stored = {k: v for k, v in asdict(today).items() if k != "attention_dropout"}
    assert same_recipe(stored, today) and not same_recipe(
        stored, _recipe(model_dir, squad_file, attention_dropout=None)
    )
    assert same_recipe(asdict(today), today)


def test_distilbert_names_its_attention_dropout_differently(tmp_path):
    from transformers import DistilBertConfig

    DistilBertConfig(dim=32, hidden_dim=64, n_layers=1, n_heads=2, vocab_size=50).save_pretrained(tmp_path)
    assert recipe.attention_dropout_option(str(tmp_path), 0.0) == {"attention_dropout": 0.0}
    assert recipe.attention_dropout_option(str(tmp_path), None) == {}


def test_an_attention_dropout_outside_0_1_is_refused_before_any_data_is_read(model_dir, tmp_path):
    recipe = tiny_recipe(finetune.Recipe, model_dir, tmp_path / "missing.json", attention_dropout=1.0)
    with pytest.raises(UserError, match="--attention-dropout"):
        finetune.train(recipe, tmp_path / "qa")


def test_a_qa_model_with_probes_as_the_base_does_not_pass_its_probes_on(model_dir, squad_file, tmp_path):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(model_dir, base)
    config = json.loads((base / "config.json").read_text())
    config["dynlen_lookahead"] = {"hidden": 8, "layers": [1, 2, 3], "hidden_size": 32}
    (base / "config.json").write_text(json.dumps(config))
    out = tmp_path / "qa"
    finetune.train(_recipe(base, squad_file), out)
    assert "dynlen_lookahead" not in json.loads((out / "config.json").read_text())


def test_a_smoke_model_of_a_few_steps_is_not_taken_for_the_full_recipe(model_dir, squad_file, tmp_path):
    out = tmp_path / "qa"
    finetune.train(_recipe(model_dir, squad_file, max_steps=1), out)
    assert json.loads((out / "training.json").read_text())["recipe"]["max_steps"] == 1
    with pytest.raises(UserError, match=r"differs in: max_steps \(1 stored, None now\)"):
        finetune.train(_recipe(model_dir, squad_file), out)


@pytest.mark.parametrize("damaged", ["model.safetensors", "optimizer.pt"])
def test_a_checkpoint_with_a_truncated_file_falls_back_to_the_one_before(tmp_path, damaged):
    from safetensors.torch import save_file

    folder = tmp_path / "checkpoints"
    for step in (4, 6):
        path = folder / f"checkpoint-{step}"
        path.mkdir(parents=True)
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        save_file({"w": torch.zeros(64)}, str(path / "model.safetensors"))
        torch.save({"state": torch.zeros(64)}, path / "optimizer.pt")
    newest = folder / "checkpoint-6" / damaged
    newest.write_bytes(newest.read_bytes()[:-40])
    assert tr.last_checkpoint(folder) == str(folder / "checkpoint-4")
    assert not (folder / "checkpoint-6").exists()


def test_a_rerun_over_a_truncated_checkpoint_trains_to_the_same_weights(model_dir, squad_file, tmp_path, monkeypatch):
    whole, resumed = _whole_and_killed_at_4(model_dir, squad_file, tmp_path, monkeypatch)
    weights = resumed / tr.CHECKPOINTS / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a disk that filled up mid-copy
    finetune.train(_recipe(model_dir, squad_file), resumed, save_every=2)
    assert json.loads((resumed / "training.json").read_text())["resumed_from"] is None
    a, b = model_weights(whole), model_weights(resumed)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)


def test_an_unwritable_out_is_refused_before_the_data_loads(model_dir, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(finetune, "load_squad", lambda *_a: pytest.fail("data loaded before --out was checked"))
    with pytest.raises(UserError, match=r"cannot write to .*a-file/qa \(Not a directory\)"):
        finetune.train(_recipe(model_dir, tmp_path / "unused.json"), blocker / "qa")
