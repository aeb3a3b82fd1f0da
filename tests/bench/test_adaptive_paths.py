"""The unmasked fast path (no padding: batch 1, or a batch of equal lengths) against the masked one.

The forward skips masks while every slot is real and indexes rows directly at batch 1; padded
batches take the masked, flat-indexed path. Both must give the same logits, keep counts and
gradients for the same example, including after a drop that makes every kept slot real again.
"""

import pytest
import torch
from fixtures import tiny_bert

from dynlen.engine.adaptive import LengthAdaptiveQA
from dynlen.engine.config import LengthConfig

CONFIGS = [
    None,
    "ratios:1,0.5,0.3,0.2",
    "ratios:0.9,0.6,0.4,0.3",
    "counts:20,3,2,1",  # layer 2 keeps 3 everywhere: the padded batch turns unmasked mid-forward
]


def _ids(length: int, seed: int) -> torch.Tensor:
    return torch.randint(5, 60, (length,), generator=torch.Generator().manual_seed(seed))


def _padded(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask, types = torch.zeros_like(ids), torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
        types[i, len(r) // 2 : len(r)] = 1  # question, then context: per example, not per batch
    return ids, mask, types


def _config(spec: str | None) -> LengthConfig | None:
    return LengthConfig.parse(spec) if spec else None


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("spec", CONFIGS)
def test_fast_path_equals_masked_and_batched_paths(spec, attention):
    ad = LengthAdaptiveQA(tiny_bert())
    config = _config(spec)
    example = _ids(13, seed=1)
    batches = {
        "alone": ([example], 0),  # batch 1, no padding: no masks, direct row indexing
        "padded": ([_ids(20, seed=2), example, _ids(6, seed=3)], 1),  # masks, flat indexing
        "equal lengths": ([_ids(13, seed=4), example], 1),  # no masks, flat indexing
    }
    outs = {}
    with torch.no_grad():
        for name, (rows, row) in batches.items():
            ids, mask, types = _padded(rows)
            out = ad(ids, mask, types, config=config, attention=attention)
            outs[name] = (out.start_logits[row, :13], out.end_logits[row, :13], out.kept[:, row])
    ref = outs["alone"]
    for name, (start, end, kept) in outs.items():
        assert kept.tolist() == ref[2].tolist(), name
        assert torch.allclose(start, ref[0], atol=1e-5), name
        assert torch.allclose(end, ref[1], atol=1e-5), name


@pytest.mark.parametrize("spec", CONFIGS[1:])
def test_gradients_do_not_depend_on_the_path(spec):
    """Row indexing and the in-place restore buffer backpropagate alike on both paths."""
    model = tiny_bert()
    ad = LengthAdaptiveQA(model)
    config = _config(spec)
    example = _ids(13, seed=1)
    weights = torch.randn(2, 13, generator=torch.Generator().manual_seed(5))

    def grads(rows: list[torch.Tensor], row: int) -> dict[str, torch.Tensor]:
        model.zero_grad()
        ids, mask, types = _padded(rows)
        out = ad(ids, mask, types, config=config)
        loss = (out.start_logits[row, :13] * weights[0]).sum() + (out.end_logits[row, :13] * weights[1]).sum()
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    alone = grads([example], 0)
    padded = grads([_ids(20, seed=2), example, _ids(6, seed=3)], 1)
    assert alone.keys() == padded.keys()
    for name, grad in alone.items():
        assert torch.allclose(grad, padded[name], atol=1e-5, rtol=1e-4), name


def test_restore_keeps_padding_rows_at_zero_hidden():
    """Padded positions never receive a hidden state, as before: their logits are the head's bias."""
    model = tiny_bert()
    ad = LengthAdaptiveQA(model)
    ids, mask, types = _padded([_ids(20, seed=2), _ids(6, seed=3)])
    with torch.no_grad():
        out = ad(ids, mask, types, config=_config("ratios:1,0.5,0.3,0.2"))
    bias = model.qa_outputs.bias
    assert torch.allclose(out.start_logits[1, 6:], bias[0].expand(14))
    assert torch.allclose(out.end_logits[1, 6:], bias[1].expand(14))
