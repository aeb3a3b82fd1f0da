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
    SignificancePolicy,
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


def _probes(model, width: int = 0) -> LookaheadProbes:
    """Random probes for layers 2.. of ``model`` (layer 1 reads the embeddings and has none)."""
    layers = list(range(1, model.config.num_hidden_layers))
    probes = LookaheadProbes(model.config.hidden_size, layers, width)
    torch.manual_seed(1)
    for p in probes.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return probes.eval()


class _Fixed(SignificancePolicy):
    """A test policy: scores are a fixed per-position table (higher keeps)."""

    name = "test-fixed"

    def __init__(self, table: torch.Tensor):
        self.table = table

    def scores(self, inputs):
        return self.table.expand(inputs.hidden.shape[0], -1)[:, : inputs.hidden.shape[1]].clone()


def test_registry_names_the_known_policies():
    assert {"attention", "lookahead", "lookahead-attention"} <= set(POLICIES)
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
    ["attention", "lookahead", "lookahead-attention"],
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
    ["attention", "lookahead", "lookahead-attention"],
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
    monkeypatch.setitem(POLICIES, "test-fixed", _Fixed(table))
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


@pytest.mark.parametrize("policy", ["lookahead", "lookahead-attention", "attention"])
@pytest.mark.parametrize("width", [0, 8])
def test_formula_equals_flop_counter_with_probes(policy, width):
    """Probe FLOPs are counted, and 'lookahead' pays scores only for the kept queries."""
    model = tiny_bert(attn="eager")
    probes = _probes(model, width=width)
    qa = LengthAdaptiveQA(model, kernels=False, probes=probes, sep_token_id=SEP)
    ids, types = _inputs(length=23)
    config = LengthConfig.parse(f"ratios:1,0.6,0.4,0.2@{policy}+question")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        qa(ids, torch.ones_like(ids), types, config=config, attention="eager")
    assert counter.get_total_flops() == example_flops(qa.cost_shape(), config, 23, probes.flops)


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


@pytest.mark.parametrize("spec", ["ratios:1,0.6,0.45,0.35", "counts:24,10,5,3"])
def test_kept_question_follows_the_slots_in_a_padded_batch(spec, monkeypatch):
    """The question, kept, stays the leading slots of every row: a padded batch keeps what each example keeps alone."""
    model = tiny_bert()
    qa = LengthAdaptiveQA(model, probes=_probes(model, width=8), sep_token_id=SEP)
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


def test_a_name_is_registered_once_and_a_kernel_accelerates_a_registered_policy_once(monkeypatch):
    from dynlen.engine.significance import ACCELERATED, register_accelerated

    monkeypatch.setattr("dynlen.engine.significance.POLICIES", dict(POLICIES))
    monkeypatch.setattr("dynlen.engine.significance.ACCELERATED", dict(ACCELERATED))
    with pytest.raises(ValueError, match="'attention' is already registered"):
        register_policy(get_policy("attention").__class__())
    with pytest.raises(ValueError, match="already has an accelerated implementation"):
        register_accelerated("lookahead", object())
    with pytest.raises(ValueError, match="no significance policy 'nope'"):
        register_accelerated("nope", object())
    with pytest.raises(ValueError, match="without '\\+question'"):
        register_policy(type("Kept", (SignificancePolicy,), {"name": "fixed+question"})())


def test_a_registered_accelerated_implementation_runs_the_policys_dropping_layers(monkeypatch):
    """The forward asks the registry, not the policy's name: a test policy's own native implementation is called."""
    from dynlen.engine import significance

    table = torch.zeros(1, 24)
    table[0, [5, 9, 17]] = torch.tensor([3.0, 2.0, 1.0])
    calls = []

    class _Native:
        def drop(self, kernels, job):
            calls.append((job.layer, list(job.counts)))
            slots = torch.tensor([[0, 5, 9, 17]])[:, : job.counts[0]]
            return None, slots  # the engine attends the kept queries itself

    monkeypatch.setitem(POLICIES, "test-fixed", _Fixed(table))
    monkeypatch.setitem(significance.ACCELERATED, "test-fixed", _Native())
    qa = LengthAdaptiveQA(tiny_bert(), kernels=True, sep_token_id=SEP)
    with torch.no_grad():
        if qa._native_drop(torch.zeros(1, 1, 1), None, torch.tensor([1])) is None:
            pytest.skip("the native kernels are not available here")
    ids, types = _inputs()
    kept = _spy_kept(monkeypatch)
    with torch.no_grad():
        qa(ids, torch.ones_like(ids), types, LengthConfig("counts", (24, 4, 4, 4), significance="test-fixed"))
    assert calls == [(1, [4])] and kept[0] == [[0, 5, 9, 17]]


def test_the_forward_and_the_flops_formula_never_name_a_policy():
    """What a policy reads is asked of its type; no policy's name appears in engine/adaptive.py or engine/costs.py."""
    import ast
    from pathlib import Path

    engine = Path(__file__).resolve().parents[2] / "engine"
    for name in ("adaptive.py", "costs.py"):
        tree = ast.parse((engine / name).read_text())
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not strings & set(POLICIES), (name, strings & set(POLICIES))
