"""SQuAD v1.1 scoring through the local evaluate metric, checked against hand-computed numbers."""

from __future__ import annotations

import importlib.util
import random

import pytest

from dynlen.bench.scoring import METRIC_PATH, load_metric, squad_scores
from dynlen.bench.squad import Example
from dynlen.errors import UserError


def _helpers():
    spec = importlib.util.spec_from_file_location("squad_v11_helpers", METRIC_PATH / "squad_v11.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ex(qid: str, *answers: str) -> Example:
    return Example(qid, "T", "some context", "a question?", tuple(answers), tuple(0 for _ in answers))


def test_metric_path_is_the_module_folder():
    assert (METRIC_PATH / "squad_v11.py").is_file()
    assert METRIC_PATH.name == "squad_v11"


def test_metric_loads_once_and_is_an_evaluate_metric():
    import evaluate

    metric = load_metric()
    assert isinstance(metric, evaluate.Metric)
    assert load_metric() is metric


def test_perfect_prediction_scores_100():
    scores = squad_scores({"q1": "Denver Broncos"}, [_ex("q1", "Denver Broncos")])
    assert scores == {"exact_match": 100.0, "f1": 100.0}


def test_normalisation_makes_case_punctuation_and_articles_irrelevant():
    scores = squad_scores({"q1": "The Cat!"}, [_ex("q1", "cat")])
    assert scores == {"exact_match": 100.0, "f1": 100.0}


def test_partial_overlap_f1():
    # pred "the big red ball" -> "big red ball" (3 tokens); gold "red ball game" (3 tokens)
    # common = {red, ball} = 2; precision = 2/3, recall = 2/3; F1 = 2 * (4/9) / (4/3) = 2/3
    scores = squad_scores({"q1": "the big red ball"}, [_ex("q1", "red ball game")])
    assert scores["exact_match"] == 0.0
    assert scores["f1"] == pytest.approx(200.0 / 3.0)


def test_best_gold_answer_counts():
    # vs "york": P = 1/3, R = 1 -> F1 = 2*(1/3)/(4/3) = 0.5
    # vs "new york": P = 2/3, R = 1 -> F1 = 2*(2/3)/(5/3) = 0.8  <- max
    scores = squad_scores({"q1": "new york city"}, [_ex("q1", "york", "New York")])
    assert scores["exact_match"] == 0.0
    assert scores["f1"] == pytest.approx(80.0)
    scores = squad_scores({"q1": "paris"}, [_ex("q1", "Paris, France", "Paris")])
    assert scores == {"exact_match": 100.0, "f1": 100.0}


def test_empty_prediction_scores_zero():
    assert squad_scores({"q1": ""}, [_ex("q1", "anything")]) == {"exact_match": 0.0, "f1": 0.0}


def test_mean_over_mixed_questions():
    examples = [
        _ex("q1", "Denver Broncos"),  # exact: EM 1, F1 1
        _ex("q2", "red ball game"),  # partial: EM 0, F1 2/3
        _ex("q3", "york", "new york"),  # best gold: EM 0, F1 0.8
        _ex("q4", "something"),  # empty: EM 0, F1 0
    ]
    preds = {"q1": "denver broncos.", "q2": "the big red ball", "q3": "new york city", "q4": ""}
    scores = squad_scores(preds, examples)
    # EM = 100 * 1/4 = 25; F1 = 100 * (1 + 2/3 + 0.8 + 0) / 4 = 100 * 2.4666.../4 = 61.666...
    assert scores["exact_match"] == pytest.approx(25.0)
    assert scores["f1"] == pytest.approx(100.0 * (1 + 2 / 3 + 0.8) / 4)
    assert scores["f1"] == pytest.approx(61.6666667)


def test_extra_predictions_are_ignored():
    scores = squad_scores({"q1": "cat", "zzz": "dog"}, [_ex("q1", "cat")])
    assert scores == {"exact_match": 100.0, "f1": 100.0}


def test_metric_scores_an_unanswered_reference_as_zero():
    # evaluate needs equal counts, but an id mismatch leaves q2 unanswered: (1 + 0) / 2
    result = load_metric().compute(
        predictions=[{"id": "q1", "prediction_text": "cat"}, {"id": "other", "prediction_text": "dog"}],
        references=[
            {"id": "q1", "answers": {"text": ["cat"], "answer_start": [0]}},
            {"id": "q2", "answers": {"text": ["dog"], "answer_start": [0]}},
        ],
    )
    assert result == {"exact_match": 50.0, "f1": 50.0}


def test_missing_prediction_is_a_user_error():
    with pytest.raises(UserError, match="no prediction for 1 of 2 questions.*q2"):
        squad_scores({"q1": "cat"}, [_ex("q1", "cat"), _ex("q2", "dog")])


def test_no_examples_is_a_user_error():
    with pytest.raises(UserError):
        squad_scores({}, [])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("  The  quick, brown FOX!  ", "quick brown fox"),
        ("An answer", "answer"),  # "an" only as a whole word
        ("the-cat", "thecat"),  # punctuation goes before articles, as in the official script
        ("a theory of the atom", "theory of atom"),
        ("...", ""),
        ("cat\u2014the\u2014dog", "cat\u2014 \u2014dog"),  # articles become a space, as officially (em dash is kept)
    ],
)
def test_normalize_answer(text, expected):
    assert _helpers().normalize_answer(text) == expected


def test_f1_helper_with_repeated_tokens():
    # pred tokens [x, x, y], gold [x, z]: Counter overlap = {x: 1} -> 1 common
    # P = 1/3, R = 1/2, F1 = 2 * (1/6) / (5/6) = 0.4
    assert _helpers().f1_score("x x y", "x z") == pytest.approx(0.4)
    assert _helpers().f1_score("the", "a") == 0.0  # both normalise to nothing


def test_evaluate_module_equals_direct_computation_on_random_strings():
    helpers = _helpers()
    rng = random.Random(1234)
    words = ["the", "A", "an", "cat", "Cat", "dog", "red", "ball", "new", "york", "1876", "x", "Y"]
    punct = ["", "", ",", ".", "!", "'s", "-"]

    def phrase() -> str:
        return " ".join(rng.choice(words) + rng.choice(punct) for _ in range(rng.randint(0, 5)))

    examples = [_ex(f"q{i}", *(phrase() for _ in range(rng.randint(1, 3)))) for i in range(300)]
    preds = {ex.qid: (rng.choice(ex.answers) if rng.random() < 0.2 else phrase()) for ex in examples}

    em = [max(helpers.exact_match_score(preds[ex.qid], g) for g in ex.answers) for ex in examples]
    f1 = [max(helpers.f1_score(preds[ex.qid], g) for g in ex.answers) for ex in examples]
    expected_em = 100.0 * sum(em) / len(examples)
    expected_f1 = 100.0 * sum(f1) / len(examples)

    scores = squad_scores(preds, examples)
    assert 0.0 < expected_em < 100.0 and 0.0 < expected_f1 < 100.0  # the sample is not degenerate
    assert scores["exact_match"] == pytest.approx(expected_em, abs=1e-9)
    assert scores["f1"] == pytest.approx(expected_f1, abs=1e-9)
