"""From start/end logits to answer strings: the SQuAD v1.1 n-best span search.

A search scores the same 10k questions for many configurations, so the span search is
vectorised over features: top-n candidates per feature with ``argpartition``, all n x n pairs
scored at once, and the best feature per question picked with one sort. Python only touches
the n_best candidate positions of each feature and the one winning span per question.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Union

import numpy as np

from dynlen.bench.features import Features
from dynlen.bench.squad import Example
from dynlen.errors import UserError

if TYPE_CHECKING:
    import torch

Logits = Union[np.ndarray, "torch.Tensor"]

# Features scored per vectorised step; bounds the (chunk, n_best, n_best) pair arrays.
_CHUNK = 4096


def _as_numpy(logits: Logits) -> np.ndarray:
    """Accept torch tensors (any device or dtype, e.g. fp16 on a GPU) as well as arrays, without importing torch."""
    if hasattr(logits, "detach"):
        logits = logits.detach().float().cpu().numpy()
    return np.asarray(logits, dtype=np.float32).reshape(-1)


def _stack(logits: Sequence[Logits], lengths: Sequence[int], first: int) -> np.ndarray:
    """One (features, longest) array padded with -inf, so padding can never win a top-n slot."""
    width = max(lengths, default=1) or 1
    out = np.full((len(lengths), width), -np.inf, dtype=np.float32)
    for row, (item, length) in enumerate(zip(logits, lengths)):
        values = _as_numpy(item)
        if values.shape[0] < length:
            raise ValueError(
                f"feature {first + row} has {length} tokens but only {values.shape[0]} logits; "
                "logits must cover each feature's unpadded length"
            )
        out[row, :length] = values[:length]
    return out


def _top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n largest entries per row, best first (ties keep the lower index)."""
    k = min(n, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    picked = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -picked), axis=1)
    return np.take_along_axis(part, order, axis=1)


def _in_context(offsets: Sequence[Sequence], rows: range, idx: np.ndarray) -> np.ndarray:
    """Whether each candidate index is a context token; only n_best positions per feature are looked up."""
    mask = np.zeros(idx.shape, dtype=bool)
    for r, (offs, cand) in enumerate(zip(offsets[rows.start : rows.stop], idx.tolist())):
        n_tok = len(offs)
        mask[r] = [i < n_tok and offs[i] is not None for i in cand]
    return mask


def _best_per_feature(
    start: np.ndarray, end: np.ndarray, offsets: Sequence[Sequence], rows: range, n_best: int, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, start token, end token) of each feature's best valid span; score -inf when none is valid."""
    s_idx = _top_n(start, n_best)
    e_idx = _top_n(end, n_best)
    s_val = np.take_along_axis(start, s_idx, axis=1)
    e_val = np.take_along_axis(end, e_idx, axis=1)
    width = e_idx[:, None, :] - s_idx[:, :, None] + 1
    in_ctx = _in_context(offsets, rows, np.concatenate([s_idx, e_idx], axis=1))
    k_start = s_idx.shape[1]
    valid = in_ctx[:, :k_start, None] & in_ctx[:, None, k_start:] & (width >= 1) & (width <= max_len)
    pair = np.where(valid, s_val[:, :, None] + e_val[:, None, :], -np.inf)
    flat = pair.reshape(len(pair), -1)
    best = flat.argmax(axis=1)
    score = flat[np.arange(len(flat)), best]
    k_end = e_idx.shape[1]
    s_tok = np.take_along_axis(s_idx, (best // k_end)[:, None], axis=1)[:, 0]
    e_tok = np.take_along_axis(e_idx, (best % k_end)[:, None], axis=1)[:, 0]
    return score, s_tok, e_tok


def _no_answer() -> dict:
    return {"text": "", "score": float("-inf"), "start": 0, "end": 0}


def _check_inputs(feats: Features, start_logits: Sequence, end_logits: Sequence, n_best: int, max_len: int) -> None:
    if n_best < 1 or max_len < 1:
        raise UserError(f"n_best and max_answer_length must be at least 1, got {n_best} and {max_len}")
    if not (len(start_logits) == len(end_logits) == len(feats)):
        raise ValueError(f"{len(feats)} features but {len(start_logits)} start and {len(end_logits)} end logit vectors")
    if len(feats.offsets) != len(feats):
        raise ValueError("features carry no offsets; build them with bench.features.build_features")


def best_feature_spans(
    feats: Features,
    start_logits: Sequence[Logits],
    end_logits: Sequence[Logits],
    n_best: int = 20,
    max_answer_length: int = 30,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, start token, end token) of every feature's best valid span; score -inf when none is valid.

    The per-feature half of :func:`predict_answers`, for callers that need token positions (e.g.
    to keep a model's own answer tokens in a benchmark) rather than answer strings.
    """
    _check_inputs(feats, start_logits, end_logits, n_best, max_answer_length)
    lengths = [len(o) for o in feats.offsets]
    scores = np.full(len(feats), -np.inf, dtype=np.float32)
    s_tok = np.zeros(len(feats), dtype=np.int64)
    e_tok = np.zeros(len(feats), dtype=np.int64)
    for lo in range(0, len(feats), _CHUNK):
        rows = range(lo, min(lo + _CHUNK, len(feats)))
        start = _stack(start_logits[lo : rows.stop], lengths[lo : rows.stop], lo)
        end = _stack(end_logits[lo : rows.stop], lengths[lo : rows.stop], lo)
        scores[lo : rows.stop], s_tok[lo : rows.stop], e_tok[lo : rows.stop] = _best_per_feature(
            start, end, feats.offsets, rows, n_best, max_answer_length
        )
    return scores, s_tok, e_tok


def predict_answers(
    examples: Sequence[Example],
    feats: Features,
    start_logits: Sequence[Logits],
    end_logits: Sequence[Logits],
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, dict]:
    """Best answer span per question, as ``{"text", "score", "start", "end"}`` with character offsets.

    Follows the SQuAD v1.1 reference post-processing: candidates are the n_best start and
    n_best end positions of each feature; spans outside the context, reversed, or longer than
    ``max_answer_length`` tokens are dropped; the highest start+end logit over all features of
    a question wins. A question with no valid span gets an empty answer scored -inf.
    """
    scores, s_tok, e_tok = best_feature_spans(feats, start_logits, end_logits, n_best, max_answer_length)
    return _pick_per_example(examples, feats, scores, s_tok, e_tok)


def _pick_per_example(
    examples: Sequence[Example], feats: Features, scores: np.ndarray, s_tok: np.ndarray, e_tok: np.ndarray
) -> dict[str, dict]:
    """Keep each question's best feature (earliest on ties) and map its span back to characters."""
    answers = {ex.qid: _no_answer() for ex in examples}
    if len(feats) == 0:
        return answers
    ex_idx = np.asarray(feats.example_index, dtype=np.int64)
    order = np.lexsort((np.arange(len(ex_idx)), -scores, ex_idx))
    first = np.ones(len(order), dtype=bool)
    first[1:] = ex_idx[order][1:] != ex_idx[order][:-1]
    for f in order[first].tolist():
        if not np.isfinite(scores[f]):
            continue
        ex = examples[ex_idx[f]]
        char_start = feats.offsets[f][s_tok[f]][0]
        char_end = feats.offsets[f][e_tok[f]][1]
        answers[ex.qid] = {
            "text": ex.context[char_start:char_end],
            "score": float(scores[f]),
            "start": int(char_start),
            "end": int(char_end),
        }
    return answers


def answers_to_predictions(answers: dict[str, dict]) -> dict[str, str]:
    """The official ``predictions.json`` layout (qid -> answer text) expected by SQuAD scorers."""
    return {qid: answer["text"] for qid, answer in answers.items()}
