"""Latency measured as a ratio against a reference, interleaved in the same run.

On a small shared CPU the absolute milliseconds drift by tens of percent from minute to
minute; timing the candidate and its references alternately, with the order rotated each
round, makes their ratio far steadier than either number alone. The finer the alternation the
steadier: ``interleaved_batch_timings`` alternates on every batch, so all contenders see the same
few milliseconds of machine state rather than whole passes seconds apart.

On a GPU a forward returns as soon as its kernels are queued, so a contender's clock would
stop long before its work is done (and the next contender would pay for it). Pass
``synchronize`` (``device_synchronizer(device)`` gives the right one) and every contender's
time is taken from an idle device to an idle device.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

Synchronize = Callable[[], object]


@dataclass(frozen=True)
class Timing:
    """Seconds per round for one contender."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


@dataclass(frozen=True)
class Ratio:
    """Per-round reference/candidate ratios (> 1 means the candidate is faster)."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def as_dict(self) -> dict:
        return {"median": self.median, "min": min(self.values), "max": max(self.values), "rounds": len(self.values)}

    def __str__(self) -> str:
        return f"{self.median:.2f}x (min {min(self.values):.2f}, max {max(self.values):.2f}, {len(self.values)} rounds)"


@dataclass
class LatencyResult:
    """Interleaved timings of a configuration against its references (``QARunner.latency``).

    ``ms_per_feature`` is the configuration's median round per feature; ``ms_per_feature_min`` and
    ``ms_per_feature_max`` its fastest and slowest round, the spread the ratios' ``min``/``max`` give
    for the speedups. ``extra`` holds the optional stock-forward comparison and keep-all's own time.
    """

    batch_size: int
    features: int
    repeats: int
    ms_per_feature: float
    vs_keep_all: Ratio
    vs_bert_base: Ratio | None = None
    ms_per_feature_min: float | None = None
    ms_per_feature_max: float | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """The ``latency`` section of metrics.json."""
        out = {
            "batch_size": self.batch_size,
            "features": self.features,
            "repeats": self.repeats,
            "ms_per_feature": self.ms_per_feature,
            "ms_per_feature_min": self.ms_per_feature_min,
            "ms_per_feature_max": self.ms_per_feature_max,
            "speedup_vs_keep_all": self.vs_keep_all.as_dict(),
        }
        if self.vs_bert_base is not None:
            out["speedup_vs_bert_base"] = self.vs_bert_base.as_dict()
        out.update(self.extra)
        return out


Batch = TypeVar("Batch")


def interleaved_batch_timings(
    contenders: Mapping[str, Callable[[Batch], object]],
    batches: Sequence[Batch],
    repeats: int = 5,
    warmup: int = 1,
    synchronize: Synchronize | None = None,
    progress: str | None = None,
) -> dict[str, Timing]:
    """Seconds per pass over ``batches`` for each contender, alternating contenders on every batch.

    The order rotates with the batch and the round, so no contender always runs first (or
    right after another one). A round's sample is the contender's summed time over all batches;
    warm-up rounds are discarded. ``synchronize`` (None on the CPU, where calls are
    synchronous) runs before each clock starts and before it stops, so asynchronous device
    work is charged to the contender that queued it. ``progress``: the description of a
    progress bar over rounds (on stderr), or None for none.
    """
    from tqdm import tqdm

    names = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in names}
    rounds = range(warmup + repeats)
    bar = tqdm(rounds, desc=progress, unit="round", file=sys.stderr, disable=progress is None, leave=False)
    for round_index in bar:
        spent = dict.fromkeys(names, 0.0)
        for batch_index, batch in enumerate(batches):
            shift = (round_index + batch_index) % len(names)
            for name in names[shift:] + names[:shift]:
                if synchronize is not None:
                    synchronize()
                started = time.perf_counter()
                contenders[name](batch)
                if synchronize is not None:
                    synchronize()
                spent[name] += time.perf_counter() - started
        if round_index >= warmup:
            for name in names:
                samples[name].append(spent[name])
    return {name: Timing(tuple(vals)) for name, vals in samples.items()}


def ratio(reference: Timing, candidate: Timing) -> Ratio:
    """Round-by-round speedup of ``candidate`` over ``reference``."""
    return Ratio(tuple(r / c for r, c in zip(reference.samples, candidate.samples)))


def device_synchronizer(device) -> Synchronize | None:
    """What ``interleaved_batch_timings`` must call to time work on ``device``: None for the CPU."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    if device.type == "cpu":
        return None
    backend = getattr(torch, device.type, None)
    sync = getattr(backend, "synchronize", None)
    if sync is None:
        raise ValueError(f"no way to synchronize device {device}; time it on cpu or cuda")
    return sync


STOCK_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def contenders(**entries: Any) -> dict[str, Callable[[Mapping], None]]:
    """The callables ``interleaved_batch_timings`` alternates, by name, in the order given.

    An ``(engine, config)`` pair runs the length-adaptive engine (a ``LengthAdaptiveQA``) with
    that configuration; anything else is a Hugging Face model run through its stock forward.
    Batches are dicts of ``input_ids`` and, where present, ``attention_mask`` and
    ``token_type_ids`` (the engine takes an all-ones mask when none is given; the stock forward
    gets only the inputs present, as its own defaults would fill them in).
    """
    out: dict[str, Callable[[Mapping], None]] = {}
    for name, entry in entries.items():
        out[name] = _engine_call(*entry) if isinstance(entry, tuple) else _stock_call(entry)
    return out


def _engine_call(engine, config) -> Callable[[Mapping], None]:
    def go(batch: Mapping) -> None:
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        if mask is None:
            import torch

            mask = torch.ones_like(ids)
        engine(ids, mask, batch.get("token_type_ids"), config)

    return go


def _stock_call(model) -> Callable[[Mapping], None]:
    def go(batch: Mapping) -> None:
        model(**{k: batch[k] for k in STOCK_INPUTS if batch.get(k) is not None})

    return go
