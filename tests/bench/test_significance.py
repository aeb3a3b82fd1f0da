"""Significance policies: the registry, question keeping, look-ahead probes and their FLOPs."""

from __future__ import annotations

import json

import pytest
import torch
from fixtures import save_tiny_model, tiny_bert
from torch.utils.flop_counter import FlopCounterMode

from dynlen.engine.adaptive import LengthAdaptiveQA
from dynlen.engine.config import LengthConfig
from dynlen.engine.costs import example_flops
from dynlen.engine.probes import WEIGHTS_FILE, LookaheadProbes, load_probes
from dynlen.engine.significance import (
    POLICIES,
    SelectionInputs,
    attention_from,
    get_policy,
    question_lengths,
    question_segment,
    register_policy,
)
from dynlen.errors import UserError

SEP = 3


def _inputs(length: int = 24, question: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS]=2, question, [SEP], context, [SEP]; token types 0 then 1, like the QA tokenizers make them."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 40, (1, length), generator=g)
    ids[0, 0], ids[0, question], ids[0, -1] = 2, SEP, SEP
    types = torch.zeros_like(ids)
    types[0, question + 1 :] = 1
    return ids, types


def _probes(model, width: int = 0, match_heads: int = 0) -> LookaheadProbes:
    """Random probes for layers 2.. of ``model`` (layer 1 reads the embeddings and has none)."""
    layers = list(range(1, model.config.num_hidden_layers))
    probes = LookaheadProbes(model.config.hidden_size, layers, width, match_heads)
    torch.manual_seed(1)
    for p in probes.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return probes.eval()


class _Fixed:
    """A test policy: scores are a fixed per-position table (higher keeps)."""

    name = "test-fixed"
    needs_attention, needs_probes, needs_question = False, False, False

    def __init__(self, table: torch.Tensor):
        self.table = table

    def scores(self, inputs):
        return self.table.expand(inputs.hidden.shape[0], -1)[:, : inputs.hidden.shape[1]].clone()


def test_registry_names_the_known_policies():
    known = {"attention", "question-attention", "lookahead", "lookahead-attention", "lookahead-evidence"}
    assert known | {"lookahead-memory"} <= set(POLICIES)
    with pytest.raises(UserError, match="unknown significance policy 'nope'.*attention"):
        get_policy("nope")
    with pytest.raises(UserError, match="unknown significance policy"):
        LengthConfig.parse("ratios:1,0.5@nope")


def test_selection_round_trips_through_label_dict_and_parse():
    config = LengthConfig.parse("ratios:1,0.8,0.5,0.3@lookahead-attention+question")
    assert (config.significance, config.keep_question) == ("lookahead-attention", True)
    assert config.label() == "ratios:1,0.8,0.5,0.3@lookahead-attention+question"
    assert LengthConfig.from_dict(json.loads(config.to_json())) == config
    assert LengthConfig.parse(config.label()) == config
    plain = LengthConfig.parse("ratios:1,0.8,0.5,0.3")
    assert "significance" not in plain.to_dict() and plain.label() == "ratios:1,0.8,0.5,0.3"  # old files read as before


def test_question_segment_ends_at_the_first_separator():
    ids, _ = _inputs(question=5)
    assert question_segment(ids, SEP)[0].tolist() == [True] * 6 + [False] * 18
    assert question_lengths(torch.cat([ids, _inputs(question=8, seed=1)[0]]), SEP) == [6, 9]
    with pytest.raises(UserError, match="separator"):
        question_segment(ids, None)
    with pytest.raises(UserError, match="no separator token"):
        question_lengths(ids.masked_fill(ids == SEP, SEP + 1), SEP)


@pytest.mark.parametrize(
    "policy",
    ["attention", "question-attention", "lookahead", "lookahead-attention", "lookahead-evidence", "lookahead-memory"],
)
def test_keep_all_is_the_stock_model_under_every_policy(policy):
    model = tiny_bert()
    qa = LengthAdaptiveQA(model, probes=_probes(model), sep_token_id=SEP)
    ids, types = _inputs()
    config = LengthConfig.keep_all(4).with_selection(policy, True)
    out = qa(ids, torch.ones_like(ids), types, config)
    with torch.no_grad():
        stock = model(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=types)
    torch.testing.assert_close(out.start_logits, stock.start_logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "policy",
    ["attention", "question-attention", "lookahead", "lookahead-attention", "lookahead-evidence", "lookahead-memory"],
)
@pytest.mark.parametrize("kernels", [False, True])
def test_question_kept_until_the_last_layer(policy, kernels, monkeypatch):
    """Every dropping layer but the encoder's last keeps the question; the last spends its slots on context.

    After the last layer no layer reads the question's states, so keeping it there would compute
    final states for positions no answer can start or end at.
    """
    model = tiny_bert()
    qa = LengthAdaptiveQA(model, kernels=kernels, probes=_probes(model), sep_token_id=SEP)
    ids, types = _inputs(question=7)
    kept = []
    original = LengthAdaptiveQA._dropping_layer

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        kept.append(set(out[1][0].tolist()))
        return out

    monkeypatch.setattr(LengthAdaptiveQA, "_dropping_layer", spy)
    with torch.no_grad():
        qa(ids, torch.ones_like(ids), types, LengthConfig.parse(f"ratios:1,0.6,0.45,0.35@{policy}+question"))
    assert len(kept) == 3 and all(set(range(8)) <= positions for positions in kept[:2])
    assert 0 in kept[2] and not set(range(1, 8)) <= kept[2]  # [CLS] stays; the question's slots go to context


def test_native_kernel_keeps_the_question_like_torch_ops():
    model = tiny_bert()
    fast = LengthAdaptiveQA(model, kernels=True, sep_token_id=SEP)
    plain = LengthAdaptiveQA(model, kernels=False, sep_token_id=SEP)
    config = LengthConfig.parse("ratios:1,0.5,0.4,0.3@attention+question")
    ids = torch.cat([_inputs(seed=s)[0] for s in range(3)])
    types = torch.cat([_inputs(seed=s)[1] for s in range(3)])
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0  # right padding keeps the kernel usable
    with torch.no_grad():
        a, b = fast(ids, mask, types, config), plain(ids, mask, types, config)
    torch.testing.assert_close(a.start_logits, b.start_logits, atol=1e-4, rtol=0)


def test_lookahead_keeps_what_the_policy_scores_highest(monkeypatch):
    """The engine keeps exactly the top-scoring slots (plus [CLS]) of a registered policy, in order."""
    model = tiny_bert()
    qa = LengthAdaptiveQA(model, kernels=False, sep_token_id=SEP)
    table = torch.zeros(1, 24)
    table[0, [5, 9, 17, 21, 22]] = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    register_policy(_Fixed(table))
    seen = []
    original = LengthAdaptiveQA._dropping_layer

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        seen.append(out[1][0].tolist())
        return out

    monkeypatch.setattr(LengthAdaptiveQA, "_dropping_layer", spy)
    ids, types = _inputs()
    with torch.no_grad():
        qa(ids, torch.ones_like(ids), types, LengthConfig("counts", (24, 4, 4, 4), significance="test-fixed"))
    assert seen[0] == [0, 5, 9, 17]


@pytest.mark.parametrize("padded", [False, True])
def test_each_dropping_layer_sees_the_scores_its_slots_had_at_the_previous_one(padded, monkeypatch):
    """The engine hands a policy its own last scores, moved along with each example's kept slots."""

    class _Recording:
        name = "test-recording"
        needs_attention, needs_probes, needs_question = False, False, False
        needs_previous = True

        def __init__(self):
            self.calls = []

        def scores(self, inputs):
            scores = (inputs.positions * (inputs.layer + 2) % 7).to(torch.float32)  # differs per layer and slot
            self.calls.append((inputs.positions.clone(), inputs.previous, scores.clone()))  # the engine overwrites them
            return scores

    policy = _Recording()
    monkeypatch.setitem(POLICIES, policy.name, policy)
    qa = LengthAdaptiveQA(tiny_bert(), kernels=False, sep_token_id=SEP)
    ids = torch.cat([_inputs(seed=0)[0], _inputs(seed=1)[0]])
    mask = torch.ones_like(ids)
    if padded:
        mask[1, 18:] = 0  # the second example has 18 real tokens
    with torch.no_grad():
        qa(ids, mask, torch.zeros_like(ids), LengthConfig.parse("ratios:1,0.5,0.3,0.2@test-recording"))
    assert len(policy.calls) == 3 and policy.calls[0][1] is None
    for (positions, _, scores), (later, previous, _) in zip(policy.calls, policy.calls[1:]):
        for row in range(2):
            by_position = dict(zip(positions[row].tolist(), scores[row].tolist()))
            real = later[row] < (18 if padded and row == 1 else 24)
            for position, carried, is_real in zip(later[row].tolist(), previous[row].tolist(), real.tolist()):
                if is_real:
                    assert carried == by_position[position]


def test_lookahead_memory_keeps_what_an_earlier_probe_found_likely():
    class _Probe:
        def __call__(self, layer, hidden, question=None):
            logits = torch.full((1, 5, 2), -8.0)
            logits[0, 3] = 4.0  # this layer's favourite
            return logits

    previous = torch.tensor([[0.0, 1.9, 0.0, 0.0, 0.1]])  # the previous layer's favourite was slot 1
    inputs = SelectionInputs(2, torch.zeros(1, 5, 4), None, None, None, _Probe(), None, previous)
    scores = get_policy("lookahead-memory").scores(inputs)
    plain = get_policy("lookahead").scores(inputs)
    assert scores[0, 1] == 1.9 and plain[0, 1] < 0.01
    assert scores[0, 3] == plain[0, 3] > 1.9
    first = SelectionInputs(2, torch.zeros(1, 5, 4), None, None, None, _Probe())
    torch.testing.assert_close(get_policy("lookahead-memory").scores(first), plain)


def test_attention_from_weights_each_query_and_averages_heads():
    probs = torch.softmax(torch.randn(2, 3, 5, 5), dim=-1)
    weights = torch.zeros(2, 5)
    weights[0, 1] = 1.0
    weights[1, 2], weights[1, 4] = 0.25, 0.75
    got = attention_from(probs, weights)
    heads = probs.mean(dim=1)
    torch.testing.assert_close(got[0], heads[0, 1])
    torch.testing.assert_close(got[1], 0.25 * heads[1, 2] + 0.75 * heads[1, 4])


def test_lookahead_evidence_keeps_what_the_likely_answer_reads():
    """Of two tokens the probe scores alike and low, the one the probe's favourite attends to ranks higher."""

    class _Probe:
        def __call__(self, layer, hidden, question=None):
            logits = torch.full((1, 6, 2), -8.0)
            logits[0, 2] = 4.0  # the likely answer
            logits[0, 4, :] = logits[0, 5, :] = -6.0  # alike, both far below it
            return logits

    probs = torch.full((1, 2, 6, 6), 0.02)
    probs[0, :, 2, 5] = 0.9  # the answer reads token 5
    probs = probs / probs.sum(dim=-1, keepdim=True)
    inputs = SelectionInputs(1, torch.zeros(1, 6, 4), None, probs, None, _Probe())
    scores = get_policy("lookahead-evidence").scores(inputs)
    assert scores[0].argmax() == 2 and scores[0, 5] > scores[0, 4]
    plain = get_policy("lookahead").scores(inputs)
    torch.testing.assert_close(plain[0, 5], plain[0, 4])


def test_a_policy_that_needs_probes_refuses_a_model_without_them():
    qa = LengthAdaptiveQA(tiny_bert(), sep_token_id=SEP)
    ids, types = _inputs()
    with pytest.raises(UserError, match="needs look-ahead probes.*make probes"):
        qa(ids, torch.ones_like(ids), types, LengthConfig.parse("ratios:1,0.5,0.5,0.5@lookahead"))


def test_probes_cover_the_dropping_layers():
    model = tiny_bert()
    probes = LookaheadProbes(model.config.hidden_size, [2, 3], 0)
    qa = LengthAdaptiveQA(model, probes=probes, sep_token_id=SEP)
    ids, types = _inputs()
    with pytest.raises(UserError, match="no probe for layer 2"):
        qa(ids, torch.ones_like(ids), types, LengthConfig.parse("ratios:1,0.5,0.5,0.5@lookahead"))
    qa(ids, torch.ones_like(ids), types, LengthConfig.parse("ratios:1,1,0.5,0.5@lookahead"))  # layers 3-4 drop


@pytest.mark.parametrize("policy", ["lookahead", "lookahead-attention", "lookahead-evidence", "attention"])
@pytest.mark.parametrize("width,match_heads", [(0, 0), (8, 0), (8, 2)])
def test_formula_equals_flop_counter_with_probes(policy, width, match_heads):
    """Probe FLOPs are counted (question matching by the question's length), and 'lookahead' pays scores only for the kept queries."""
    model = tiny_bert(attn="eager")
    probes = _probes(model, width=width, match_heads=match_heads)
    qa = LengthAdaptiveQA(model, kernels=False, probes=probes, sep_token_id=SEP)
    ids, types = _inputs(length=23)
    config = LengthConfig.parse(f"ratios:1,0.6,0.4,0.2@{policy}+question")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        qa(ids, torch.ones_like(ids), types, config=config, attention="eager")
    assert counter.get_total_flops() == example_flops(qa.cost_shape(), config, 23, probes.flops, question_length=8)


def test_lookahead_costs_less_than_attention_for_the_same_budget():
    shape = LengthAdaptiveQA(tiny_bert()).cost_shape()
    attention = example_flops(shape, LengthConfig.parse("ratios:1,0.5,0.3,0.2"), 150)
    lookahead = example_flops(shape, LengthConfig.parse("ratios:1,0.5,0.3,0.2@lookahead"), 150, probe_flops=None)
    assert lookahead < attention


def test_probes_save_and_load_with_the_model(tmp_path):
    folder = save_tiny_model(tmp_path / "m")
    from transformers import AutoModelForQuestionAnswering

    model = AutoModelForQuestionAnswering.from_pretrained(folder)
    assert load_probes(model) is None
    probes = _probes(model, width=8)
    probes.save(folder, {"recipe": {"note": "test"}})
    again = AutoModelForQuestionAnswering.from_pretrained(folder)
    loaded = load_probes(again)
    assert loaded is not None and loaded.layer_ids == [1, 2, 3] and loaded.width == 8
    hidden = torch.randn(1, 5, model.config.hidden_size)
    torch.testing.assert_close(loaded(2, hidden), probes(2, hidden))
    assert LengthAdaptiveQA(again).probes is not None  # loads with the model
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(UserError, match="lookahead_probes.safetensors is missing"):
        load_probes(AutoModelForQuestionAnswering.from_pretrained(folder))


def test_question_matching_probes_read_the_question_and_refuse_to_run_without_it():
    model = tiny_bert()
    probes = _probes(model, width=8, match_heads=2)
    qa = LengthAdaptiveQA(model, probes=probes, sep_token_id=SEP)
    ids, types = _inputs()
    with pytest.raises(UserError, match="must keep it: use 'lookahead\\+question'"):
        qa(ids, torch.ones_like(ids), types, LengthConfig.parse("ratios:1,0.5,0.5,0.5@lookahead"))
    hidden = torch.randn(1, 24, model.config.hidden_size)
    question = torch.zeros(1, 24, dtype=torch.bool)
    question[0, :8] = True
    other = hidden.clone()
    other[0, 1:7] += 1.0  # change the question's tokens only
    with torch.no_grad():
        before, after = probes(1, hidden, question), probes(1, other, question)
    assert not torch.allclose(before[0, 8:], after[0, 8:]), "context logits must depend on the question"
    kept = qa(ids, torch.ones_like(ids), types, LengthConfig.parse("ratios:1,0.5,0.5,0.5@lookahead+question"))
    assert kept.start_logits.shape == (1, 24)


def test_question_matching_probes_save_and_load_with_the_model(tmp_path):
    folder = save_tiny_model(tmp_path / "m")
    from transformers import AutoModelForQuestionAnswering

    model = AutoModelForQuestionAnswering.from_pretrained(folder)
    probes = _probes(model, width=8, match_heads=2)
    probes.save(folder)
    loaded = load_probes(AutoModelForQuestionAnswering.from_pretrained(folder))
    assert loaded is not None and loaded.match_heads == 2 and loaded.needs_question
    hidden = torch.randn(1, 10, model.config.hidden_size)
    question = torch.arange(10)[None, :] < 4
    assert torch.equal(loaded(2, hidden, question), probes(2, hidden, question))
    with pytest.raises(UserError, match="need a hidden layer"):
        LookaheadProbes(model.config.hidden_size, [1], 0, 2)


def _spy_kept(monkeypatch) -> list:
    kept = []
    original = LengthAdaptiveQA._dropping_layer

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        kept.append(out[1].tolist())
        return out

    monkeypatch.setattr(LengthAdaptiveQA, "_dropping_layer", spy)
    return kept


@pytest.mark.parametrize("spec", ["ratios:1,0.6,0.45,0.35", "counts:24,10,5,3"])  # the second cuts the question
def test_probes_run_inside_the_projection_choose_as_the_probe_module_does(spec, monkeypatch):
    """The probe's first map runs in the layer's q/k/v GEMM at inference; the choice and logits are the module's."""
    from dynlen.engine.adaptive import _Selection

    model = tiny_bert()
    qa = LengthAdaptiveQA(model, probes=_probes(model, width=8), sep_token_id=SEP)
    ids, types = _inputs(question=7)
    config = LengthConfig.parse(f"{spec}@lookahead+question")
    kept = _spy_kept(monkeypatch)
    with torch.no_grad():
        fused = qa(ids, torch.ones_like(ids), types, config)
        monkeypatch.setattr(_Selection, "probe_linears", lambda self, layer: ())
        whole = qa(ids, torch.ones_like(ids), types, config)
    assert len(kept) == 6 and kept[:3] == kept[3:]
    torch.testing.assert_close(fused.start_logits, whole.start_logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("match_heads", [0, 2])  # question-matching probes read the followed question mask
@pytest.mark.parametrize("spec", ["ratios:1,0.6,0.45,0.35", "counts:24,10,5,3"])
def test_kept_question_follows_the_slots_in_a_padded_batch(spec, match_heads, monkeypatch):
    """The question, kept, stays the leading slots of every row: a padded batch keeps what each example keeps alone."""
    model = tiny_bert()
    qa = LengthAdaptiveQA(model, probes=_probes(model, width=8, match_heads=match_heads), sep_token_id=SEP)
    short, short_types = _inputs(length=14, question=9, seed=2)  # a question longer than some layers keep
    long, long_types = _inputs(length=24, question=5, seed=3)
    ids = torch.zeros(2, 24, dtype=torch.long)
    types, mask = torch.zeros_like(ids), torch.zeros_like(ids)
    ids[0], types[0], mask[0] = long[0], long_types[0], 1
    ids[1, :14], types[1, :14], mask[1, :14] = short[0], short_types[0], 1
    config = LengthConfig.parse(f"{spec}@lookahead+question")
    kept = _spy_kept(monkeypatch)
    with torch.no_grad():
        batch = qa(ids, mask, types, config)
        alone = [
            qa(long, torch.ones_like(long), long_types, config),
            qa(short, torch.ones_like(short), short_types, config),
        ]
    assert len(kept) == 9  # layers 2-4 drop, in the batch and in each example alone
    for row, out in enumerate(alone):
        width = out.start_logits.shape[1]
        torch.testing.assert_close(batch.start_logits[row, :width], out.start_logits[0], atol=1e-5, rtol=0)
        for layer in range(3):
            real = int(out.kept[layer + 1, 0])  # a padded row's real slots come first
            assert kept[layer][row][:real] == kept[3 * (row + 1) + layer][0]
            if layer < 2:  # the question leads; the encoder's last layer spends its slots on context
                assert set(range(min(real, 10 if row else 6))) <= set(kept[layer][row][:real])


def test_following_a_kept_question_equals_gathering_its_mask():
    """Cutting the kept question's mask to the new width is what gathering it would give, padding excluded."""
    from dynlen.engine.adaptive import _select_kept, _Selection, _take_rows

    question = torch.arange(12)[None, :] < torch.tensor([[4], [7]])  # questions of 4 and 7 slots
    valid = torch.arange(12)[None, :] < torch.tensor([[12], [9]])
    scores = torch.randn(2, 12, generator=torch.Generator().manual_seed(0))
    for counts in ([8, 5], [6, 6], [3, 2]):  # a second row that keeps fewer than its question, then both
        selection = _Selection(get_policy("lookahead"), True, question, None, question_lead=[4, 7])
        lead = selection.lead(counts)
        slots, slot_real = _select_kept(None, valid, counts, scores, lead=lead)
        want = _take_rows(question, slots, dim=1)
        if slot_real is not None:
            want &= slot_real
        selection.follow(slots, lead, slot_real)
        assert torch.equal(selection.question, want), counts
        assert selection.question_lead == [min(4, counts[0]), min(7, counts[1])]
