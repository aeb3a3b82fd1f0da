import dataclasses
import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from fixtures import KilledAt, kill_after, model_weights, tiny_bert, tiny_recipe, tiny_tokenizer, vocabulary

from dynlen.bench.features import build_features, collate
from dynlen.bench.squad import load_squad
from dynlen.cli import lengthdrop as lengthdrop_cli
from dynlen.cli.main import main as cli_main
from dynlen.engine.adaptive import LengthAdaptiveQA
from dynlen.errors import UserError
from dynlen.training import lengthdrop as ld
from dynlen.training import trainer as tr
from dynlen.training.recipe import differences, same_recipe

NUM_LAYERS = 4


def _recipe(model_dir: Path, squad_file: Path, **overrides) -> ld.LengthDropRecipe:
    return tiny_recipe(ld.LengthDropRecipe, model_dir, squad_file, **overrides)


def _batch(squad_file: Path, size: int = 4) -> dict[str, torch.Tensor]:
    feats = build_features(load_squad(str(squad_file)).examples, tiny_tokenizer(), 64, 16, with_labels=True)
    return collate(feats, list(range(size)))


# --- sub-model configurations ------------------------------------------------------------------
@pytest.mark.parametrize("bound", [0.0, 0.2, 0.5])
def test_smallest_config_is_cumulative_product(bound):
    config = ld.smallest_config(NUM_LAYERS, bound)
    assert config.kind == "ratios"
    expected = [(1 - bound) ** layer for layer in range(1, NUM_LAYERS + 1)]
    assert config.values == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("bound", [0.1, 0.2, 0.6])
def test_random_configs_are_valid_and_within_the_bound(bound):
    rng = random.Random(3)
    smallest = ld.smallest_config(NUM_LAYERS, bound).values
    for _ in range(200):
        values = ld.random_config(NUM_LAYERS, bound, rng).values
        previous = 1.0
        for layer, value in enumerate(values):
            assert 0 < value <= previous  # non-increasing, as LengthConfig demands
            share = value / previous
            assert 1 - bound - 1e-5 <= share <= 1 + 1e-9  # keeps [1 - bound, 1] of the previous layer
            assert value >= smallest[layer] - 1e-6
            previous = value


def test_sub_models_per_step_are_smallest_plus_n_random_and_reproducible():
    configs = ld.sub_model_configs(NUM_LAYERS, 0.2, 2, seed=0, step=7)
    assert len(configs) == 3
    assert configs[0] == ld.smallest_config(NUM_LAYERS, 0.2)
    assert configs == ld.sub_model_configs(NUM_LAYERS, 0.2, 2, seed=0, step=7)
    assert configs != ld.sub_model_configs(NUM_LAYERS, 0.2, 2, seed=0, step=8)


@pytest.mark.parametrize(
    "bad", [dict(bound=1.0), dict(bound=-0.1), dict(num_sub_models=-1), dict(max_steps=0), dict(attention_dropout=1.0)]
)
def test_bad_options_are_user_errors(bad, model_dir, squad_file):
    with pytest.raises(UserError):
        _recipe(model_dir, squad_file, **bad).check()


# --- losses ------------------------------------------------------------------------------------
def _logits(seed: int, shape=(3, 10)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _mask() -> torch.Tensor:
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    return mask


def test_kl_is_zero_for_identical_predictions_and_positive_otherwise():
    mask = _mask()
    start, end = _logits(0), _logits(1)
    same = ld.span_kl((start, end), (start.clone(), end.clone()), mask)
    assert same.abs().item() < 1e-6
    other = ld.span_kl((start, end), (_logits(2), _logits(3)), mask)
    assert other.item() > 1e-3


def test_kl_is_the_standard_direction_teacher_as_target():
    mask = torch.ones(3, 10, dtype=torch.long)
    s, t = _logits(0), _logits(1)
    p_t = t.softmax(-1)
    by_hand = (p_t * (p_t.log() - s.log_softmax(-1))).sum(-1).mean()
    assert ld.span_kl((s, s), (t, t), mask).item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_padded_positions_do_not_contribute():
    mask = _mask()
    start, end, t_start, t_end = _logits(0), _logits(1), _logits(2), _logits(3)
    base = ld.span_kl((start, end), (t_start, t_end), mask)
    pad = ~mask.bool()
    noisy = [x.masked_fill(pad, 0.0) + pad * 50.0 * _logits(9) for x in (start, end, t_start, t_end)]
    moved = ld.span_kl((noisy[0], noisy[1]), (noisy[2], noisy[3]), mask)
    assert torch.isfinite(moved)
    assert moved.item() == pytest.approx(base.item(), rel=1e-6, abs=1e-7)
    # and a student that matches the teacher on real positions only has zero KL
    only_real = ld.span_kl((t_start + pad * 30.0, t_end - pad * 30.0), (t_start, t_end), mask)
    assert only_real.abs().item() < 1e-6


def test_student_gets_gradients_teacher_none():
    mask = _mask()
    s = _logits(0).requires_grad_()
    t = _logits(1).requires_grad_()
    ld.span_kl((s, s), (t, t), mask).backward()
    assert s.grad is not None and t.grad is None
    assert s.grad[~mask.bool()].abs().max().item() == 0.0


def test_task_loss_is_mean_of_start_and_end_cross_entropy():
    mask = torch.ones(3, 10, dtype=torch.long)
    s, e = _logits(0), _logits(1)
    sp, ep = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])
    expected = (torch.nn.functional.cross_entropy(s, sp) + torch.nn.functional.cross_entropy(e, ep)) / 2
    assert ld.span_task_loss(s, e, mask, sp, ep).item() == pytest.approx(expected.item(), rel=1e-6)


# --- one step ----------------------------------------------------------------------------------
def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def test_one_step_changes_weights_with_finite_losses(squad_file):
    torch.manual_seed(0)
    model = tiny_bert().train()
    qa = LengthAdaptiveQA(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    configs = ld.sub_model_configs(qa.num_layers, 0.5, 2, seed=0, step=0)
    loss, losses = ld.sandwich_loss(qa, _batch(squad_file), configs)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    torch.optim.AdamW(model.parameters(), lr=1e-3).step()
    assert torch.isfinite(losses.task) and losses.task > 0
    assert len(losses.sub_kl) == 3 and all(x >= 0 and torch.isfinite(x) for x in losses.sub_kl)
    assert any(x > 0 for x in losses.sub_kl)  # dropping tokens changes predictions
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any("encoder.layer" in k for k in changed) and any("qa_outputs" in k for k in changed)


def _confident_bert():
    """A random tiny BERT whose span head is scaled up: its start/end distributions are far from uniform."""
    model = tiny_bert()
    with torch.no_grad():
        model.qa_outputs.weight.mul_(30.0)
    return model


def test_sub_model_distillation_adds_to_the_loss_and_its_gradient(squad_file):
    model = _confident_bert().train()
    qa, batch = LengthAdaptiveQA(model), _batch(squad_file)
    configs = ld.sub_model_configs(qa.num_layers, 0.5, 2, seed=0, step=0)
    torch.manual_seed(0)  # the full model runs first, so both passes give it the same dropout
    loss, losses = ld.sandwich_loss(qa, batch, configs)
    assert loss.item() == pytest.approx((losses.task + sum(losses.sub_kl)).item(), rel=1e-6)
    assert sum(losses.sub_kl).item() > 1e-2
    loss.backward()
    with_subs = _grads(model)
    torch.manual_seed(0)
    alone, task_only_losses = ld.sandwich_loss(qa, batch, [])
    assert alone.item() == pytest.approx(losses.task.item(), rel=1e-6)
    assert task_only_losses.task.item() == pytest.approx(losses.task.item(), rel=1e-6)
    alone.backward()
    task_only = _grads(model)
    differ = [n for n in task_only if not torch.allclose(with_subs[n], task_only[n], rtol=1e-3, atol=1e-6)]
    assert any("encoder.layer" in n for n in differ) and any("qa_outputs" in n for n in differ)


def test_teacher_adds_a_kl_term_and_stays_frozen(squad_file):
    model, teacher = tiny_bert(seed=0).train(), tiny_bert(seed=1)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    loss, losses = ld.sandwich_loss(LengthAdaptiveQA(model), _batch(squad_file), [], teacher)
    assert losses.teacher_kl is not None and losses.teacher_kl > 0
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, teacher_before[k]) for k, v in teacher.state_dict().items())


# --- whole runs --------------------------------------------------------------------------------


def _cli(model_dir: Path, squad_file: Path, out: Path, *extra: str) -> int:
    options = ["--model", str(model_dir), "--train", str(squad_file), "--out", str(out)]
    tiny = ["--max-steps", "2", "--precision", "fp32"]
    return cli_main(["lengthdrop", *options, *tiny, *extra])


def test_run_writes_a_loadable_folder_with_small_files_and_is_idempotent(model_dir, squad_file, tmp_path, capsys):
    out = tmp_path / "ld"
    assert _cli(model_dir, squad_file, out) == 0
    info = json.loads((out / "training.json").read_text())
    assert info["steps"] == 2 and info["recipe"]["bound"] == 0.2 and info["recipe"]["num_sub_models"] == 2
    assert info["precision"] == "fp32" and info["recipe"]["precision"] == "fp32" and info["method"] == "lengthdrop"
    assert not (out / tr.CHECKPOINTS).exists(), "checkpoints are removed once the model is saved"
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and max(p.stat().st_size for p in files) < 16 * 2**20
    assert all(t.dtype == torch.float32 for t in model_weights(out).values())
    assert (out / "tokenizer_config.json").is_file()
    mtime = (out / "training.json").stat().st_mtime_ns
    capsys.readouterr()
    assert _cli(model_dir, squad_file, out) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert (out / "training.json").stat().st_mtime_ns == mtime


def test_attention_dropout_is_the_start_models_unless_given(model_dir, squad_file, tmp_path):
    """From a pretrained encoder (config 0.1) ``--attention-dropout 0`` trains as ``dynlen finetune`` does."""
    own = json.loads((model_dir / "config.json").read_text())["attention_probs_dropout_prob"]
    assert own > 0
    assert _cli(model_dir, squad_file, tmp_path / "own") == 0
    assert json.loads((tmp_path / "own" / "config.json").read_text())["attention_probs_dropout_prob"] == own
    assert _cli(model_dir, squad_file, tmp_path / "off", "--attention-dropout", "0") == 0
    assert json.loads((tmp_path / "off" / "config.json").read_text())["attention_probs_dropout_prob"] == 0.0
    info = json.loads((tmp_path / "off" / "training.json").read_text())
    assert info["recipe"]["attention_dropout"] == 0.0


def test_the_trainer_loss_holds_the_sub_models_distillation(squad_file, tmp_path):
    base = tmp_path / "confident"
    _confident_bert().save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    out = ld.train_lengthdrop(_recipe(base, squad_file, max_steps=1), tmp_path / "ld")
    info = json.loads((out / "training.json").read_text())
    assert info["final_sub_model_kl"] > 1e-2
    # the loss the Trainer minimised is the task loss plus the smallest and the 2 random sub-models' KL
    expected = info["final_task_loss"] + 3 * info["final_sub_model_kl"]
    assert info["final_loss"] == pytest.approx(expected, abs=1e-3)


def test_killed_run_resumes_to_the_same_weights(model_dir, squad_file, tmp_path, monkeypatch):
    recipe = _recipe(model_dir, squad_file)  # 6 steps across 2 epochs
    reference = ld.train_lengthdrop(recipe, tmp_path / "straight", save_every=100)

    out = tmp_path / "killed"
    with monkeypatch.context() as patch:
        kill_after(ld, 4, patch)  # step 5 is lost and must be redone, in the middle of epoch 2
        with pytest.raises(KilledAt):
            ld.train_lengthdrop(recipe, out, save_every=2)
    assert tr.last_checkpoint(out / tr.CHECKPOINTS).endswith("checkpoint-4")
    assert not (out / "training.json").exists()

    torch.manual_seed(1234)  # a different process state must not matter
    random.seed(1234)
    ld.train_lengthdrop(recipe, out, save_every=2)
    info = json.loads((out / "training.json").read_text())
    assert info["steps"] == 6 and info["resumed_from"] == "checkpoint-4"
    assert not (out / tr.CHECKPOINTS).exists()
    expected, got = model_weights(reference), model_weights(out)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-7, msg=name)
    start = model_weights(model_dir)
    assert not torch.equal(start["qa_outputs.weight"], got["qa_outputs.weight"])


def test_checkpoint_of_other_options_is_refused(model_dir, squad_file, tmp_path, monkeypatch):
    out = tmp_path / "ld"
    with monkeypatch.context() as patch:
        kill_after(ld, 1, patch)
        with pytest.raises(KilledAt):
            ld.train_lengthdrop(_recipe(model_dir, squad_file), out, save_every=1)
    with pytest.raises(UserError, match="other options.*differs in: bound.*same options to resume"):
        ld.train_lengthdrop(_recipe(model_dir, squad_file, bound=0.3), out, save_every=1)


def test_a_launch_of_several_processes_is_refused(model_dir, squad_file, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="one process"):
        ld.train_lengthdrop(_recipe(model_dir, squad_file), tmp_path / "ld")
    assert not (tmp_path / "ld").exists()


@pytest.mark.skipif(not tr.hardware_has_bf16(torch.device("cpu")), reason="this CPU has no native bf16")
def test_bf16_training_keeps_float32_weights(model_dir, squad_file, tmp_path):
    out = ld.train_lengthdrop(_recipe(model_dir, squad_file, max_steps=2, precision="bf16"), tmp_path / "ld")
    info = json.loads((out / "training.json").read_text())
    assert info["precision"] == "bf16" and info["final_task_loss"] is not None
    assert all(t.dtype == torch.float32 for t in model_weights(out).values())


def test_stored_recipes_without_precision_still_match(model_dir, squad_file):
    recipe = _recipe(model_dir, squad_file, precision="auto")
    stored = {k: v for k, v in dataclasses.asdict(recipe).items() if k != "precision"}
    assert same_recipe(stored, recipe)
    assert not same_recipe(stored, _recipe(model_dir, squad_file, precision="fp32"))


def test_stored_retired_options_match_only_at_what_this_version_always_does(model_dir, squad_file):
    today = _recipe(model_dir, squad_file)
    retired = {"sub_model_loss": "kept", "probe_init": "saved", "layerdrop": 0.0, "target_config": None}
    stored = {**dataclasses.asdict(today), **retired}
    assert same_recipe(stored, today) and same_recipe(dataclasses.asdict(today), today)
    for changed in ({"sub_model_loss": "all"}, {"layerdrop": 0.5}, {"target_config": "ratios:1,0.5,0.25,0.1"}):
        assert not same_recipe({**stored, **changed}, today), changed
        assert list(changed)[0] in differences({**stored, **changed}, today)


def test_a_step_count_makes_the_epoch_share_irrelevant_to_the_recipe(model_dir, squad_file):
    """The trainer stops and schedules by max_steps when it is set, so epochs then names no difference."""
    stepped = _recipe(model_dir, squad_file, epochs=0.6, max_steps=600)
    stored = dataclasses.asdict(stepped)
    assert same_recipe(stored, _recipe(model_dir, squad_file, epochs=0.11, max_steps=600))
    assert not same_recipe(stored, _recipe(model_dir, squad_file, epochs=0.6, max_steps=500))
    assert not same_recipe(stored, _recipe(model_dir, squad_file, epochs=0.6)), "a step count was dropped"
    by_epochs = dataclasses.asdict(_recipe(model_dir, squad_file, epochs=0.6))
    assert not same_recipe(by_epochs, _recipe(model_dir, squad_file, epochs=0.11))
    assert differences(stored, _recipe(model_dir, squad_file, epochs=0.11, max_steps=500)) == (
        "differs in: max_steps (600 stored, 500 now)"
    )
    assert "epochs" in differences(stored, _recipe(model_dir, squad_file, epochs=0.11))


def test_the_command_line_trains_the_default_step_count_and_zero_means_epochs():
    import argparse

    from dynlen.cli.lengthdrop import add_arguments, recipe_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--significance", "attention"])
    assert recipe_from_args(args).max_steps == ld.DEFAULT_MAX_STEPS
    args = parser.parse_args(["--significance", "attention", "--max-steps", "0", "--epochs", "0.3"])
    assert recipe_from_args(args).max_steps is None and recipe_from_args(args).epochs == 0.3
    named = recipe_from_args(parser.parse_args(["--significance", "attention", "--epochs", "0.3"]))
    assert named.max_steps is None and named.epochs == 0.3, "epochs given alone are trained, not the default steps"
    both = recipe_from_args(parser.parse_args(["--significance", "attention", "--epochs", "0.3", "--max-steps", "7"]))
    assert both.max_steps == 7


# --- teacher -----------------------------------------------------------------------------------
def test_teacher_with_another_vocabulary_is_a_clear_user_error(model_dir, squad_file, tmp_path, capsys):
    from transformers import BertTokenizer

    teacher = tmp_path / "teacher"
    tiny_bert(seed=1).save_pretrained(teacher)
    vocab = dict(vocabulary())
    vocab["zebra"] = len(vocab)
    BertTokenizer(vocab=vocab).save_pretrained(teacher)
    with pytest.raises(UserError, match="different vocabulary.*1 only in the teacher"):
        ld.train_lengthdrop(_recipe(model_dir, squad_file, teacher=str(teacher), max_steps=1), tmp_path / "o")
    code = cli_main(
        [
            "lengthdrop",
            "--model",
            str(model_dir),
            "--train",
            str(squad_file),
            "--out",
            str(tmp_path / "o"),
            "--teacher",
            str(teacher),
            "--max-steps",
            "1",
        ]
    )
    assert code == 2 and "same tokenizer" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_run_with_a_teacher(model_dir, squad_file, tmp_path):
    teacher = tmp_path / "teacher"
    tiny_bert(seed=1).save_pretrained(teacher)
    tiny_tokenizer().save_pretrained(teacher)
    out = ld.train_lengthdrop(_recipe(model_dir, squad_file, teacher=str(teacher), max_steps=2), tmp_path / "o")
    assert json.loads((out / "training.json").read_text())["recipe"]["teacher"] == str(teacher)


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        cli_main(["lengthdrop", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--model",
        "--train",
        "--out",
        "--teacher",
        "--bound",
        "--num-sub-models",
        "--epochs",
        "--lr",
        "--max-steps",
        "--precision",
        "--significance",
        "--probe-supervision",
        "--attention-dropout",
    ):
        assert option in text


# --- sub-models under the look-ahead selection, probes trained in the same run ---------------
def _probe_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from dynlen.engine.probes import WEIGHTS_FILE

    return load_file(str(folder / WEIGHTS_FILE))


def test_lookahead_lengthdrop_trains_and_saves_probes_beside_a_stock_model(model_dir, squad_file, tmp_path, capsys):
    from dynlen.bench.model_io import load_qa_model
    from dynlen.engine.adaptive import LengthAdaptiveQA
    from dynlen.training.probes import ProbeRecipe, train_probes

    out = ld.train_lengthdrop(_recipe(model_dir, squad_file, significance="lookahead+question"), tmp_path / "ld")
    info = json.loads((out / "training.json").read_text())
    assert info["final_probe_kl"] is not None and info["final_probe_kl"] > 0
    assert not any(k.startswith(ld.PROBES_ATTR) for k in model_weights(out)), "the saved model is a stock HF model"
    entry = json.loads((out / "config.json").read_text())["dynlen_lookahead"]
    assert entry["trained_with"] == "lengthdrop" and entry["layers"] == [1, 2, 3]
    qa = LengthAdaptiveQA(load_qa_model(str(out)))
    assert qa.probes is not None and qa.probes.layer_ids == [1, 2, 3]
    fresh = ld.LookaheadProbes(qa.model.config.hidden_size, [1, 2, 3])
    trained = _probe_weights(out)
    assert any(not torch.equal(trained[k], v) for k, v in fresh.state_dict().items()), "the probes learned"
    capsys.readouterr()
    train_probes(str(out), ProbeRecipe(train=str(squad_file)))
    assert "trained with the model" in capsys.readouterr().out, "make train's probe step keeps them"


def test_probe_kl_is_part_of_the_loss_and_only_the_probes_get_its_gradient(squad_file):
    from dynlen.engine.adaptive import LengthAdaptiveQA

    model = tiny_bert(num_layers=NUM_LAYERS).train()
    probes, origin = ld.attach_probes(model, _recipe(Path("."), squad_file, significance="lookahead"))
    assert origin == "fresh", "a model without saved probes starts from new ones"
    qa = LengthAdaptiveQA(model, kernels=False, probes=probes, sep_token_id=tiny_tokenizer().sep_token_id)
    batch = _batch(squad_file)
    full = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
        output_hidden_states=True,
    )
    kl = ld.probe_loss(probes, full.hidden_states, (full.start_logits, full.end_logits), batch["attention_mask"])
    assert kl.item() > 0
    kl.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in probes.parameters())
    encoder = [p for n, p in model.named_parameters() if not n.startswith(ld.PROBES_ATTR)]
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in encoder), "states are detached for the probes"
    model.zero_grad()
    configs = [
        c.with_selection("lookahead", True) for c in ld.sub_model_configs(NUM_LAYERS, 0.3, 1, 0, 0, full_layers=1)
    ]
    loss, losses = ld.sandwich_loss(qa, batch, configs, probes=probes)
    assert losses.probe_kl is not None
    parts = losses.task + losses.probe_kl + sum(losses.sub_kl)
    torch.testing.assert_close(loss.detach(), parts)
    loss.backward()
    assert sum(p.grad.abs().sum() for p in encoder if p.grad is not None) > 0


def test_probe_supervision_passes_the_probes_kl_on_to_the_encoder_scaled(squad_file):
    model = tiny_bert(num_layers=NUM_LAYERS).eval()  # no dropout: the three backward passes see one forward
    probes, _ = ld.attach_probes(model, _recipe(Path("."), squad_file, significance="lookahead"))
    batch = _batch(squad_file)
    encoder = [p for n, p in model.named_parameters() if n.startswith("bert.encoder.layer.0.")]

    def encoder_gradient(weight: float) -> torch.Tensor:
        model.zero_grad()
        full = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            output_hidden_states=True,
        )
        target = (full.start_logits.detach(), full.end_logits.detach())  # only the probes' path reaches the encoder
        kl = ld.probe_loss(probes, full.hidden_states, target, batch["attention_mask"], supervision=weight)
        kl.backward()
        return torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel()) for p in encoder])

    assert encoder_gradient(0.0).abs().sum() == 0
    whole = encoder_gradient(1.0)
    assert whole.abs().sum() > 0
    torch.testing.assert_close(encoder_gradient(0.25), 0.25 * whole)
    with pytest.raises(UserError, match="--probe-supervision needs look-ahead probes"):
        _recipe(Path("."), squad_file, probe_supervision=0.5).check()


def test_lookahead_lengthdrop_resumes_exactly_probes_included(model_dir, squad_file, tmp_path, monkeypatch):
    recipe = _recipe(model_dir, squad_file, significance="lookahead+question")
    reference = ld.train_lengthdrop(recipe, tmp_path / "straight", save_every=100)
    out = tmp_path / "killed"
    with monkeypatch.context() as patch:
        kill_after(ld, 4, patch)
        with pytest.raises(KilledAt):
            ld.train_lengthdrop(recipe, out, save_every=2)
    ld.train_lengthdrop(recipe, out, save_every=2)
    for load in (model_weights, _probe_weights):
        expected, got = load(reference), load(out)
        assert expected.keys() == got.keys()
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-7, msg=name)


def _probed_copy(model_dir: Path, squad_file: Path, folder: Path, width: int) -> Path:
    from dynlen.training.probes import ProbeRecipe, train_probes

    shutil.copytree(model_dir, folder)
    recipe = ProbeRecipe(train=str(squad_file), features=12, width=width, epochs=2, batch_size=4)
    train_probes(str(folder), recipe)
    return folder


def test_lookahead_lengthdrop_starts_from_the_start_models_saved_probes(model_dir, squad_file, tmp_path):
    from dynlen.bench.model_io import load_qa_model
    from dynlen.engine.probes import load_probes

    probed = _probed_copy(model_dir, squad_file, tmp_path / "probed", width=8)
    saved = load_probes(load_qa_model(str(probed)))
    recipe = _recipe(probed, squad_file, significance="lookahead+question", probe_width=8)
    model = load_qa_model(str(probed))
    probes, origin = ld.attach_probes(model, recipe)
    assert origin == "saved"
    for name, value in saved.state_dict().items():
        torch.testing.assert_close(probes.state_dict()[name], value, rtol=0, atol=0, msg=name)
    other_width = ld.attach_probes(load_qa_model(str(probed)), _recipe(probed, squad_file, significance="lookahead"))
    assert other_width[1] == "fresh", "probes of another width cannot be continued"
    out = ld.train_lengthdrop(recipe, tmp_path / "ld")
    assert json.loads((out / "training.json").read_text())["probes_started_from"] == "saved"


def test_lengthdrop_without_probes_does_not_announce_the_start_models_probes(model_dir, squad_file, tmp_path):
    from dynlen.bench.model_io import load_qa_model
    from dynlen.engine.adaptive import LengthAdaptiveQA

    probed = _probed_copy(model_dir, squad_file, tmp_path / "probed", width=8)
    out = ld.train_lengthdrop(_recipe(probed, squad_file, significance="attention"), tmp_path / "ld")
    assert "dynlen_lookahead" not in json.loads((out / "config.json").read_text())
    assert LengthAdaptiveQA(load_qa_model(str(out))).probes is None, "the folder loads, with no stale probes"


def test_saved_probes_without_their_weights_file_are_named_before_training(model_dir, squad_file, tmp_path):
    from dynlen.engine.probes import WEIGHTS_FILE

    probed = _probed_copy(model_dir, squad_file, tmp_path / "probed", width=8)
    (probed / WEIGHTS_FILE).unlink()
    recipe = _recipe(probed, squad_file, significance="lookahead+question", probe_width=8)
    with pytest.raises(UserError, match="lookahead_probes.safetensors is missing"):
        ld.train_lengthdrop(recipe, tmp_path / "ld")
    assert not (tmp_path / "ld" / "training.json").exists()


def test_unknown_selection_is_refused_before_training(model_dir, squad_file):
    with pytest.raises(UserError, match="--significance 'nonsense': unknown policy"):
        _recipe(model_dir, squad_file, significance="nonsense").check()


def test_the_sub_models_weight_scales_their_part_of_the_loss_only(squad_file):
    model = _confident_bert().train()
    qa, batch = LengthAdaptiveQA(model), _batch(squad_file)
    configs = ld.sub_model_configs(qa.num_layers, 0.5, 2, seed=0, step=0)
    torch.manual_seed(0)
    loss, losses = ld.sandwich_loss(qa, batch, configs, sub_model_weight=0.25)
    assert sum(losses.sub_kl).item() > 1e-2
    assert loss.item() == pytest.approx((losses.task + 0.25 * sum(losses.sub_kl)).item(), rel=1e-5)
    with pytest.raises(UserError, match="--sub-model-weight"):
        ld.LengthDropRecipe(base="unused", train="unused.json", sub_model_weight=-1.0).check()


def test_the_sub_models_loss_sends_no_gradient_through_restored_states(squad_file):
    model = _confident_bert().eval()  # no dropout: the full and the sub-model passes are deterministic
    qa, batch = LengthAdaptiveQA(model, kernels=False), _batch(squad_file)
    heads: list[torch.Tensor] = []
    span_head = qa.adapter.span_head

    def recording(hidden):
        if hidden.requires_grad:
            hidden.retain_grad()
            heads.append(hidden)
        return span_head(hidden)

    qa.adapter.span_head = recording
    config = ld.smallest_config(qa.num_layers, 0.5)
    loss, losses = ld.sandwich_loss(qa, batch, [config])
    assert losses.sub_kl[0].item() > 0
    (loss - losses.task).backward()  # the sub-model's KL alone (the task part is detached)
    sub_head = heads[-1]
    with torch.no_grad():
        traced = qa(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], config=config, trace=True)
    from dynlen.engine.adaptive import reached_last_layer

    reached = reached_last_layer(traced, batch["attention_mask"])
    restored = batch["attention_mask"].bool() & ~reached
    assert restored.any() and reached.any()
    assert sub_head.grad[reached].abs().max().item() > 0
    assert sub_head.grad[restored].abs().max().item() == 0.0


def test_auto_significance_trains_under_the_start_models_probes_when_it_has_them(tmp_path, model_dir, capsys):
    from transformers import AutoModelForQuestionAnswering

    from dynlen.engine.probes import LookaheadProbes

    def recipe_for(folder, *extra):
        parser = lengthdrop_cli.argparse.ArgumentParser()
        lengthdrop_cli.add_arguments(parser)
        return lengthdrop_cli.recipe_from_args(parser.parse_args(["--model", str(folder), *extra]))

    assert recipe_for(model_dir).significance == "attention"
    assert "auto -> attention (the model has no look-ahead probes" in capsys.readouterr().out
    folder = tmp_path / "with-probes"
    shutil.copytree(model_dir, folder)
    model = AutoModelForQuestionAnswering.from_pretrained(folder)
    LookaheadProbes(model.config.hidden_size, [1, 2, 3], 8).save(folder)
    recipe = recipe_for(folder)
    assert recipe.significance == "lookahead+question" and recipe.trains_probes
    assert recipe_for(folder, "--significance", "attention").significance == "attention"  # an explicit choice stands


def test_probe_supervision_auto_is_the_measured_weight_under_a_lookahead_policy_only(model_dir):
    import argparse

    parser = argparse.ArgumentParser()
    lengthdrop_cli.add_arguments(parser)

    def weight(*extra: str) -> float:
        return lengthdrop_cli.recipe_from_args(parser.parse_args(["--model", str(model_dir), *extra])).probe_supervision

    assert weight("--significance", "lookahead+question") == ld.LOOKAHEAD_SUPERVISION == 0.5
    assert weight("--significance", "attention") == 0.0
    assert weight("--significance", "lookahead+question", "--probe-supervision", "0") == 0.0
    assert weight() == 0.0, "auto significance on a model without probes is attention"
    with pytest.raises(SystemExit):
        parser.parse_args(["--probe-supervision", "lots"])
