"""A damaged or incomplete model folder is one `error:` line from the commands, never a traceback or a score."""

from __future__ import annotations

import shutil

import pytest
from fixtures import tiny_bert_config, tiny_tokenizer

from dynlen.cli.main import main


def _no_tokenizer(folder):
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)


def _weights(folder, blob: bytes | None = None, cut: int | None = None):
    path = folder / "model.safetensors"
    path.write_bytes(blob if blob is not None else path.read_bytes()[:cut])


def _small_vocabulary(folder):
    from transformers import BertForQuestionAnswering

    config = tiny_bert_config()
    config.vocab_size = 20  # the tokenizer has more tokens than the model embeds
    BertForQuestionAnswering._from_config(config).save_pretrained(folder)


@pytest.mark.parametrize(
    "damage, says",
    [
        (_no_tokenizer, "has no tokenizer files"),
        (lambda f: _weights(f, b""), "weights are damaged"),
        (lambda f: _weights(f, cut=5000), "weights are damaged"),
        (lambda f: _weights(f, cut=-100), "weights are damaged"),
        (lambda f: _weights(f, b"x" * 300), "weights are damaged"),
        (lambda f: (f / "config.json").write_text('{"model_type": "bert",'), "config.json is not valid JSON"),
        (lambda f: (f / "config.json").write_bytes(b'\xff\xfe{"model_type": 1}'), "config.json is not valid JSON"),
        (lambda f: (f / "config.json").write_text("[1]"), "not a JSON object"),
        (_small_vocabulary, "the tokenizer has 76 tokens but the model embeds only 20"),
    ],
    ids=[
        "no-tokenizer",
        "empty-weights",
        "truncated-header",
        "truncated-tail",
        "not-safetensors",
        "config-cut",
        "config-not-utf8",
        "config-not-object",
        "vocabulary-mismatch",
    ],
)
def test_damaged_model_folder_is_one_line(tmp_path, model_dir, squad_file, capsys, damage, says):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    damage(folder)
    out = tmp_path / "out"
    argv = ["eval", "--model", str(folder), "--data", str(squad_file), "--no-latency", "--quiet", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and err.startswith("error: ") and len(err.splitlines()) == 1
    assert not out.exists(), "a refused command leaves no output folder behind"


def test_tokenizer_vocabulary_is_checked_against_the_model(model_dir):
    from dynlen.bench.model_io import check_vocabulary_fits, load_qa_model

    check_vocabulary_fits(tiny_tokenizer(), load_qa_model(str(model_dir)), str(model_dir))  # the fixture fits
