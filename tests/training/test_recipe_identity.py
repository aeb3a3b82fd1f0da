"""Every option that changes the trained weights is part of the recipe a finished model is recognised by.

A new recipe field or command-line option fails these tests until someone decides which side it is on:
an option left out of the recipe lets a model of other weights pass for "already trained".
"""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from dynlen.cli import finetune as finetune_cli
from dynlen.cli import lengthdrop as lengthdrop_cli
from dynlen.training.finetune import Recipe
from dynlen.training.lengthdrop import LengthDropRecipe

COMMON = {"base", "train", "epochs", "learning_rate", "batch_size", "max_length", "stride", "warmup", "weight_decay"}
COMMON |= {"seed", "precision"}
FINETUNE_FIELDS = COMMON | {"attention_dropout", "max_steps", "articles"}
LENGTHDROP_FIELDS = COMMON | {
    "teacher", "bound", "num_sub_models", "sub_model_weight", "max_steps", "significance", "probe_width",
    "probe_learning_rate", "probe_first_layer", "probe_supervision", "attention_dropout",
}  # fmt: skip

# Options that do not change the weights: where they go (checkpoint spacing and threads are settings
# of the Python API, not options).
NOT_WEIGHTS = {"--out"}
# A non-default value for every option that does change them.
FINETUNE_OPTIONS = {
    "--model": "other-encoder", "--train": "other.json", "--epochs": "2", "--lr": "0.001",
    "--attention-dropout": "0.1", "--precision": "fp32", "--max-steps": "12", "--articles": "2",
}  # fmt: skip
LENGTHDROP_OPTIONS = {
    "--model": "other-model", "--train": "other.json", "--teacher": "big-model", "--bound": "0.3",
    "--num-sub-models": "3", "--sub-model-weight": "0.5", "--significance": "lookahead",
    "--probe-supervision": "0.5", "--epochs": "2", "--lr": "0.001", "--attention-dropout": "0.1",
    "--max-steps": "12", "--precision": "fp32",
}  # fmt: skip


def test_recipe_fields_are_the_listed_ones():
    assert {f.name for f in fields(Recipe)} == FINETUNE_FIELDS
    assert {f.name for f in fields(LengthDropRecipe)} == LENGTHDROP_FIELDS


def _options(module) -> set[str]:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return {
        action.option_strings[-1]
        for action in parser._actions
        if action.option_strings and action.help != argparse.SUPPRESS and action.dest != "help"
    }


def _recipe(module, monkeypatch, argv: list[str]):
    """The recipe ``module``'s command builds from ``argv`` (the training itself replaced by a capture)."""
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    captured = []
    name = "train" if module is finetune_cli else "train_lengthdrop"
    monkeypatch.setattr(module, name, lambda recipe, *a, **k: captured.append(recipe))
    module.run(parser.parse_args(argv))
    return captured[0]


@pytest.mark.parametrize(
    "module, options, base",
    [
        (finetune_cli, FINETUNE_OPTIONS, ["--model", "encoder"]),
        (lengthdrop_cli, LENGTHDROP_OPTIONS, ["--model", "start-model", "--significance", "attention"]),
    ],
    ids=["finetune", "lengthdrop"],
)
def test_every_weight_changing_option_changes_the_recipe(module, options, base, monkeypatch):
    assert _options(module) == set(options) | NOT_WEIGHTS, "decide whether the new option changes the weights"
    default = _recipe(module, monkeypatch, base)
    for option, value in options.items():
        argv = [*base, option, value] if option not in base else [option, value, *base[2:]]
        assert _recipe(module, monkeypatch, argv) != default, f"{option} {value} left the recipe unchanged"
    for option in NOT_WEIGHTS:
        assert _recipe(module, monkeypatch, [*base, option, "1"]) == default, option


def test_finetune_max_steps_is_part_of_the_recipe(monkeypatch):
    recipe = _recipe(finetune_cli, monkeypatch, ["--model", "encoder", "--max-steps", "12"])
    assert recipe.max_steps == 12 and recipe != Recipe(base="encoder", train=recipe.train)


def test_finetune_recipe_check_refuses_a_value_that_trains_nothing():
    from dynlen.errors import UserError

    for field, value, says in [("max_steps", -3, "--max-steps must be at least 1"), ("learning_rate", -1.0, "--lr"),
                               ("batch_size", 0, "--batch-size must be at least 1")]:  # fmt: skip
        with pytest.raises(UserError, match=says):
            Recipe(base="encoder", train="t.json", **{field: value}).check()
