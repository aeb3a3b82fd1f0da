"""The drop as a torch.export program: look-ahead selection and fixed counts, batched and padded."""

from __future__ import annotations

import pytest
import torch
from fixtures import tiny_bert_config, tiny_tokenizer

from dynlen.bench.exported import Unexportable, export_program
from dynlen.bench.modeling_dynlen import DynlenBertForQuestionAnswering


def _remote(config: dict) -> DynlenBertForQuestionAnswering:
    torch.manual_seed(0)
    bert = tiny_bert_config()
    bert.dynlen_lookahead = {"hidden": 8, "layers": [1, 2, 3]}
    bert.sep_token_id = tiny_tokenizer().sep_token_id
    bert.dynlen_length_config = {"config": config}
    return DynlenBertForQuestionAnswering(bert).eval()


@pytest.mark.parametrize(
    "config",
    [
        {"kind": "ratios", "values": [1.0, 0.7, 0.5, 0.3], "significance": "lookahead", "keep_question": True},
        {"kind": "counts", "values": [384, 20, 10, 4]},
    ],
    ids=["lookahead", "counts"],
)
def test_the_program_gives_the_remote_models_logits_on_a_padded_batch(config, tmp_path):
    remote = _remote(config)
    export_program(remote, tmp_path / "p.pt2")
    program = torch.export.load(str(tmp_path / "p.pt2")).module()
    tokenizer = tiny_tokenizer()
    contexts = ["It was a black cat with green eyes and a long tail. " * 3, "The dog."]
    enc = tokenizer(["What colour was the cat?", "Who?"], contexts, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = remote(**enc)
        ours = program(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    torch.testing.assert_close(ours[0], theirs.start_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours[1], theirs.end_logits, atol=1e-5, rtol=1e-5)


def test_a_lookahead_choice_without_probes_is_refused():
    remote = _remote({"kind": "ratios", "values": [1.0, 0.5, 0.5, 0.5], "significance": "lookahead"})
    remote.probes = None
    with pytest.raises(Unexportable, match="has none"):
        export_program(remote, "unused.pt2")
