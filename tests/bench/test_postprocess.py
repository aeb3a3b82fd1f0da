"""Span search from logits, on hand-built features whose best answer is known in advance."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from dynlen.bench.features import Features
from dynlen.bench.postprocess import answers_to_predictions, best_feature_spans, predict_answers
from dynlen.bench.squad import Example

N_QUESTION = 3  # [CLS] q q q [SEP] context ... [SEP]
PREFIX = 1 + N_QUESTION + 1


def _example(qid: str, context: str) -> Example:
    return Example(qid, "T", context, "what?", ("x",), (0,))


def _word_offsets(context: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(r"\S+", context)]


def _offsets(context_offsets: list[tuple[int, int]]) -> list[tuple[int, int] | None]:
    """A feature's offsets: special and question tokens have None, context tokens their char span."""
    return [None] * PREFIX + list(context_offsets) + [None]


def _features(offsets: list[list], example_index: list[int]) -> Features:
    ids = [[7] * len(o) for o in offsets]
    return Features(ids, [[0] * len(o) for o in offsets], list(example_index), offsets)


def _logits(n: int, peaks: dict[int, float]) -> np.ndarray:
    out = np.zeros(n, dtype=np.float32)
    for pos, value in peaks.items():
        out[pos] = value
    return out


CONTEXT = "alpha beta gamma delta epsilon zeta"
# char spans: alpha 0-5, beta 6-10, gamma 11-16, delta 17-22, epsilon 23-30, zeta 31-35


def test_known_span_and_char_mapping():
    offs = _offsets(_word_offsets(CONTEXT))
    feats = _features([offs], [0])
    start = _logits(len(offs), {PREFIX + 2: 6.0})  # gamma
    end = _logits(len(offs), {PREFIX + 3: 4.0})  # delta
    answers = predict_answers([_example("q", CONTEXT)], feats, [start], [end])
    assert answers["q"] == {"text": "gamma delta", "score": pytest.approx(10.0), "start": 11, "end": 22}
    assert CONTEXT[answers["q"]["start"] : answers["q"]["end"]] == "gamma delta"


def test_best_feature_spans_gives_each_features_tokens_and_no_span_as_minus_inf():
    offs = _offsets(_word_offsets(CONTEXT))
    feats = _features([offs, offs], [0, 1])
    first = (_logits(len(offs), {PREFIX + 2: 6.0}), _logits(len(offs), {PREFIX + 3: 4.0}))  # gamma delta
    # the second feature's only strong candidates lie in the question: no context span beats the rest,
    # and with n_best 1 nothing valid is left
    second = (_logits(len(offs), {1: 9.0}), _logits(len(offs), {2: 9.0}))
    scores, s_tok, e_tok = best_feature_spans(feats, [first[0], second[0]], [first[1], second[1]], n_best=1)
    assert (s_tok[0], e_tok[0]) == (PREFIX + 2, PREFIX + 3)
    assert scores[0] == pytest.approx(10.0)
    assert scores[1] == -np.inf


def test_end_before_start_is_never_chosen():
    offs = _offsets(_word_offsets(CONTEXT))
    feats = _features([offs], [0])
    # best raw pair is start=epsilon(10) with end=beta(9): reversed, so skipped.
    # valid pairs: (beta, beta) = 3 + 9 = 12; (epsilon, zeta) = 10 + 1 = 11 -> beta wins
    start = _logits(len(offs), {PREFIX + 4: 10.0, PREFIX + 1: 3.0})
    end = _logits(len(offs), {PREFIX + 1: 9.0, PREFIX + 5: 1.0})
    answer = predict_answers([_example("q", CONTEXT)], feats, [start], [end])["q"]
    assert answer["text"] == "beta"
    assert answer["score"] == pytest.approx(12.0)
    assert (answer["start"], answer["end"]) == (6, 10)
    assert answer["start"] <= answer["end"]


def test_question_and_special_tokens_are_never_chosen_even_with_top_logits():
    offs = _offsets(_word_offsets(CONTEXT))
    feats = _features([offs], [0])
    n = len(offs)
    start = _logits(n, {0: 100.0, 1: 90.0, 2: 80.0, PREFIX + 1: 2.0})
    end = _logits(n, {0: 100.0, n - 1: 95.0, PREFIX - 1: 85.0, PREFIX + 2: 1.0})
    answer = predict_answers([_example("q", CONTEXT)], feats, [start], [end])["q"]
    assert answer["text"] == "beta gamma"
    assert answer["score"] == pytest.approx(3.0)


def test_no_valid_span_gives_empty_answer():
    offs = _offsets(_word_offsets(CONTEXT))
    feats = _features([offs], [0])
    # with n_best=1 the only start candidate is [CLS]: nothing valid remains
    start = _logits(len(offs), {0: 50.0, PREFIX: 1.0})
    end = _logits(len(offs), {PREFIX: 1.0})
    answer = predict_answers([_example("q", CONTEXT)], feats, [start], [end], n_best=1)["q"]
    assert answer["text"] == "" and answer["score"] == -math.inf
    assert (answer["start"], answer["end"]) == (0, 0)
    # with the default n_best the context start is a candidate again
    answer = predict_answers([_example("q", CONTEXT)], feats, [start], [end])["q"]
    assert answer["text"] == "alpha"


def test_answer_length_cap_in_tokens():
    context = " ".join(f"w{i}" for i in range(40))
    offs = _offsets(_word_offsets(context))
    feats = _features([offs], [0])
    start = _logits(len(offs), {PREFIX: 10.0})  # w0
    # w0..w29 is 30 tokens (allowed at 30); w0..w30 is 31 tokens and scores higher
    end = _logits(len(offs), {PREFIX + 29: 5.0, PREFIX + 30: 9.0})
    ex = [_example("q", context)]
    capped = predict_answers(ex, feats, [start], [end])["q"]
    assert capped["text"] == " ".join(f"w{i}" for i in range(30))
    assert capped["score"] == pytest.approx(15.0)
    longer = predict_answers(ex, feats, [start], [end], max_answer_length=31)["q"]
    assert longer["text"] == " ".join(f"w{i}" for i in range(31))
    assert longer["score"] == pytest.approx(19.0)
    single = predict_answers(ex, feats, [start], [end], max_answer_length=1)["q"]
    assert single["text"] == "w0"


def test_best_span_across_overlapping_features_wins():
    words = _word_offsets(CONTEXT)
    first = _offsets(words[:4])  # alpha beta gamma delta
    second = _offsets(words[2:])  # gamma delta epsilon zeta (overlaps on gamma delta)
    other_ctx = "one two three"
    other = _offsets(_word_offsets(other_ctx))
    feats = _features([first, second, other], [0, 0, 1])
    examples = [_example("q0", CONTEXT), _example("q1", other_ctx)]

    s0 = _logits(len(first), {PREFIX + 1: 4.0})  # beta, score 4 + 4 = 8
    e0 = _logits(len(first), {PREFIX + 1: 4.0})
    s1 = _logits(len(second), {PREFIX + 2: 5.0})  # epsilon..zeta in the second window, 5 + 6 = 11
    e1 = _logits(len(second), {PREFIX + 3: 6.0})
    s2 = _logits(len(other), {PREFIX + 2: 20.0})  # a higher score on another question must not leak
    e2 = _logits(len(other), {PREFIX + 2: 20.0})

    answers = predict_answers(examples, feats, [s0, s1, s2], [e0, e1, e2])
    assert answers["q0"] == {"text": "epsilon zeta", "score": pytest.approx(11.0), "start": 23, "end": 35}
    assert answers["q1"] == {"text": "three", "score": pytest.approx(40.0), "start": 8, "end": 13}

    # make the first window's span the better one
    s0 = _logits(len(first), {PREFIX + 1: 8.0})  # beta now 8 + 4 = 12 > 11
    answers = predict_answers(examples, feats, [s0, s1, s2], [e0, e1, e2])
    assert answers["q0"] == {"text": "beta", "score": pytest.approx(12.0), "start": 6, "end": 10}


def test_accepts_torch_tensors_and_unordered_features():
    words = _word_offsets(CONTEXT)
    offs = _offsets(words)
    feats = _features([offs, offs], [1, 0])
    examples = [_example("a", CONTEXT), _example("b", CONTEXT)]
    starts = [torch.tensor(_logits(len(offs), {PREFIX + 5: 1.0})), torch.tensor(_logits(len(offs), {PREFIX: 1.0}))]
    ends = [torch.tensor(_logits(len(offs), {PREFIX + 5: 1.0})), torch.tensor(_logits(len(offs), {PREFIX + 1: 1.0}))]
    answers = predict_answers(examples, feats, starts, ends)
    assert answers["b"]["text"] == "zeta"  # feature 0 belongs to example 1
    assert answers["a"]["text"] == "alpha beta"


def test_question_without_features_gets_empty_answer():
    offs = _offsets(_word_offsets(CONTEXT))
    feats = _features([offs], [0])
    logits = _logits(len(offs), {PREFIX: 1.0})
    answers = predict_answers([_example("a", CONTEXT), _example("b", CONTEXT)], feats, [logits], [logits])
    assert answers["a"]["text"] == "alpha"
    assert answers["b"] == {"text": "", "score": -math.inf, "start": 0, "end": 0}


def test_mismatched_logit_count_is_rejected():
    offs = _offsets(_word_offsets(CONTEXT))
    feats = _features([offs], [0])
    with pytest.raises(ValueError):
        predict_answers([_example("q", CONTEXT)], feats, [], [])


def test_answers_to_predictions():
    answers = {
        "a": {"text": "x y", "score": 1.0, "start": 0, "end": 3},
        "b": {"text": "", "score": -math.inf, "start": 0, "end": 0},
    }
    assert answers_to_predictions(answers) == {"a": "x y", "b": ""}


def _reference(examples, feats, starts, ends, n_best, max_len):
    """A plain loop over candidate pairs, written independently of the vectorised version."""
    best: dict[int, tuple[float, int, int, int]] = {}
    for f, (s, e) in enumerate(zip(starts, ends)):
        offs = feats.offsets[f]
        s_top = sorted(range(len(s)), key=lambda i: -s[i])[:n_best]
        e_top = sorted(range(len(e)), key=lambda i: -e[i])[:n_best]
        for i in s_top:
            for j in e_top:
                if offs[i] is None or offs[j] is None or j < i or j - i + 1 > max_len:
                    continue
                score = float(s[i] + e[j])
                ex = feats.example_index[f]
                if ex not in best or score > best[ex][0]:
                    best[ex] = (score, f, i, j)
    out = {}
    for k, ex in enumerate(examples):
        if k not in best:
            out[ex.qid] = ("", -math.inf)
            continue
        score, f, i, j = best[k]
        out[ex.qid] = (ex.context[feats.offsets[f][i][0] : feats.offsets[f][j][1]], score)
    return out


def test_matches_a_plain_loop_on_random_features():
    rng = np.random.default_rng(7)
    examples, offsets, ex_index, starts, ends = [], [], [], [], []
    for k in range(40):
        n_words = int(rng.integers(1, 60))
        context = " ".join(f"t{k}_{i}" for i in range(n_words))
        examples.append(_example(f"q{k}", context))
        words = _word_offsets(context)
        for lo in range(0, n_words, 25):  # windows of 35 words with stride 25: overlapping
            offs = _offsets(words[lo : lo + 35])
            offsets.append(offs)
            ex_index.append(k)
            starts.append(rng.standard_normal(len(offs)).astype(np.float32))
            ends.append(rng.standard_normal(len(offs)).astype(np.float32))
    feats = _features(offsets, ex_index)
    for n_best, max_len in [(20, 30), (5, 4), (50, 30), (3, 1)]:
        got = predict_answers(examples, feats, starts, ends, n_best=n_best, max_answer_length=max_len)
        want = _reference(examples, feats, starts, ends, n_best, max_len)
        for qid, (text, score) in want.items():
            assert got[qid]["text"] == text, (n_best, max_len, qid)
            assert got[qid]["score"] == pytest.approx(score, abs=1e-5)
