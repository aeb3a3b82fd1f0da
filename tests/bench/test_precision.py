"""Precision as part of the configuration: bf16/fp16 products, float32 everywhere else."""

from __future__ import annotations

import pytest
import torch
from test_families import FAMILIES

from dynlen.engine.adaptive import LengthAdaptiveQA
from dynlen.engine.config import LengthConfig, config_cells, config_from_cells, resolve_config
from dynlen.engine.kernels import cpu_has_bf16, native_kernels
from dynlen.engine.precision import native_precision, resolve_precision
from dynlen.errors import UserError


# --- the configuration -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "ratios:1,1,0.7,0.49@lookahead+question/bf16",
        "ratios:1,0.9,0.8,0.5@attention/fp16",
        "counts:200,100,50,10@attention/bf16",
        "ratios:1,0.9,0.8,0.5@lookahead",
    ],
)
def test_precision_round_trips_through_label_dict_and_cells(text):
    config = LengthConfig.parse(text)
    assert config.label(precise=True) == text or LengthConfig.parse(config.label(precise=True)) == config
    assert LengthConfig.from_dict(config.to_dict()) == config
    assert config_from_cells(config_cells(config)) == config


def test_float32_configurations_serialise_as_before():
    config = LengthConfig.parse("ratios:1,0.5@lookahead+question")
    assert config.precision == "fp32"
    assert "precision" not in config.to_dict()
    assert config_cells(config)["significance"] == "lookahead+question"
    assert LengthConfig.parse("ratios:1,0.5").label() == "ratios:1,0.5"
    assert LengthConfig.parse("ratios:1,0.5@attention/bf16").label() == "ratios:1,0.5@attention/bf16"


def test_keep_all_takes_a_precision():
    assert resolve_config("keep-all/bf16", 4) == LengthConfig.keep_all(4).with_precision("bf16")
    config = resolve_config("keep-all@lookahead+question/bf16", 4)
    assert config.is_keep_all and config.selection == "lookahead+question" and config.precision == "bf16"


@pytest.mark.parametrize("bad", ["ratios:1,0.5@attention/int4", "ratios:1,0.5@attention/"])
def test_unknown_precision_is_one_line(bad):
    if bad.endswith("/"):  # an empty precision is float32, as without the slash
        assert LengthConfig.parse(bad).precision == "fp32"
        return
    with pytest.raises(UserError, match="unknown precision 'int4'"):
        LengthConfig.parse(bad)
    with pytest.raises(UserError, match="unknown precision"):
        LengthConfig.from_dict({"kind": "ratios", "values": [1, 0.5], "precision": "int4"})


def test_auto_names_what_the_cpu_computes():
    assert resolve_precision("auto") == native_precision("cpu") == ("bf16" if cpu_has_bf16() else "fp32")
    assert resolve_precision("fp16") == "fp16"
    with pytest.raises(UserError):
        resolve_precision("double")


# --- the forward ---------------------------------------------------------------------------------
def _batch(family, batch=2, width=18, seed=3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (batch, width), generator=g)
    mask = torch.ones(batch, width, dtype=torch.long)
    mask[1:, width - 5 :] = 0  # one padded example
    ids[mask == 0] = family.pad_id
    kwargs = {"token_type_ids": torch.zeros_like(ids)} if family.token_types else {}
    return ids, mask, kwargs


def _stock(model, ids, mask, kwargs, dtype):
    copy = type(model)._from_config(model.config, attn_implementation="sdpa").eval()
    copy.load_state_dict(model.state_dict())
    copy = copy.to(dtype)
    with torch.no_grad():
        out = copy(input_ids=ids, attention_mask=mask, **kwargs)
    return out.start_logits.float()


@pytest.mark.parametrize("name", ["bert", "distilbert", "mobilebert"])
@pytest.mark.parametrize("kernels", [True, False])
def test_bf16_keep_all_is_the_stock_model_within_bf16_rounding(name, kernels):
    family = FAMILIES[name]
    model = family.build("sdpa")
    ids, mask, kwargs = _batch(family)
    stock32 = _stock(model, ids, mask, kwargs, torch.float32)
    stock16 = _stock(model, ids, mask, kwargs, torch.bfloat16)
    engine = LengthAdaptiveQA(model, kernels=kernels, probes=None)
    config = LengthConfig.keep_all(engine.num_layers)
    with torch.no_grad():
        ours32 = engine(ids, mask, kwargs.get("token_type_ids"), config=config).start_logits
        ours16 = engine(ids, mask, kwargs.get("token_type_ids"), config=config.with_precision("bf16")).start_logits
    real = mask.bool()
    rounding = (stock16 - stock32)[real].abs().max().item()
    ours = (ours16 - stock32)[real].abs().max().item()
    assert ours16.dtype == torch.float32
    assert (ours16 - ours32)[real].abs().max().item() > 0  # the products really ran at bf16
    assert ours <= 2 * rounding + 1e-4, (ours, rounding)


def test_bf16_dropping_configuration_same_with_and_without_kernels():
    family = FAMILIES["bert"]
    model = family.build("sdpa")
    ids, mask, kwargs = _batch(family, batch=3, width=24)
    config = LengthConfig.parse("ratios:1,0.6,0.4,0.2@attention/bf16")
    outs = []
    for kernels in (True, False):
        with torch.no_grad():
            out = LengthAdaptiveQA(model, kernels=kernels, probes=None)(ids, mask, kwargs["token_type_ids"], config)
        outs.append(out)
    assert torch.equal(outs[0].kept, outs[1].kept)
    real = mask.bool()
    assert torch.allclose(outs[0].start_logits[real], outs[1].start_logits[real], atol=1e-4)


@pytest.mark.skipif(native_kernels() is None or not cpu_has_bf16(), reason="needs the native kernels and AVX512-BF16")
@pytest.mark.parametrize(("rows", "k", "n"), [(1, 32, 96), (5, 33, 40), (13, 64, 64), (30, 48, 100)])
def test_bf16_kernel_equals_products_of_rounded_operands(rows, k, n):
    kernel = native_kernels()
    torch.manual_seed(rows)
    x, w, b = torch.randn(rows, k), torch.randn(n, k), torch.randn(n)
    panels, bias = kernel.pack_weight_bf16(w, b)
    out = kernel.packed_linear_bf16(x, panels, bias)[:, :n]
    reference = torch.nn.functional.linear(x.bfloat16().double(), w.bfloat16().double(), b.double()).float()
    assert torch.allclose(out, reference, atol=1e-4, rtol=1e-5)


def test_latency_below_float32_also_times_keep_all_and_bert_base_at_that_precision(model_dir, squad_file):
    from dynlen.bench.model_io import random_bert_qa
    from dynlen.bench.runner import QARunner
    from dynlen.bench.squad import load_squad

    runner = QARunner(str(model_dir), load_squad(str(squad_file)), batch_size=4, progress=False)
    small_base = random_bert_qa({"layers": 2, "hidden": 32, "heads": 4, "ffn": 64, "vocab": 100})
    config = LengthConfig.parse("ratios:1,0.7,0.5,0.3@attention/bf16")
    result = runner.latency(config, sample=2, repeats=1, warmup=0, bert_base=small_base)
    assert {"speedup_vs_keep_all_same_precision", "speedup_vs_bert_base_same_precision"} <= set(result.extra)
    assert next(small_base.parameters()).dtype == torch.float32  # the float32 reference is not cast in place
    plain = runner.latency(config.with_precision("fp32"), sample=2, repeats=1, warmup=0, with_bert_base=False)
    assert "speedup_vs_keep_all_same_precision" not in plain.extra


@pytest.mark.skipif(native_kernels() is None or not native_kernels().has_vnni(), reason="needs AVX512-VNNI")
@pytest.mark.parametrize(("rows", "k", "n"), [(1, 32, 96), (5, 33, 40), (13, 64, 64), (30, 50, 100)])
def test_int8_kernel_equals_products_of_per_row_quantized_operands(rows, k, n):
    from dynlen.engine.families.projections import quantized_rows

    kernel = native_kernels()
    torch.manual_seed(rows)
    x, w, b = torch.randn(rows, k) * 3, torch.randn(n, k), torch.randn(n)
    out = kernel.packed_linear_int8(x, *kernel.pack_weight_int8(w, b))[:, :n]
    reference = torch.nn.functional.linear(quantized_rows(x).double(), quantized_rows(w).double(), b.double())
    assert torch.allclose(out, reference.float(), atol=1e-3, rtol=1e-4)


def test_int8_engine_same_with_and_without_kernels_and_near_float32():
    family = FAMILIES["bert"]
    model = family.build("sdpa")
    ids, mask, kwargs = _batch(family, batch=3, width=24)
    real = mask.bool()
    config = LengthConfig.parse("ratios:1,1,1,1@attention/int8")
    outs = []
    for kernels in (True, False):
        with torch.no_grad():
            outs.append(
                LengthAdaptiveQA(model, kernels=kernels, probes=None)(ids, mask, kwargs["token_type_ids"], config)
            )
    torch.testing.assert_close(outs[0].start_logits[real], outs[1].start_logits[real], atol=1e-3, rtol=1e-3)
    with torch.no_grad():
        fp32 = LengthAdaptiveQA(model, probes=None)(ids, mask, kwargs["token_type_ids"], config.with_precision("fp32"))
    gap = (outs[0].start_logits - fp32.start_logits)[real].abs().max().item()
    assert 0 < gap < 0.05 * fp32.start_logits[real].abs().max().item() + 0.05


def test_int8_is_refused_for_a_family_whose_projections_the_engine_does_not_route():
    family = FAMILIES["mobilebert"]
    engine = LengthAdaptiveQA(family.build("sdpa"), probes=None)
    ids, mask, kwargs = _batch(family)
    with pytest.raises(UserError, match="precision int8 runs where"):
        engine(ids, mask, kwargs["token_type_ids"], LengthConfig.keep_all(4).with_precision("int8"))
