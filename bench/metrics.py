"""The layout of metrics.json (``dynlen eval``): one measurement with its context and full detail.

The measurement's own keys come from :meth:`bench.measurement.Measurement.to_json` (and read back
with ``Measurement.from_json``); this module adds where it ran (model, data, device), the exact
FLOP counts in both conventions, every latency round summary and the evaluator's throughput.
"""

from __future__ import annotations

import numpy as np

from dynlen.bench.device import describe_device
from dynlen.bench.latency import LatencyResult
from dynlen.bench.runner import EvalResult, QARunner
from dynlen.engine.costs import BERT_BASE


def metrics_record(runner: QARunner, result: EvalResult, latency: LatencyResult | None = None) -> dict:
    """The metrics.json content: accuracy, FLOPs in both conventions, speedups, latency, kept tokens."""
    measurement = result.measurement.with_latency(latency) if latency is not None else result.measurement
    config = measurement.config
    record = {
        "model": runner.model_name,
        "data": runner.data.source,
        "device": describe_device(runner.device),
        **measurement.to_json(),
    }
    record["flops"].update(
        {
            "dynamic_padding": runner.flops(config).as_dict(),
            "padded_to_384": runner.flops(config, padded=True).as_dict(),
            "bert_base_shape": {
                "layers": BERT_BASE.num_layers,
                "hidden": BERT_BASE.hidden,
                "ffn": BERT_BASE.intermediate,
            },
        }
    )
    if latency is not None:
        record["latency"] = _merged(latency.as_dict(), record["latency"])
    record["mean_input_tokens"] = float(np.mean(runner.features.lengths)) if len(runner.features) else 0.0
    record["evaluation_seconds"] = result.seconds
    record["questions_per_second"] = result.questions_per_second
    return record


def _merged(base: dict, extra: dict) -> dict:
    """``base`` updated with ``extra``, nested dicts merged key by key (``base`` keeps its key order)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out
