import pytest
import torch
from fixtures import tiny_bert
from torch.utils.flop_counter import FlopCounterMode

from dynlen.engine.adaptive import LengthAdaptiveQA
from dynlen.engine.config import LengthConfig
from dynlen.engine.costs import BERT_BASE, EncoderShape, example_flops, flop_report


@pytest.mark.parametrize(
    "spec", ["keep-all", "ratios:1,0.6,0.4,0.2", "counts:15,9,9,2", "ratios:0.5,0.5,0.5,0.5", "counts:1,1,1,1"]
)
def test_formula_equals_flop_counter_under_eager(spec):
    model = tiny_bert("eager")
    shape = EncoderShape.from_hf_config(model.config)
    config = LengthConfig.keep_all(4) if spec == "keep-all" else LengthConfig.parse(spec)
    length = 23
    ids = torch.randint(5, 50, (1, length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        LengthAdaptiveQA(model, kernels=False)(ids, torch.ones_like(ids), None, config=config, attention="eager")
    assert counter.get_total_flops() == example_flops(shape, config, length)


def test_stock_model_flops_match_keep_all_formula():
    model = tiny_bert("eager")
    shape = EncoderShape.from_hf_config(model.config)
    ids = torch.randint(5, 50, (1, 31), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids)
    assert counter.get_total_flops() == example_flops(shape, LengthConfig.keep_all(4), 31)


def test_bert_base_reference_numbers():
    # 12 x (8*n*768^2 + 4*n^2*768 + 4*n*768*3072) + 4*n*768 for n = 384
    n = 384
    expected = 12 * (8 * n * 768**2 + 4 * n * n * 768 + 4 * n * 768 * 3072) + 4 * n * 768
    assert example_flops(BERT_BASE, LengthConfig.keep_all(12), n) == expected
    # independent check: every encoder weight matrix does one MAC per token, plus QK^T and PV
    from transformers import BertConfig, BertModel

    encoder = BertModel(BertConfig(num_hidden_layers=12), add_pooling_layer=False).encoder
    weights = sum(m.weight.numel() for m in encoder.modules() if isinstance(m, torch.nn.Linear))
    assert expected == 2 * (weights * n + 12 * 2 * n * n * 768) + 4 * n * 768


def test_padding_is_free_and_padded_convention_is_384():
    shape = EncoderShape(6, 768, 3072)
    config = LengthConfig.parse("269,253,252,202,104,34")
    dyn = flop_report(shape, config, [150, 200], questions=2)
    pad = flop_report(shape, config, [150, 200], questions=2, padded=True)
    assert dyn.flops == example_flops(shape, config, 150) + example_flops(shape, config, 200)
    assert pad.flops == 2 * example_flops(shape, config, 384)
    assert pad.speedup_vs_keep_all > dyn.speedup_vs_keep_all > 1.0
