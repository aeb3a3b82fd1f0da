"""SQuAD v1.1 scores of a set of predictions, through the repository's own ``evaluate`` metric.

Going through ``evaluate`` keeps the numbers comparable with what other SQuAD tooling reports,
while the metric script lives in the repository so that no hub access is ever needed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from dynlen.bench.squad import Example
from dynlen.errors import UserError

METRIC_PATH = Path(__file__).resolve().parent / "metric" / "squad_v11"


@functools.lru_cache(maxsize=1)
def load_metric():
    """Load once: a search scores hundreds of configurations and loading copies the script each time.

    ``keep_in_memory`` stops ``evaluate`` from writing arrow files and lock files to its cache,
    which would be slow and could clash between processes scoring at the same time.
    """
    import evaluate

    return evaluate.load(str(METRIC_PATH), keep_in_memory=True)


def _references(examples: Sequence[Example]) -> list[dict]:
    return [
        {"id": ex.qid, "answers": {"text": list(ex.answers), "answer_start": list(ex.answer_starts)}} for ex in examples
    ]


def _aligned_predictions(predictions: dict[str, str], examples: Sequence[Example]) -> list[dict]:
    """One prediction per example, in example order; a missing one is a caller error, not a zero."""
    missing = [ex.qid for ex in examples if ex.qid not in predictions]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise UserError(
            f"no prediction for {len(missing)} of {len(examples)} questions (ids: {shown}); "
            "predictions must come from the same SQuAD file and question subset as the examples"
        )
    return [{"id": ex.qid, "prediction_text": predictions[ex.qid]} for ex in examples]


def squad_scores(predictions: dict[str, str], examples: Sequence[Example]) -> dict[str, float]:
    """Official SQuAD v1.1 exact match and F1 (0-100) of ``predictions`` (qid -> answer text)."""
    if not examples:
        raise UserError("no questions to score; the example list is empty")
    preds = _aligned_predictions(predictions, examples)
    result = load_metric().compute(predictions=preds, references=_references(examples))
    return {"exact_match": float(result["exact_match"]), "f1": float(result["f1"])}
