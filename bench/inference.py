"""The one inference loop both the evaluator (``bench.runner``) and the answerer (``bench.answer``) run."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from dynlen.bench.device import to_device
from dynlen.bench.features import Features
from dynlen.engine.adaptive import LengthAdaptiveQA
from dynlen.engine.config import LengthConfig


def batched_logits(
    adaptive: LengthAdaptiveQA,
    features: Features,
    batches: Iterable[tuple[list[int], dict[str, torch.Tensor]]],
    config: LengthConfig,
    device: torch.device,
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Per-feature start/end logits (unpadded) and the tokens each layer kept.

    ``batches`` yields (feature indices, collated batch); the evaluator passes its pre-collated
    length-sorted batches, the answerer collates its windows on the fly. Logits come back to the
    CPU, where answers are extracted.
    """
    n = len(features)
    starts: list[np.ndarray] = [np.empty(0, dtype=np.float32)] * n
    ends: list[np.ndarray] = [np.empty(0, dtype=np.float32)] * n
    kept = np.zeros((config.num_layers, n), dtype=np.int64)
    with torch.inference_mode():
        for idx, batch in batches:
            batch = to_device(batch, device)
            out = adaptive(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], config)
            s, e = out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()
            for row, i in enumerate(idx):
                length = len(features.input_ids[i])
                starts[i], ends[i] = s[row, :length], e[row, :length]
            kept[:, idx] = out.kept.cpu().numpy()
    return starts, ends, kept
