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


def _remote(folder):
    from transformers import AutoModelForQuestionAnswering

    return AutoModelForQuestionAnswering.from_pretrained(folder, trust_remote_code=True).eval()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_exported_folder_runs_the_drops_without_dynlen(chosen, precision, tmp_path):
    """The folder's own modeling file gives the engine's logits for the chosen configuration."""
    import torch

    from dynlen.engine.adaptive import LengthAdaptiveQA

    _, best, record = chosen
    config = best.length_config.with_precision(precision)
    folder = export_model({**record, "config": config.to_dict()}, tmp_path / "exported")
    assert (folder / "modeling_dynlen.py").is_file()
    remote = _remote(folder)
    assert type(remote).__name__ == "DynlenBertForQuestionAnswering"
    qa = Answerer(folder)
    engine = LengthAdaptiveQA(qa.model, kernels=False, sep_token_id=qa.tokenizer.sep_token_id)
    enc = qa.tokenizer(
        ["What colour was the cat?", "Who?"],
        ["It was a black cat with green eyes and a long tail.", "The dog."],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        ours = engine(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], config)
        theirs = remote(**enc)
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(theirs.start_logits[real], ours.start_logits[real], atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(theirs.end_logits[real], ours.end_logits[real], atol=2e-4, rtol=1e-4)


def test_exported_folder_loads_without_dynlen_on_the_path(chosen, tmp_path):
    """A fresh interpreter that cannot import dynlen still loads and runs the exported folder."""
    import subprocess
    import sys

    _, _, record = chosen
    folder = export_model(record, tmp_path / "exported")
    script = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'dynlen': raise ImportError('dynlen is not installed here')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from transformers import AutoModelForQuestionAnswering, AutoTokenizer\n"
        f"folder = {str(folder)!r}\n"
        "model = AutoModelForQuestionAnswering.from_pretrained(folder, trust_remote_code=True).eval()\n"
        "tok = AutoTokenizer.from_pretrained(folder)\n"
        "out = model(**tok('What colour was the cat?', 'It was a black cat.', return_tensors='pt'))\n"
        "print(type(model).__name__, tuple(out.start_logits.shape))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("DynlenBertForQuestionAnswering")


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


def _program_inputs(tokenizer, question: str, context: str) -> tuple:
    enc = tokenizer(question, context, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_exported_program_gives_the_remote_models_logits_at_any_length(model_dir, precision, tmp_path):
    """dynlen_exported.pt2 loads with torch alone and gives the remote-code model's logits, drops included."""
    import torch
    from transformers import AutoModelForQuestionAnswering

    config = LengthConfig.from_dict({"kind": "ratios", "values": [1.0, 0.7, 0.5, 0.3], "keep_question": True})
    record = {"model": str(model_dir), "config": config.with_precision(precision).to_dict(), "label": "drop"}
    folder = export_model({**record, "run": "r", "budget": None, "heldout": None}, tmp_path / "exported")
    program = torch.export.load(str(folder / "dynlen_exported.pt2")).module()
    remote, stock = _remote(folder), AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    qa = Answerer(folder)
    short = _program_inputs(qa.tokenizer, "Who?", "The dog.")
    long = _program_inputs(qa.tokenizer, "What colour were the eyes?", "It was a black cat with green eyes. " * 6)
    batch = qa.tokenizer(["Who?", "Why?"], ["The dog.", "It was a black cat with green eyes."], padding=True)
    padded = tuple(torch.tensor(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))
    tolerance = {"atol": 1e-5, "rtol": 1e-5} if precision == "fp32" else {"atol": 1e-2, "rtol": 1e-2}
    assert short[0].shape[1] != long[0].shape[1]
    with torch.no_grad():
        for ids, mask, types in (short, long, padded):
            theirs = remote(input_ids=ids, attention_mask=mask, token_type_ids=types)
            ours = program(ids, mask, types)
            torch.testing.assert_close(ours[0], theirs.start_logits, **tolerance)
            torch.testing.assert_close(ours[1], theirs.end_logits, **tolerance)
        kept = stock(input_ids=long[0], attention_mask=long[1], token_type_ids=long[2]).start_logits
        assert (ours_long := program(*long)[0]).shape == kept.shape and not torch.allclose(ours_long, kept, atol=1e-3)
    assert "torch.export.load" in (folder / "README.md").read_text()


def test_an_int8_choice_says_why_it_has_no_program(model_dir, tmp_path):
    config = LengthConfig.from_dict({"kind": "ratios", "values": [1.0, 0.7, 0.5, 0.3]}).with_precision("int8")
    record = {"model": str(model_dir), "config": config.to_dict(), "label": "drop", "run": "r"}
    folder = export_model({**record, "budget": None, "heldout": None}, tmp_path / "exported")
    assert not (folder / "dynlen_exported.pt2").exists()
    assert "No `dynlen_exported.pt2`: precision int8" in (folder / "README.md").read_text()
