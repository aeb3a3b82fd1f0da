"""Serving answers with a chosen length configuration: a stand-in for the removed QA pipeline.

transformers 5 dropped the ``question-answering`` pipeline, and the Dynamic-TinyBERT model
card's ``encode_plus`` snippet no longer runs, so a user who picked a configuration with
``choose`` had no way to ask the model a question with it. :class:`Answerer` closes that gap
with the suite's own pieces: the SQuAD windowing of :mod:`bench.features`, the length-adaptive
forward of :mod:`bench.adaptive` and the n-best span search of :mod:`bench.postprocess`. The
answers are therefore exactly the ones ``python -m bench eval`` scores.

Each result has the transformers 4 pipeline's shape, ``{"answer", "score", "start", "end"}``.
``score`` is defined as follows. ``predict_answers`` picks the span: the highest
start-logit + end-logit sum over all windows ("features") of the question. In the window that
span came from, let C be the set of context tokens (question, special and padding tokens are
excluded). Then

    score = softmax(start_logits[C])[s] * softmax(end_logits[C])[e]

with ``s``/``e`` the span's start/end tokens: the span's probability under independent start
and end distributions over that window's context. The transformers 4 pipeline computed the
same product, except that its softmax also counted the [CLS] token (whose probability it then
zeroed), so for the same logits its score is lower by that [CLS] mass; it also chose among
windows by probability rather than by logit sum.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from bench.adaptive import LengthAdaptiveQA
from bench.config import LengthConfig, resolve_config
from bench.errors import UserError
from bench.features import DOC_STRIDE, MAX_LENGTH, Features, build_features, collate, length_sorted_batches
from bench.model_io import load_qa_model, load_tokenizer
from bench.runner import batched_logits
from bench.squad import Example

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class Answerer:
    """Answers questions about contexts with a ``*ForQuestionAnswering`` model and a length configuration.

    ``model`` is a local folder or hub id, or an already loaded model (then ``tokenizer`` is
    required, as an object or a folder/hub id). ``config`` is None (keep every token), a
    :class:`LengthConfig`, a JSON file written by the suite (a bare configuration or one held
    under "config", as ``choose`` writes it), or an inline spec such as ``ratios:1,0.5,0.5,0.25``.
    """

    def __init__(
        self,
        model: str | Path | PreTrainedModel,
        config: LengthConfig | str | Path | None = None,
        tokenizer=None,
        batch_size: int = 16,
        max_length: int = MAX_LENGTH,
        stride: int = DOC_STRIDE,
        max_answer_length: int = 30,
        n_best: int = 20,
    ):
        _check_positive(
            batch_size=batch_size, max_length=max_length, max_answer_length=max_answer_length, n_best=n_best
        )
        if not 0 <= stride < max_length:
            raise UserError(f"stride must be between 0 and max_length - 1 ({max_length - 1}), got {stride}")
        self.model, self.tokenizer, self.model_name = _load(model, tokenizer)
        self.adaptive = LengthAdaptiveQA(self.model)
        self.config = _resolve(config, self.adaptive.num_layers, self.model_name)
        _check_max_length(self.model, max_length)
        self.batch_size = batch_size
        self.max_length = max_length
        self.stride = stride
        self.max_answer_length = max_answer_length
        self.n_best = n_best
        self.pad_id = self.tokenizer.pad_token_id or 0

    @property
    def num_layers(self) -> int:
        return self.adaptive.num_layers

    def __call__(self, question: str | Sequence[str], context: str | Sequence[str]) -> dict | list[dict]:
        """One dict for a single question/context pair, a list of dicts for parallel lists."""
        questions, contexts, single = _as_pairs(question, context)
        results = self.answer_many(questions, contexts)
        return results[0] if single else results

    def answer_many(self, questions: Sequence[str], contexts: Sequence[str]) -> list[dict]:
        """All pairs go through the model together, so windows of different questions share batches."""
        examples = [Example(str(i), "", c, q, (), ()) for i, (q, c) in enumerate(zip(questions, contexts))]
        if not examples:
            return []
        self._check_question_lengths(examples)
        feats = build_features(examples, self.tokenizer, self.max_length, self.stride)
        starts, ends = self._logits(feats)
        from bench.postprocess import predict_answers

        picked = predict_answers(examples, feats, starts, ends, self.n_best, self.max_answer_length)
        windows = _windows_by_example(feats, len(examples))
        return [self._result(ex, picked[ex.qid], feats, windows[i], starts, ends) for i, ex in enumerate(examples)]

    def _check_question_lengths(self, examples: Sequence[Example]) -> None:
        """The fast tokenizer aborts the process (a Rust panic, not an exception) on a question that leaves no room for the stride."""
        specials = self.tokenizer.num_special_tokens_to_add(pair=True)
        limit = self.max_length - specials - self.stride - 1
        for i, ex in enumerate(examples):
            n = len(self.tokenizer(ex.question.lstrip(), add_special_tokens=False)["input_ids"])
            if n > limit:
                raise UserError(
                    f"question {i} is {n} tokens long; with max_length {self.max_length} and stride {self.stride} "
                    f"a question may have at most {limit} tokens"
                )

    def _logits(self, feats: Features) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per-window start/end logits over each window's unpadded length, batched by similar length."""
        device = next(self.model.parameters()).device
        batches = (
            (idx, collate(feats, idx, self.pad_id)) for idx in length_sorted_batches(feats.lengths, self.batch_size)
        )
        with _eval_mode(self.model):
            starts, ends, _ = batched_logits(self.adaptive, feats, batches, self.config, device)
        return starts, ends

    def _result(
        self,
        example: Example,
        picked: dict,
        feats: Features,
        windows: Sequence[int],
        starts: Sequence[np.ndarray],
        ends: Sequence[np.ndarray],
    ) -> dict:
        if not np.isfinite(picked["score"]):
            # No valid span: the context produced no tokens (e.g. only characters the tokenizer drops).
            return {"answer": "", "score": 0.0, "start": 0, "end": 0}
        found = _locate(picked, feats, windows, starts, ends, self.max_answer_length)
        score = _span_probability(feats.offsets[found[0]], starts[found[0]], ends[found[0]], found[1], found[2])
        start, end = int(picked["start"]), int(picked["end"])
        return {"answer": example.context[start:end], "score": score, "start": start, "end": end}


# --- loading ---------------------------------------------------------------------------------
def _load(model, tokenizer) -> tuple[torch.nn.Module, object, str]:
    """(model, tokenizer, a name for messages) from a folder/hub id or from objects."""
    if isinstance(model, (str, Path)):
        name = str(model)
        loaded = load_qa_model(name)
        tok = tokenizer if tokenizer is not None else name
    else:
        if not isinstance(model, torch.nn.Module):
            raise UserError(f"model must be a folder, a hub id or a loaded model, got {type(model).__name__}")
        if tokenizer is None:
            raise UserError("a model object needs its tokenizer: pass tokenizer=... (an object or a folder/hub id)")
        name, loaded, tok = type(model).__name__, model, tokenizer
    if isinstance(tok, (str, Path)):
        tok = load_tokenizer(str(tok))
    if not getattr(tok, "is_fast", False):
        raise UserError("answers need a fast tokenizer (character offsets); load it with AutoTokenizer")
    return loaded, tok, name


def _resolve(config: LengthConfig | str | Path | None, num_layers: int, model_name: str) -> LengthConfig:
    if config is None:
        resolved = LengthConfig.keep_all(num_layers)
    elif isinstance(config, LengthConfig):
        resolved = config
    elif isinstance(config, Path):
        resolved = LengthConfig.load(config)
    elif isinstance(config, str):
        resolved = resolve_config(config, num_layers)
    else:
        raise UserError(f"config must be a LengthConfig, a JSON file or an inline spec, got {type(config).__name__}")
    resolved.check_layers(num_layers, model_name)
    return resolved


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{name} must be a whole number of at least 1, got {value!r}")


def _check_max_length(model: torch.nn.Module, max_length: int) -> None:
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and max_length > limit:
        raise UserError(f"max_length {max_length} exceeds the model's {limit} position embeddings")


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Dropout would make answers random; the caller's training/eval mode is put back afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# --- inputs and results --------------------------------------------------------------------
def _as_pairs(question, context) -> tuple[list[str], list[str], bool]:
    """Normalise to parallel lists, rejecting what the old pipeline rejected (empty text, mismatched lists)."""
    single = isinstance(question, str) and isinstance(context, str)
    if single:
        questions, contexts = [question], [context]
    elif isinstance(question, str) or isinstance(context, str):
        raise UserError("give question and context both as strings or both as lists")
    else:
        questions, contexts = list(question), list(context)
        if len(questions) != len(contexts):
            raise UserError(f"{len(questions)} questions but {len(contexts)} contexts; give one context per question")
    for kind, texts in (("question", questions), ("context", contexts)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise UserError(f"{kind} {i} is a {type(text).__name__}, not a string")
            if not text.strip():
                raise UserError(f"{kind} {i} is empty")
    return questions, contexts, single


def _windows_by_example(feats: Features, n_examples: int) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(n_examples)]
    for f, ex in enumerate(feats.example_index):
        out[ex].append(f)
    return out


def _locate(
    picked: dict,
    feats: Features,
    windows: Sequence[int],
    starts: Sequence[np.ndarray],
    ends: Sequence[np.ndarray],
    max_answer_length: int,
) -> tuple[int, int, int]:
    """(window, start token, end token) of the span ``predict_answers`` chose.

    It reports characters only; overlapping windows can hold the same span, so the window is
    the one whose logit sum reproduces the reported score (earliest on ties, as it breaks them).
    """
    best: tuple[float, int, int, int] | None = None
    for f in windows:
        offsets = feats.offsets[f]
        s_cand = [t for t, o in enumerate(offsets) if o is not None and o[0] == picked["start"]]
        e_cand = [t for t, o in enumerate(offsets) if o is not None and o[1] == picked["end"]]
        for s in s_cand:
            for e in e_cand:
                if not 0 <= e - s < max_answer_length:
                    continue
                gap = abs(float(np.float32(starts[f][s]) + np.float32(ends[f][e])) - picked["score"])
                if best is None or gap < best[0]:
                    best = (gap, f, s, e)
    if best is None:
        raise RuntimeError(f"span {picked['start']}:{picked['end']} matches no window's tokens")
    return best[1], best[2], best[3]


def _span_probability(offsets: Sequence, start_logits: np.ndarray, end_logits: np.ndarray, s: int, e: int) -> float:
    """Softmax over the window's context tokens only, for start and end separately; their product."""
    context = np.array([t for t, o in enumerate(offsets) if o is not None])
    return float(np.exp(_log_softmax_at(start_logits, context, s) + _log_softmax_at(end_logits, context, e)))


def _log_softmax_at(logits: np.ndarray, context: np.ndarray, token: int) -> float:
    values = logits[context].astype(np.float64)
    top = values.max()
    return float(logits[token] - top - np.log(np.exp(values - top).sum()))
