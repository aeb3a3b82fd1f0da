"""Merged context: the engine's retention hooks, driven by the measured merge rules
(dropped tokens folded into kept or summary slots, with proportional attention)."""

from __future__ import annotations

import pytest
import torch
from fixtures import tiny_bert
from torch.utils.flop_counter import FlopCounterMode

from dynlen.engine import merge_rules
from dynlen.engine.adaptive import LengthAdaptiveQA, _attention_probs
from dynlen.engine.config import LengthConfig, config_cells, config_from_cells
from dynlen.engine.costs import example_flops
from dynlen.engine.merging import RETENTIONS
from dynlen.engine.probes import LookaheadProbes
from dynlen.errors import UserError

SEP = 3
MERGES = ("merge-nearest", "merge-window")
RULES = merge_rules  # measured against dropping and set aside: registered here, as the benchmarks do


@pytest.fixture(autouse=True)
def _merges_registered():
    RULES.register_merges()


def _inputs(length: int, question: int = 7, seed: int = 0, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS]=2, question, [SEP], context, [SEP] rows; token types 0 then 1."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 40, (batch, length), generator=g)
    ids[:, 0], ids[:, question], ids[:, -1] = 2, SEP, SEP
    types = torch.zeros_like(ids)
    types[:, question + 1 :] = 1
    return ids, types


def _probes(model) -> LookaheadProbes:
    probes = LookaheadProbes(model.config.hidden_size, list(range(1, model.config.num_hidden_layers)), 8)
    torch.manual_seed(1)
    for p in probes.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return probes.eval()


def _run(qa, ids, types, spec: str, mask=None, attention: str = "sdpa"):
    mask = torch.ones_like(ids) if mask is None else mask
    with torch.no_grad():
        out = qa(ids, mask, types, LengthConfig.parse(spec), attention=attention)
    return out.start_logits, out.end_logits


def test_retention_is_part_of_the_configuration_and_its_label():
    config = LengthConfig.parse("ratios:1,0.5@lookahead+question/bf16/merge-window")
    assert (config.precision, config.retention) == ("bf16", "merge-window")
    assert config.label() == "ratios:1,0.5@lookahead+question/bf16/merge-window"
    assert LengthConfig.from_dict(config.to_dict()) == config
    assert config_from_cells(config_cells(config)) == config
    assert LengthConfig.parse("1,0.5@attention/merge-nearest").retention == "merge-nearest"
    assert "retention" not in LengthConfig.parse("1,0.5").to_dict()
    with pytest.raises(UserError, match="unknown retention 'merge-all'.*register_merges"):
        LengthConfig("ratios", (1.0,), retention="merge-all")
    with pytest.raises(UserError, match="unknown precision 'bf17'.*no retention of that name"):
        LengthConfig.parse("1,0.5@attention/bf17")
    with pytest.raises(UserError, match="'retention' is 3, not a str"):
        LengthConfig.from_dict({"kind": "ratios", "values": [1.0], "retention": 3})


def test_a_slot_holding_c_tokens_is_attended_as_c_copies():
    """Proportional attention: log-count bias on one key == that key repeated."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 3, 4, generator=g) for _ in range(3))
    merge = RULES.NearestMerge(torch.zeros(1, 3, 8))
    merge.counts = torch.tensor([[1.0, 3.0, 2.0]])
    biased = _attention_probs(q, k, merge.key_bias(None, 3), 0.5) @ v
    repeat = torch.tensor([0, 1, 1, 1, 2, 2])
    copies = _attention_probs(q, k[:, :, repeat], None, 0.5) @ v[:, :, repeat]
    torch.testing.assert_close(biased, copies)


@pytest.mark.parametrize("retention", MERGES)
@pytest.mark.parametrize("policy", ["attention", "lookahead+question"])
@pytest.mark.parametrize(
    "spec, length", [("ratios:1,0.6,0.4,0.2", 23), ("ratios:1,0.5,0.3,0.3", 70), ("ratios:1,0.5,0.5,0.5", 40)]
)
def test_formula_equals_flop_counter_under_merging(retention, policy, spec, length):
    """Exact FLOPs: the similarity products and the summary slots' layers are counted as they run."""
    model = tiny_bert("eager")
    probes = _probes(model)
    qa = LengthAdaptiveQA(model, kernels=False, probes=probes, sep_token_id=SEP)
    ids, types = _inputs(length)
    config = LengthConfig.parse(f"{spec}@{policy}/{retention}")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        qa(ids, torch.ones_like(ids), types, config=config, attention="eager")
    assert counter.get_total_flops() == example_flops(qa.cost_shape(), config, length, probes.flops)


def test_summary_slots_cost_flops_and_nearest_its_similarities():
    shape = LengthAdaptiveQA(tiny_bert()).cost_shape()
    drop = example_flops(shape, LengthConfig.parse("ratios:1,0.5,0.3,0.2"), 150)
    for retention in MERGES:
        merged = example_flops(shape, LengthConfig.parse(f"ratios:1,0.5,0.3,0.2@attention/{retention}"), 150)
        assert merged > drop
    assert RETENTIONS["merge-window"].summary_slots(150) == -(-150 // RULES.WINDOW)


@pytest.mark.parametrize("retention", MERGES)
@pytest.mark.parametrize("policy", ["attention", "lookahead+question"])
def test_merging_changes_what_later_layers_read(retention, policy):
    model = tiny_bert()
    qa = LengthAdaptiveQA(model, probes=_probes(model), sep_token_id=SEP)
    ids, types = _inputs(70)
    spec = f"ratios:1,0.5,0.4,0.3@{policy}"
    drop = _run(qa, ids, types, spec)
    merged = _run(qa, ids, types, f"{spec}/{retention}")
    assert not torch.allclose(drop[0], merged[0], atol=1e-4)
    keep_all = _run(qa, ids, types, f"ratios:1,1,1,1@{policy}/{retention}")
    stock = _run(qa, ids, types, f"ratios:1,1,1,1@{policy}")
    torch.testing.assert_close(keep_all, stock)


@pytest.mark.parametrize("retention", MERGES)
@pytest.mark.parametrize("policy", ["attention", "lookahead+question"])
def test_a_padded_batch_merges_as_each_example_alone(retention, policy):
    """Batch > 1 with padding: every row's logits are what it gets alone (and eager == SDPA)."""
    model = tiny_bert()
    qa = LengthAdaptiveQA(model, probes=_probes(model), sep_token_id=SEP)
    spec = f"ratios:1,0.6,0.4,0.3@{policy}/{retention}"
    lengths = (70, 41, 55)
    rows = [_inputs(n, seed=i) for i, n in enumerate(lengths)]
    width = max(lengths)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for i, (row_ids, row_types) in enumerate(rows):
        n = row_ids.shape[1]
        ids[i, :n], types[i, :n], mask[i, :n] = row_ids[0], row_types[0], 1
    start, end = _run(qa, ids, types, spec, mask)
    eager_start, _ = _run(qa, ids, types, spec, mask, attention="eager")
    for i, (row_ids, row_types) in enumerate(rows):
        n = row_ids.shape[1]
        alone_start, alone_end = _run(qa, row_ids, row_types, spec)
        torch.testing.assert_close(start[i, :n], alone_start[0], atol=2e-4, rtol=1e-4)
        torch.testing.assert_close(end[i, :n], alone_end[0], atol=2e-4, rtol=1e-4)
        torch.testing.assert_close(eager_start[i, :n], alone_start[0], atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("retention", MERGES)
def test_native_kernels_and_torch_ops_agree_under_merging(retention):
    model = tiny_bert()
    probes = _probes(model)
    ids, types = _inputs(70)
    spec = f"ratios:1,0.6,0.4,0.3@lookahead+question/{retention}"
    fast = _run(LengthAdaptiveQA(model, probes=probes, sep_token_id=SEP), ids, types, spec)
    plain = _run(LengthAdaptiveQA(model, kernels=False, probes=probes, sep_token_id=SEP), ids, types, spec)
    torch.testing.assert_close(fast, plain, atol=2e-4, rtol=1e-4)


def test_a_variant_registers_once_under_a_plain_new_name():
    from dynlen.engine.merging import Retention, register_retention

    class Drop2(Retention):
        name = "merge-window"

    with pytest.raises(ValueError, match="taken"):
        register_retention(Drop2())
    Drop2.name = "bf16"
    with pytest.raises(ValueError, match="taken"):
        register_retention(Drop2())
    with pytest.raises(TypeError):
        register_retention(object())
