"""Per-question F1 and the paired bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest

from dynlen.bench.scoring import squad_scores
from dynlen.bench.squad import Example
from dynlen.bench.uncertainty import paired_interval, per_question_f1


def _examples():
    return [
        Example("a", "t", "ctx", "q", ("the black cat",), (0,)),
        Example("b", "t", "ctx", "q", ("green", "green eyes"), (0, 0)),
        Example("c", "t", "ctx", "q", ("north",), (0,)),
    ]


def test_per_question_f1_averages_to_the_official_score():
    predictions = {"a": "black cat", "b": "eyes", "c": "south"}
    f1 = per_question_f1(predictions, _examples())
    assert f1.tolist() == pytest.approx([100.0, 200 / 3, 0.0])
    assert f1.mean() == pytest.approx(squad_scores(predictions, _examples())["f1"])


def test_identical_scores_have_a_zero_interval_and_a_shift_is_inside():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0, 100, 400)
    assert paired_interval(reference, reference) == (0.0, 0.0)
    worse = reference.copy()
    worse[:40] = 0.0  # 10% of the questions lost
    low, high = paired_interval(worse, reference)
    true = worse.mean() - reference.mean()
    assert low < true < high < 0
    assert paired_interval(worse, reference) == (low, high)  # seeded: reproducible


def test_more_questions_narrow_the_interval():
    rng = np.random.default_rng(1)
    widths = []
    for n in (200, 3200):
        ref = rng.uniform(0, 100, n)
        other = np.where(rng.random(n) < 0.1, 0.0, ref)
        low, high = paired_interval(other, ref)
        widths.append(high - low)
    assert widths[1] < widths[0] / 2
