"""The official SQuAD v1.1 scores (exact match and token F1) as a local ``evaluate`` metric.

The hub's ``squad`` metric needs the network to load; this copy lives in the repository so
that scoring works offline with ``evaluate.load(<this folder>)`` and cannot drift with the hub.
The arithmetic follows the official ``evaluate-v1.1.py`` script: normalise both strings, then
take the best score over the gold answers of each question and average over questions.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable

import datasets
import evaluate

_DESCRIPTION = """\
Exact match and token-overlap F1 of SQuAD v1.1, computed exactly as the official v1.1
evaluation script does (lower case, no punctuation, no articles, single spaces).
"""

_CITATION = """\
@inproceedings{rajpurkar-etal-2016-squad,
    title = "{SQ}u{AD}: 100,000+ Questions for Machine Comprehension of Text",
    author = "Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy",
    booktitle = "Proceedings of EMNLP 2016",
    year = "2016",
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of {"id": str, "prediction_text": str}, one per answered question.
    references: list of {"id": str, "answers": {"text": [str, ...], "answer_start": [int, ...]}}.
Returns:
    {"exact_match": float, "f1": float}, both means over the references on a 0-100 scale.
    A reference without a prediction scores 0 (as in the official script).
"""

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Canonical form under which surface differences (case, punctuation, articles) do not count."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, gold: str) -> float:
    """1.0 when both strings agree after normalisation; the strict half of the SQuAD score."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Bag-of-tokens F1, which gives partial credit for spans that overlap the gold answer."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def best_over_golds(score_fn, prediction: str, golds: Iterable[str]) -> float:
    """A question counts as right if it matches any of its annotators' answers."""
    return max((score_fn(prediction, gold) for gold in golds), default=0.0)


def score_questions(predictions: dict[str, str], golds: dict[str, list[str]]) -> dict[str, float]:
    """Mean best EM and F1 over the questions in ``golds`` (0-100); unanswered ones score 0."""
    if not golds:
        return {"exact_match": 0.0, "f1": 0.0}
    em_total = 0.0
    f1_total = 0.0
    for qid, answers in golds.items():
        if qid not in predictions:
            continue
        em_total += best_over_golds(exact_match_score, predictions[qid], answers)
        f1_total += best_over_golds(f1_score, predictions[qid], answers)
    return {"exact_match": 100.0 * em_total / len(golds), "f1": 100.0 * f1_total / len(golds)}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SquadV11(evaluate.Metric):
    """Official SQuAD v1.1 EM/F1, loadable offline from a local path."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {
                        "id": datasets.Value("string"),
                        "prediction_text": datasets.Value("string"),
                    },
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": {
                            "text": datasets.List(datasets.Value("string")),
                            "answer_start": datasets.List(datasets.Value("int32")),
                        },
                    },
                }
            ),
            codebase_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        pred_by_id = {p["id"]: p["prediction_text"] for p in predictions}
        golds = {r["id"]: list(r["answers"]["text"]) for r in references}
        return score_questions(pred_by_id, golds)
