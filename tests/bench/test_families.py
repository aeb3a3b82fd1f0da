"""Every supported family: keep-all equals the stock model, dropping works per example, and the
family's FLOPs formula equals what FlopCounterMode measures. Tiny random models, built here."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fixtures import tiny_bert
from torch.utils.flop_counter import FlopCounterMode

from dynlen.engine.adaptive import LengthAdaptiveQA
from dynlen.engine.config import LengthConfig
from dynlen.engine.costs import example_flops
from dynlen.engine.significance import POLICIES, SelectionInputs, SignificancePolicy
from dynlen.errors import UserError

VOCAB = 60
DROPPING = ["ratios:1,0.6,0.4,0.2", "counts:9,5,5,1"]


@dataclass(frozen=True)
class Family:
    build: Callable[[str], torch.nn.Module]  # attention implementation -> model in eval mode
    pad_id: int = 0
    token_types: bool = True  # whether the model has a second segment embedding


def _seeded(cls, config, attn: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return cls._from_config(config, attn_implementation=attn).eval()


def _roberta(attn: str):
    from transformers import RobertaConfig, RobertaForQuestionAnswering

    config = RobertaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=66,
        pad_token_id=1,
        type_vocab_size=1,
    )
    return _seeded(RobertaForQuestionAnswering, config, attn)


def _bort(attn: str):
    """BORT's shape in miniature: BERT layout, RoBERTa's pad id, one token type, LayerNorm eps 1e-5."""
    from transformers import BertConfig, BertForQuestionAnswering

    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=48,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=24,
        pad_token_id=1,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
    )
    return _seeded(BertForQuestionAnswering, config, attn)


def _distilbert(attn: str):
    from transformers import DistilBertConfig, DistilBertForQuestionAnswering

    config = DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=4, n_heads=4, hidden_dim=56)
    return _seeded(DistilBertForQuestionAnswering, config, attn)


def _mobilebert_config(**overrides):
    """Small widths; a wider init than the default 0.02, whose products through NoNorm blocks leave
    logits near 0.01, where a 1e-5 tolerance would hide wiring mistakes."""
    from transformers import MobileBertConfig

    base = dict(
        vocab_size=VOCAB,
        hidden_size=48,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=40,
        embedding_size=16,
        intra_bottleneck_size=24,
        num_feedforward_networks=3,
        max_position_embeddings=64,
        initializer_range=0.1,
    )
    return MobileBertConfig(**{**base, **overrides})


def _mobilebert(attn: str, **overrides):
    from transformers import MobileBertForQuestionAnswering

    return _seeded(MobileBertForQuestionAnswering, _mobilebert_config(**overrides), attn)


FAMILIES: dict[str, Family] = {
    "bert": Family(tiny_bert),
    "roberta": Family(_roberta, pad_id=1, token_types=False),
    "bort": Family(_bort, pad_id=1, token_types=False),
    "distilbert": Family(_distilbert, token_types=False),
    "mobilebert": Family(_mobilebert),
    # MobileBERT's other wirings: q/k/v all from the input bottleneck; no bottleneck, no embedding projection
    "mobilebert-bottleneck-attention": Family(lambda attn: _mobilebert(attn, use_bottleneck_attention=True)),
    "mobilebert-plain": Family(
        lambda attn: _mobilebert(
            attn, use_bottleneck=False, trigram_input=False, embedding_size=48, num_feedforward_networks=1
        )
    ),
}


def _batch(family: Family, lengths=(20, 13, 6), seed: int = 1):
    """A right-padded batch; ids avoid the special ids so no real token looks like padding."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(5, VOCAB, (len(lengths), width), generator=g)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, n:] = family.pad_id
    types = torch.zeros_like(ids)
    if family.token_types:
        types[:, width // 2 :] = 1
    return ids, mask, types * mask


def _stock_logits(model, ids, mask, types):
    kwargs = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        kwargs["token_type_ids"] = types
    out = model(**kwargs)
    return out.start_logits, out.end_logits


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("stock_attn", ["eager", "sdpa"])
def test_keep_all_equals_stock_logits_with_padding(name, stock_attn):
    family = FAMILIES[name]
    model = family.build(stock_attn)
    ids, mask, types = _batch(family)
    real = mask.bool()
    with torch.no_grad():
        ref_start, ref_end = _stock_logits(model, ids, mask, types)
        for our_attn in ("eager", "sdpa"):
            out = LengthAdaptiveQA(model)(ids, mask, types, attention=our_attn)
            assert (ref_start - out.start_logits)[real].abs().max() <= 1e-5, our_attn
            assert (ref_end - out.end_logits)[real].abs().max() <= 1e-5, our_attn


def test_roberta_positions_follow_padding_idx():
    """RoBERTa numbers positions from padding_idx + 1 over non-pad ids, so a padded row must
    equal the same row unpadded; keep-all already equals stock, this pins the position scheme."""
    family = FAMILIES["roberta"]
    model = family.build("eager")
    ids, mask, types = _batch(family, lengths=(12, 7))
    ad = LengthAdaptiveQA(model)
    with torch.no_grad():
        together = ad(ids, mask, types)
        alone = ad(ids[1:, :7], mask[1:, :7], types[1:, :7])
    assert torch.allclose(together.start_logits[1, :7], alone.start_logits[0], atol=1e-5)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_dropping_gives_full_length_logits_and_really_drops(name):
    family = FAMILIES[name]
    model = family.build("sdpa")
    ids, mask, types = _batch(family)
    config = LengthConfig.parse("ratios:1,0.5,0.3,0.2")
    ad = LengthAdaptiveQA(model)
    with torch.no_grad():
        full = ad(ids, mask, types)
        out = ad(ids, mask, types, config=config)
    assert out.start_logits.shape == ids.shape and out.end_logits.shape == ids.shape
    assert out.kept.T.tolist() == [config.keep_counts(n) for n in (20, 13, 6)]
    real = mask.bool()
    assert torch.isfinite(out.start_logits[real]).all() and torch.isfinite(out.end_logits[real]).all()
    assert (full.start_logits - out.start_logits)[real].abs().max() > 1e-4


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_answer_does_not_depend_on_the_batch(name):
    family = FAMILIES[name]
    model = family.build("sdpa")
    lengths = (20, 13, 6)
    ids, mask, types = _batch(family, lengths=lengths)
    config = LengthConfig.parse("ratios:0.9,0.6,0.4,0.3")
    ad = LengthAdaptiveQA(model)
    with torch.no_grad():
        together = ad(ids, mask, types, config=config)
        for i, n in enumerate(lengths):
            alone = ad(ids[i : i + 1, :n], mask[i : i + 1, :n], types[i : i + 1, :n], config=config)
            assert torch.allclose(alone.start_logits[0], together.start_logits[i, :n], atol=1e-5)
            assert torch.allclose(alone.end_logits[0], together.end_logits[i, :n], atol=1e-5)
            assert alone.kept[:, 0].tolist() == together.kept[:, i].tolist()


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_native_kernels_pick_the_same_tokens_as_torch_ops(name):
    """Every family's q/k/v layout goes through the drop-attention kernel where it builds; torch's
    ops are the reference (the kernel tests skip on machines that cannot build it, this one then
    compares torch with torch)."""
    family = FAMILIES[name]
    model = family.build("sdpa")
    ids, mask, types = _batch(family)
    config = LengthConfig.parse("ratios:0.9,0.6,0.4,0.3")
    with torch.no_grad():
        fast = LengthAdaptiveQA(model)(ids, mask, types, config=config)
        plain = LengthAdaptiveQA(model, kernels=False)(ids, mask, types, config=config)
    real = mask.bool()
    assert torch.equal(fast.kept, plain.kept)
    assert (fast.start_logits - plain.start_logits)[real].abs().max() <= 1e-4
    assert (fast.end_logits - plain.end_logits)[real].abs().max() <= 1e-4


@pytest.mark.parametrize("spec", ["keep-all"] + DROPPING)
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_formula_equals_flop_counter_under_eager(name, spec):
    model = FAMILIES[name].build("eager")
    ad = LengthAdaptiveQA(model, kernels=False)  # FlopCounterMode cannot see native calls
    config = LengthConfig.keep_all(4) if spec == "keep-all" else LengthConfig.parse(spec)
    length = 23
    ids = torch.randint(5, VOCAB, (1, length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        ad(ids, torch.ones_like(ids), None, config=config, attention="eager")
    assert counter.get_total_flops() == example_flops(ad.cost_shape(), config, length)


class _LeadingTokens(SignificancePolicy):
    """A policy that reads neither attention nor probes: the earliest tokens stay."""

    name = "test-leading"

    def scores(self, inputs: SelectionInputs) -> torch.Tensor:
        return -inputs.positions.to(inputs.hidden.dtype)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_policy_reading_no_attention_projects_queries_for_the_kept_tokens_only(name, monkeypatch):
    """Where the family allows it (``late_query``), the formula and the counter both drop the dropped tokens' queries."""
    monkeypatch.setitem(POLICIES, _LeadingTokens.name, _LeadingTokens())
    model = FAMILIES[name].build("eager")
    ad = LengthAdaptiveQA(model, kernels=False)
    config = LengthConfig.parse(f"ratios:1,0.6,0.4,0.2@{_LeadingTokens.name}")
    ids = torch.randint(5, VOCAB, (1, 23), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    shape, allows = ad.cost_shape(), ad.adapter.late_query
    assert hasattr(shape, "query_flops") == allows
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        late = ad(ids, mask, None, config=config, attention="eager")
    assert counter.get_total_flops() == example_flops(shape, config, 23)
    monkeypatch.setattr(ad.adapter, "late_query", False)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        early = ad(ids, mask, None, config=config, attention="eager")
    assert torch.allclose(late.start_logits, early.start_logits, atol=1e-5)
    assert torch.allclose(late.end_logits, early.end_logits, atol=1e-5)
    kept = [23, *late.kept[:, 0].tolist()]
    saved = sum(shape.query_flops(n_in - n_out) for n_in, n_out in zip(kept, kept[1:])) if allows else 0
    assert counter.get_total_flops() - example_flops(shape, config, 23) == saved


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_stock_model_flops_match_keep_all_formula(name):
    """The formula describes the stock model too, so speedups against keep-all are honest."""
    family = FAMILIES[name]
    model = family.build("eager")
    ids = torch.randint(5, VOCAB, (1, 31), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        _stock_logits(model, ids, torch.ones_like(ids), torch.zeros_like(ids))
    shape = LengthAdaptiveQA(model).cost_shape()
    assert counter.get_total_flops() == example_flops(shape, LengthConfig.keep_all(4), 31)


def test_mobilebert_counts_its_embedding_projection_and_bottlenecks():
    shape = LengthAdaptiveQA(FAMILIES["mobilebert"].build("eager")).cost_shape()
    assert shape.embed_flops(10) == 2 * 10 * (3 * 16) * 48
    # a kept token pays the input bottleneck only once it is kept: dropping saves it
    assert shape.layer_flops(10, 4) < shape.layer_flops(10, 10)


def test_unsupported_architecture_lists_every_supported_family():
    from transformers import GPT2Config, GPT2ForQuestionAnswering

    model = GPT2ForQuestionAnswering(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(UserError, match="supported: bert, distilbert, mobilebert, roberta"):
        LengthAdaptiveQA(model)


def test_model_without_a_span_head_is_unsupported():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    model = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=VOCAB, dim=16, n_layers=1, n_heads=2))
    with pytest.raises(UserError, match="unsupported architecture DistilBertForSequenceClassification"):
        LengthAdaptiveQA(model)


# --- BORT: BERT layout + RoBERTa byte-level BPE tokenizer ------------------------------------

MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "c"), ("a", "t"), ("Ġc", "at"), ("Ġ", "m"), ("Ġm", "at")]


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes (GPT-2's scheme)."""
    printable = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    shifted = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]


def _write_bort_folder(folder: Path) -> Path:
    """What a BORT checkpoint folder holds: BERT config, vocab.json + merges.txt, no tokenizer class."""
    from transformers import BertConfig, BertForQuestionAnswering

    tokens = ["<s>", "<pad>", "</s>", "<unk>"] + _byte_alphabet() + [a + b for a, b in MERGES] + ["<mask>"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512, "add_prefix_space": False}))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=24,
        pad_token_id=1,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
    )
    torch.manual_seed(0)
    BertForQuestionAnswering(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bort_folder(tmp_path_factory) -> Path:
    return _write_bort_folder(tmp_path_factory.mktemp("bort") / "tiny-bort")


def test_bort_folder_gets_the_byte_level_bpe_tokenizer(bort_folder, tmp_path):
    from transformers import RobertaTokenizer

    from dynlen.engine.families.bort import byte_level_bpe_tokenizer, needs_byte_level_bpe

    assert needs_byte_level_bpe(bort_folder)
    tok = byte_level_bpe_tokenizer(bort_folder)
    assert isinstance(tok, RobertaTokenizer) and tok.is_fast
    assert tok.tokenize(" the cat") == ["Ġthe", "Ġcat"]
    assert tok.pad_token_id == 1 and tok.cls_token_id == 0
    # a folder that names its tokenizer class, or an ordinary BERT folder, is left to AutoTokenizer
    named = tmp_path / "named"
    named.mkdir()
    for name in ("config.json", "vocab.json", "merges.txt"):
        (named / name).write_bytes((bort_folder / name).read_bytes())
    (named / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RobertaTokenizer"}))
    assert byte_level_bpe_tokenizer(named) is None
    assert not needs_byte_level_bpe(tmp_path / "missing")


def test_bort_features_and_adaptive_forward(bort_folder, squad_file):
    from transformers import AutoModelForQuestionAnswering

    from dynlen.bench.features import build_features, collate
    from dynlen.bench.squad import load_squad_file
    from dynlen.engine.families.bort import byte_level_bpe_tokenizer

    tok = byte_level_bpe_tokenizer(bort_folder)
    data = load_squad_file(squad_file)
    feats = build_features(data.examples, tok, max_length=64, stride=16, with_labels=True)
    assert len(feats) > len(data.examples)  # long contexts overflow into several windows
    assert all(set(tt) == {0} for tt in feats.token_type_ids)  # no token types from RoBERTa: zeros
    assert all(ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id for ids in feats.input_ids)
    found = 0
    for i, (start, end) in enumerate(zip(feats.start_positions, feats.end_positions)):
        if start == 0:
            continue
        example = data.examples[feats.example_index[i]]
        offsets = feats.offsets[i]
        assert example.context[offsets[start][0] : offsets[end][1]] == example.answers[0]
        found += 1
    assert found >= len(data.examples) // 2

    model = AutoModelForQuestionAnswering.from_pretrained(bort_folder, attn_implementation="eager").eval()
    assert type(model).__name__ == "BertForQuestionAnswering"
    batch = collate(feats, list(range(6)), pad_id=tok.pad_token_id)
    ad = LengthAdaptiveQA(model)
    with torch.no_grad():
        ref = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
        out = ad(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        dropped = ad(
            batch["input_ids"],
            batch["attention_mask"],
            batch["token_type_ids"],
            config=LengthConfig.parse("ratios:1,0.5,0.4,0.3"),
        )
    real = batch["attention_mask"].bool()
    assert (ref.start_logits - out.start_logits)[real].abs().max() <= 1e-5
    assert dropped.start_logits.shape == batch["input_ids"].shape


@pytest.mark.parametrize("name", ["distilbert", "mobilebert"])
def test_runner_reports_the_family_flops(name, squad_file):
    """The runner takes its FLOPs formula from the adapter, so non-BERT widths are counted right."""
    from fixtures import tiny_tokenizer, vocabulary
    from transformers import DistilBertConfig, DistilBertForQuestionAnswering

    from dynlen.bench.runner import QARunner
    from dynlen.bench.squad import load_squad_file
    from dynlen.engine.costs import check_flops_consistent

    if name == "distilbert":
        config = DistilBertConfig(vocab_size=len(vocabulary()), dim=32, n_layers=4, n_heads=4, hidden_dim=56)
        model = _seeded(DistilBertForQuestionAnswering, config, "sdpa")
    else:
        model = _mobilebert("sdpa", vocab_size=len(vocabulary()))
    runner = QARunner(
        name, load_squad_file(squad_file), batch_size=4, model=model, tokenizer=tiny_tokenizer(), progress=False
    )
    config = LengthConfig.parse("ratios:1,0.6,0.4,0.2")
    result = runner.evaluate(config)
    check_flops_consistent(runner, config, result.tokens_kept_per_layer)
    report = runner.flops(config)
    assert report.flops == sum(example_flops(runner.adaptive.cost_shape(), config, n) for n in runner.features.lengths)
    assert report.speedup_vs_keep_all > 1.0
