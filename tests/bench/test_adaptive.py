import pytest
import torch
from fixtures import tiny_bert

from dynlen.engine.adaptive import LengthAdaptiveQA
from dynlen.engine.config import LengthConfig
from dynlen.errors import UserError


def _batch(seed: int = 1, lengths=(20, 13, 6), vocab: int = 60):
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(5, vocab, (len(lengths), width), generator=g)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, n:] = 0
    types = torch.zeros_like(ids)
    types[:, width // 2 :] = 1
    return ids, mask, types * mask


@pytest.mark.parametrize("stock_attn", ["eager", "sdpa"])
@pytest.mark.parametrize("our_attn", ["eager", "sdpa"])
def test_keep_all_equals_stock_logits(stock_attn, our_attn):
    model = tiny_bert(stock_attn)
    ids, mask, types = _batch()
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
        out = LengthAdaptiveQA(model)(ids, mask, types, attention=our_attn)
    real = mask.bool()
    assert (ref.start_logits - out.start_logits)[real].abs().max() <= 1e-5
    assert (ref.end_logits - out.end_logits)[real].abs().max() <= 1e-5


def test_dropping_gives_full_length_logits_and_really_drops():
    model = tiny_bert()
    ids, mask, types = _batch()
    config = LengthConfig.parse("ratios:1,0.5,0.3,0.2")
    with torch.no_grad():
        full = LengthAdaptiveQA(model)(ids, mask, types)
        out = LengthAdaptiveQA(model)(ids, mask, types, config=config)
    assert out.start_logits.shape == ids.shape and out.end_logits.shape == ids.shape
    assert out.kept.T.tolist() == [config.keep_counts(n) for n in (20, 13, 6)]
    real = mask.bool()
    assert torch.isfinite(out.start_logits[real]).all()
    # dropping must change something (layers 2-4 ran on fewer tokens)
    assert (full.start_logits - out.start_logits)[real].abs().max() > 1e-4


def test_dropped_tokens_get_their_last_hidden_state_back():
    """A token dropped after layer 1 gets the span head applied to its layer-1 input (embeddings)."""
    model = tiny_bert(num_layers=2)
    ids, mask, types = _batch(lengths=(12,))
    ad = LengthAdaptiveQA(model)
    config = LengthConfig.parse("counts:1,1")  # only [CLS] survives layer 1
    with torch.no_grad():
        out = ad(ids, mask, types, config=config)
        emb = ad.adapter.embed(ids, types)
        start, _ = ad.adapter.span_head(emb)
    assert torch.allclose(out.start_logits[0, 1:], start[0, 1:], atol=1e-6)


def test_cls_is_always_kept_and_order_preserved():
    from dynlen.engine.adaptive import _select_kept

    probs = torch.zeros(1, 1, 5, 5)
    probs[..., 3] = 0.5
    probs[..., 1] = 0.3
    probs[..., 0] = 0.0  # [CLS] receives nothing, yet stays
    valid = torch.tensor([[True, True, True, True, False]])
    slots, real = _select_kept(probs, valid, torch.tensor([3]))
    assert slots.tolist() == [[0, 1, 3]]
    assert real is None  # every kept slot is real


def test_answer_does_not_depend_on_the_batch():
    model = tiny_bert()
    ad = LengthAdaptiveQA(model)
    lengths = (20, 13, 6)
    ids, mask, types = _batch(lengths=lengths)
    config = LengthConfig.parse("ratios:0.9,0.6,0.4,0.3")
    with torch.no_grad():
        together = ad(ids, mask, types, config=config)
        for i, n in enumerate(lengths):
            alone = ad(ids[i : i + 1, :n], mask[i : i + 1, :n], types[i : i + 1, :n], config=config)
            assert torch.allclose(alone.start_logits[0], together.start_logits[i, :n], atol=1e-5)
            assert torch.allclose(alone.end_logits[0], together.end_logits[i, :n], atol=1e-5)
            assert alone.kept[:, 0].tolist() == together.kept[:, i].tolist()


def test_gradients_flow_through_dropping():
    model = tiny_bert().train()
    ids, mask, types = _batch()
    out = LengthAdaptiveQA(model)(ids, mask, types, config=LengthConfig.parse("ratios:1,0.5,0.5,0.25"))
    (out.start_logits.sum() + out.end_logits.sum()).backward()
    assert model.bert.encoder.layer[3].output.dense.weight.grad is not None


def test_unsupported_architecture_lists_supported_ones():
    from transformers import GPT2Config, GPT2ForQuestionAnswering

    model = GPT2ForQuestionAnswering(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(UserError, match="supported: bert"):
        LengthAdaptiveQA(model)


@pytest.mark.parametrize("spec", [None, "ratios:1,0.5,0.3,0.2", "ratios:1,1,1,0.4"])
def test_reached_last_layer_marks_exactly_the_tokens_the_last_layer_computed(spec):
    from dynlen.engine.adaptive import reached_last_layer

    model = tiny_bert().eval()
    ids, mask, types = _batch()
    qa = LengthAdaptiveQA(model, kernels=False)
    with torch.no_grad():
        config = LengthConfig.keep_all(qa.num_layers) if spec is None else LengthConfig.parse(spec)
        out = qa(ids, mask, types, config=config, trace=True)
    reached = reached_last_layer(out, mask)
    assert reached.sum(dim=1).tolist() == out.kept[-1].tolist(), "one mark per token the last layer kept"
    assert not (reached & ~mask.bool()).any(), "padding never counts as reached"
    if out.trace:
        _, positions, slot_real = out.trace[-1]
        for row in range(ids.shape[0]):
            real_slots = positions[row] if slot_real is None else positions[row][slot_real[row]]
            assert set(real_slots.tolist()) == set(reached[row].nonzero().flatten().tolist())
    with pytest.raises(ValueError, match="trace=True"):
        reached_last_layer(qa(ids, mask, types, config=config), mask)
