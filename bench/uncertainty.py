"""How sure is an F1 difference? Per-question F1 and a paired bootstrap interval.

Two configurations scored on the same questions differ on few of them, so the useful number is
not each F1's own spread but the spread of their *difference*, resampling the same questions for
both (a paired bootstrap). "Within 1 F1 of keep-all" is judged on the point estimate and always
printed with this interval, so a reader sees when a held-out split is too small to tell.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from dynlen.bench.scoring import METRIC_PATH
from dynlen.bench.squad import Example

BOOTSTRAP_RESAMPLES = 2000
LEVEL = 0.95


@lru_cache(maxsize=1)
def _metric_module():
    """The repository's official SQuAD v1.1 metric script, for its per-answer F1."""
    path = METRIC_PATH / "squad_v11.py"
    spec = importlib.util.spec_from_file_location("dynlen_squad_v11", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def per_question_f1(predictions: dict[str, str], examples: Sequence[Example]) -> np.ndarray:
    """Official F1 (0-100) of every question, in ``examples`` order; its mean is the reported F1."""
    metric = _metric_module()
    return np.array(
        [100.0 * metric.best_over_golds(metric.f1_score, predictions.get(ex.qid, ""), ex.answers) for ex in examples]
    )


def paired_interval(
    scores: Sequence[float],
    reference: Sequence[float],
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> tuple[float, float]:
    """``level`` bootstrap interval of mean(scores) - mean(reference) over the same questions.

    Questions are resampled with replacement, the same draw for both sides; percentiles of the
    resampled mean differences bound the interval. Seeded, so a report is reproducible.
    """
    diff = np.asarray(scores, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    if diff.ndim != 1 or diff.size == 0:
        raise ValueError("paired_interval needs two equally long, non-empty score lists")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 250):  # chunks keep memory flat on large splits
        count = min(250, resamples - start)
        means[start : start + count] = diff[rng.integers(0, diff.size, size=(count, diff.size))].mean(axis=1)
    tail = (1.0 - level) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)
