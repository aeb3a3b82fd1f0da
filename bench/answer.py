"""Serving answers with a chosen length configuration: a stand-in for the removed QA pipeline.

transformers 5 dropped the ``question-answering`` pipeline, and the Dynamic-TinyBERT model
card's ``encode_plus`` snippet no longer runs, so a user who picked a configuration with
``choose`` had no way to ask the model a question with it. :class:`Answerer` closes that gap
with the suite's own pieces: the SQuAD windowing of :mod:`bench.features`, the length-adaptive
forward of :mod:`dynlen.engine.adaptive` and the n-best span search of :mod:`bench.postprocess`. The
answers are therefore exactly the ones ``dynlen eval`` scores.

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

Calls accept what the transformers 4 pipeline accepted, so code written against it runs
unchanged: ``qa(question, context)``, ``qa(question=..., context=...)``, ``qa({"question": ...,
"context": ...})``, a list of such dicts, and the keywords ``top_k``, ``handle_impossible_answer``,
``max_question_len``, ``doc_stride``, ``max_answer_len``, ``max_seq_len`` (``stride``,
``max_answer_length`` and ``max_length`` are the same settings under this project's names). Two
defaults differ from the pipeline's and are kept for compatibility with this project's earlier
answers: ``max_answer_len`` 30 (pipeline: 15) and ``max_question_len`` None, no truncation
(pipeline: 64). A list of one input gives a list of one result (the pipeline unwrapped it).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from dynlen.bench.device import resolve_device
from dynlen.bench.features import DOC_STRIDE, MAX_LENGTH, Features, build_features, collate, length_sorted_batches
from dynlen.bench.inference import batched_logits
from dynlen.bench.model_io import DEFAULT_MODEL_DIR, check_vocabulary_fits, load_qa_model, load_tokenizer
from dynlen.bench.squad import Example
from dynlen.engine.adaptive import LengthAdaptiveQA
from dynlen.engine.config import LengthConfig, resolve_config
from dynlen.errors import UserError
from dynlen.options import int_at_least, option

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class Answerer:
    """Answers questions about contexts with a ``*ForQuestionAnswering`` model and a length configuration.

    ``model`` is a local folder or hub id, or an already loaded model (then ``tokenizer`` is
    required, as an object or a folder/hub id); None serves the model a ``choose`` output given as
    ``config`` records, else the default model. ``config`` is None (keep every token), a
    :class:`LengthConfig`, a JSON file written by the suite (a bare configuration or one held
    under "config", as ``choose`` writes it), or an inline spec such as ``ratios:1,0.5,0.5,0.25``.
    """

    def __init__(
        self,
        model: str | Path | PreTrainedModel | None = None,
        config: LengthConfig | str | Path | None = None,
        tokenizer=None,
        batch_size: int = 16,
        max_length: int | None = None,
        stride: int | None = None,
        max_answer_length: int | None = None,
        n_best: int = 20,
        *,
        device: str | int | torch.device | None = None,
        top_k: int = 1,
        handle_impossible_answer: bool = False,
        max_question_len: int | None = None,
        doc_stride: int | None = None,
        max_answer_len: int | None = None,
        max_seq_len: int | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        dtype=None,
        token: str | bool | None = None,
    ):
        """``device``: None leaves the model where it is (a model loaded by name: the CPU), else
        "cpu", "cuda", "cuda:1", "auto" or the pipeline's integers (-1 the CPU, n the n-th GPU).
        ``revision``, ``trust_remote_code``, ``dtype`` and ``token`` (default: ``HF_TOKEN``) load
        a model given by name, as ``from_pretrained`` does. The pipeline's per-call keywords
        given here become this answerer's defaults.
        """
        settings = AnswerSettings(
            max_length=_either("max_length", max_length, "max_seq_len", max_seq_len, MAX_LENGTH),
            stride=_either("stride", stride, "doc_stride", doc_stride, DOC_STRIDE),
            max_answer_length=_either("max_answer_length", max_answer_length, "max_answer_len", max_answer_len, 30),
            top_k=top_k,
            handle_impossible_answer=handle_impossible_answer,
            max_question_len=max_question_len,
        )
        _check_positive(batch_size=batch_size, n_best=n_best)
        settings.check()
        hub = {"revision": revision, "trust_remote_code": trust_remote_code, "token": token}
        if model is None:
            model = model_of(config)
        self.model, self.tokenizer, self.model_name = _load(model, tokenizer, hub, dtype)
        if device is not None:
            self.model.to(_pipeline_device(device))
        self.adaptive = LengthAdaptiveQA(self.model, sep_token_id=self.tokenizer.sep_token_id)
        self.config = _resolve(config, self.adaptive.num_layers, self.model_name, self.model)
        _check_max_length(self.model, settings.max_length)
        self.batch_size = batch_size
        self.settings = settings
        self.n_best = n_best
        self.pad_id = self.tokenizer.pad_token_id or 0

    # The settings under their old attribute names, which callers may read.
    @property
    def max_length(self) -> int:
        return self.settings.max_length

    @property
    def stride(self) -> int:
        return self.settings.stride

    @property
    def max_answer_length(self) -> int:
        return self.settings.max_answer_length

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def num_layers(self) -> int:
        return self.adaptive.num_layers

    def __call__(self, *args, **kwargs) -> dict | list:
        """Answers in the pipeline's shapes.

        One question/context pair gives one dict (a list of ``top_k`` dicts when ``top_k`` > 1);
        parallel lists, or a list of ``{"question", "context"}`` dicts, give a list of those.
        Keywords: ``top_k``, ``handle_impossible_answer``, ``max_question_len``,
        ``doc_stride``/``stride``, ``max_answer_len``/``max_answer_length``, ``max_seq_len``/``max_length``
        for this call only; ``align_to_words`` and ``padding`` are accepted and have no effect
        (answers always start and end on token boundaries; windows are never padded).
        """
        questions, contexts, single, options = _parse_call(args, kwargs)
        settings = self.settings.updated(options)
        if settings.max_length != self.settings.max_length:
            _check_max_length(self.model, settings.max_length)
        results = self._answer(questions, contexts, settings)
        return results[0] if single else results

    def answer_many(self, questions: Sequence[str], contexts: Sequence[str]) -> list[dict]:
        """All pairs go through the model together, so windows of different questions share batches."""
        return self._answer(list(questions), list(contexts), self.settings)

    def _answer(self, questions: Sequence[str], contexts: Sequence[str], settings: AnswerSettings) -> list:
        examples = [Example(str(i), "", c, q, (), ()) for i, (q, c) in enumerate(zip(questions, contexts))]
        if not examples:
            return []
        if settings.max_question_len is not None:
            examples = [replace(ex, question=self._truncate_question(ex.question, settings)) for ex in examples]
        self._check_question_lengths(examples, settings)
        feats = build_features(examples, self.tokenizer, settings.max_length, settings.stride)
        starts, ends = self._logits(feats)
        windows = _windows_by_example(feats, len(examples))
        if settings.top_k == 1 and not settings.handle_impossible_answer:
            from dynlen.bench.postprocess import predict_answers

            picked = predict_answers(examples, feats, starts, ends, self.n_best, settings.max_answer_length)
            return [
                self._result(ex, picked[ex.qid], feats, windows[i], starts, ends, settings)
                for i, ex in enumerate(examples)
            ]
        out = []
        for i, ex in enumerate(examples):
            ranked = _ranked_answers(ex, feats, windows[i], starts, ends, self.n_best, settings)
            out.append(ranked[0] if settings.top_k == 1 else ranked)
        return out

    def _truncate_question(self, question: str, settings: AnswerSettings) -> str:
        """The question cut after its first ``max_question_len`` tokens, at a character boundary."""
        text = question.lstrip()
        offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        if len(offsets) <= settings.max_question_len:
            return text
        return text[: offsets[settings.max_question_len - 1][1]]

    def _check_question_lengths(self, examples: Sequence[Example], settings: AnswerSettings) -> None:
        """The fast tokenizer aborts the process (a Rust panic, not an exception) on a question that leaves no room for the stride."""
        specials = self.tokenizer.num_special_tokens_to_add(pair=True)
        limit = settings.max_length - specials - settings.stride - 1
        for i, ex in enumerate(examples):
            n = len(self.tokenizer(ex.question.lstrip(), add_special_tokens=False)["input_ids"])
            if n > limit:
                raise UserError(
                    f"question {i} is {n} tokens long; with max_length {settings.max_length} and stride "
                    f"{settings.stride} a question may have at most {limit} tokens (or pass max_question_len=)"
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
        settings: AnswerSettings,
    ) -> dict:
        if not np.isfinite(picked["score"]):
            # No valid span: the context produced no tokens (e.g. only characters the tokenizer drops).
            return {"answer": "", "score": 0.0, "start": 0, "end": 0}
        found = _locate(picked, feats, windows, starts, ends, settings.max_answer_length)
        score = _span_probability(feats.offsets[found[0]], starts[found[0]], ends[found[0]], found[1], found[2])
        start, end = int(picked["start"]), int(picked["end"])
        return {"answer": example.context[start:end], "score": score, "start": start, "end": end}


# --- loading ---------------------------------------------------------------------------------
def _load(model, tokenizer, hub: dict, dtype) -> tuple[torch.nn.Module, object, str]:
    """(model, tokenizer, a name for messages) from a folder/hub id or from objects."""
    if isinstance(model, (str, Path)):
        name = str(model)
        loaded = load_qa_model(name, dtype=dtype, **hub)
        tok = tokenizer if tokenizer is not None else name
    else:
        if not isinstance(model, torch.nn.Module):
            raise UserError(f"model must be a folder, a hub id or a loaded model, got {type(model).__name__}")
        if tokenizer is None:
            raise UserError("a model object needs its tokenizer: pass tokenizer=... (an object or a folder/hub id)")
        name, loaded, tok = type(model).__name__, model, tokenizer
    if isinstance(tok, (str, Path)):
        tok = load_tokenizer(str(tok), **hub)
    if not getattr(tok, "is_fast", False):
        raise UserError("answers need a fast tokenizer (character offsets); load it with AutoTokenizer")
    check_vocabulary_fits(tok, loaded, name)
    return loaded, tok, name


def _resolve(
    config: LengthConfig | str | Path | None, num_layers: int, model_name: str, model: torch.nn.Module
) -> LengthConfig:
    """The configuration to serve: the argument, else the one an exported folder carries, else keep-all.

    A ``choose`` output records the model it was chosen for; served with other weights or another
    depth it is refused, since its accuracy was measured on that model only.
    """
    if config is None:
        exported = getattr(model.config, "dynlen_length_config", None)
        resolved = LengthConfig.from_dict(exported) if exported else LengthConfig.keep_all(num_layers)
    elif isinstance(config, LengthConfig):
        resolved = config
    elif isinstance(config, (str, Path)) and str(config).endswith(".json") and Path(config).is_file():
        _check_chosen_for(Path(config), model_name, model)
        resolved = LengthConfig.load(config)
    elif isinstance(config, Path):
        resolved = LengthConfig.load(config)
    elif isinstance(config, str):
        resolved = resolve_config(config, num_layers)
    else:
        raise UserError(f"config must be a LengthConfig, a JSON file or an inline spec, got {type(config).__name__}")
    resolved.check_layers(num_layers, model_name)
    return resolved


def chosen_record(config: LengthConfig | str | Path | None) -> dict | None:
    """The ``choose`` output ``config`` names (a JSON file recording its model), or None."""
    import json

    if not isinstance(config, (str, Path)) or not str(config).endswith(".json") or not Path(config).is_file():
        return None
    path = Path(config)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc})") from None
    return record if isinstance(record, dict) and isinstance(record.get("model"), str) else None


def model_of(config: LengthConfig | str | Path | None) -> str:
    """The model to serve when none is named: the one a ``choose`` output records, else the default."""
    record = chosen_record(config)
    return record["model"] if record else DEFAULT_MODEL_DIR


def _check_chosen_for(path: Path, model_name: str, model: torch.nn.Module) -> None:
    """Refuse a ``choose`` output recorded for other weights (plain configuration files carry no model)."""
    from dynlen.bench.model_io import weights_fingerprint

    record = chosen_record(path)
    if record is None:
        return
    wanted = record.get("weights_sha")
    if not wanted:
        raise UserError(
            f"{path} names the model {record['model']!r} but not its weights' fingerprint (an older choose wrote it), "
            f"so it cannot be checked against {model_name!r}; choose again: dynlen choose --run {record.get('run', 'RUN')}"
        )
    if weights_fingerprint(model) != wanted:
        raise UserError(
            f"{path} was chosen for the model {record['model']!r}, not for {model_name!r} (other weights); "
            f"serve it without --model, choose again on a run of this model, or serve the exported folder "
            f"(dynlen choose --export DIR)"
        )


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


# --- settings: the pipeline's names and this project's -------------------------------------
# Per-call keyword -> setting. The pipeline's spelling and this project's both work.
_CALL_NAMES = {
    "top_k": "top_k",
    "handle_impossible_answer": "handle_impossible_answer",
    "max_question_len": "max_question_len",
    "doc_stride": "stride",
    "stride": "stride",
    "max_answer_len": "max_answer_length",
    "max_answer_length": "max_answer_length",
    "max_seq_len": "max_length",
    "max_length": "max_length",
}
_IGNORED = ("align_to_words", "padding")
# Spellings that still work, with a DeprecationWarning, until the version named: keyword -> (setting, removed in).
_DEPRECATED = {"topk": ("top_k", "0.2.0")}  # the pipeline's own deprecated spelling


@dataclass(frozen=True)
class AnswerSettings:
    """How windows are cut and answers chosen; the answerer's defaults, overridable per call.

    The command line's flags are the question-answering pipeline's names.
    """

    max_length: int = option(MAX_LENGTH, "tokens per window, question included", flag="--max-seq-len")
    stride: int = option(DOC_STRIDE, "tokens two windows of a long context share", flag="--doc-stride")
    max_answer_length: int = option(30, "longest answer in tokens")
    top_k: int = option(1, "answers per question; above 1 each result is a list", type=int_at_least(1))
    handle_impossible_answer: bool = option(
        False, "allow the empty answer when the model rates 'no answer' above every span", cli=False
    )
    max_question_len: int | None = option(None, "keep only the question's first N tokens (default: all)", cli=False)

    def check(self) -> None:
        _check_positive(max_length=self.max_length, max_answer_length=self.max_answer_length, top_k=self.top_k)
        if self.max_question_len is not None:
            _check_positive(max_question_len=self.max_question_len)
        if isinstance(self.stride, bool) or not isinstance(self.stride, int) or not 0 <= self.stride < self.max_length:
            raise UserError(
                f"stride (doc_stride) must be between 0 and max_length - 1 ({self.max_length - 1}), got {self.stride!r}"
            )

    def updated(self, options: dict) -> AnswerSettings:
        if not options:
            return self
        changed = replace(self, **options)
        changed.check()
        return changed


def _either(name: str, value, alias: str, alias_value, default):
    """One setting given under this project's name or the pipeline's; both at once must agree."""
    if value is not None and alias_value is not None and value != alias_value:
        raise UserError(f"{name}={value!r} and {alias}={alias_value!r} are the same setting; give one")
    chosen = value if value is not None else alias_value
    return default if chosen is None else chosen


def _pipeline_device(device: str | int | torch.device) -> torch.device:
    """The pipeline's integers (-1 = CPU, n = n-th GPU) as well as this project's names."""
    if isinstance(device, bool):
        raise UserError(f"device must be a name such as 'cpu' or 'cuda', or an integer, got {device!r}")
    if isinstance(device, int):
        device = "cpu" if device < 0 else f"cuda:{device}"
    return resolve_device(device)


def _parse_call(args: tuple, kwargs: dict) -> tuple[list[str], list[str], bool, dict]:
    """(questions, contexts, single input?, setting overrides) from any call form the pipeline took."""
    kwargs = dict(kwargs)
    options: dict = {}
    for key in list(kwargs):
        if key in _DEPRECATED:
            setting, removed = _DEPRECATED[key]
            warnings.warn(
                f"{key}= is deprecated; write {setting}= (removed in dynlen {removed})", DeprecationWarning, 2
            )
        if key in _CALL_NAMES or key in _DEPRECATED:
            setting = _CALL_NAMES[key] if key in _CALL_NAMES else _DEPRECATED[key][0]
            value = kwargs.pop(key)
            if setting in options and options[setting] != value:
                raise UserError(f"{key}={value!r} repeats a setting already given as {options[setting]!r}")
            options[setting] = value
        elif key in _IGNORED:
            kwargs.pop(key)
    question = kwargs.pop("question", None)
    context = kwargs.pop("context", None)
    data = [kwargs.pop(k) for k in ("X", "data") if k in kwargs]
    if kwargs:
        raise UserError(f"unexpected keyword(s): {', '.join(sorted(kwargs))}")
    inputs = list(args) + data
    if question is not None or context is not None:
        if inputs:
            raise UserError("give the input once: question= with context=, or positional arguments")
        if question is None or context is None:
            raise UserError("question= needs context= (and the other way round)")
        inputs = [question, context]
    if len(inputs) == 2 and not any(isinstance(x, Mapping) for x in inputs):
        questions, contexts, single = _as_pairs(inputs[0], inputs[1])
    elif len(inputs) == 1:
        questions, contexts, single = _from_dicts(inputs[0])
    elif not inputs:
        raise UserError("nothing to answer: give a question and a context")
    else:
        raise UserError(
            "give (question, context), question= and context=, a {'question', 'context'} dict or a list of them"
        )
    return questions, contexts, single, options


def _from_dicts(data) -> tuple[list[str], list[str], bool]:
    """A ``{"question", "context"}`` dict (one answer) or a list of them (a list of answers)."""
    single = isinstance(data, Mapping)
    items = [data] if single else data
    if isinstance(items, str) or not isinstance(items, Sequence):
        raise UserError(f"expected a dict with 'question' and 'context', or a list of them; got {type(data).__name__}")
    questions, contexts = [], []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or "question" not in item or "context" not in item:
            raise UserError(f"input {i} must be a dict with 'question' and 'context'")
        questions.append(item["question"])
        contexts.append(item["context"])
    q, c, _ = _as_pairs(questions, contexts)
    return q, c, single


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


def _ranked_answers(
    example: Example,
    feats: Features,
    windows: Sequence[int],
    starts: Sequence[np.ndarray],
    ends: Sequence[np.ndarray],
    n_best: int,
    settings: AnswerSettings,
) -> list[dict]:
    """The ``top_k`` best distinct spans, best first, plus the empty answer when it should be one of them.

    Candidates are those of :func:`bench.postprocess.predict_answers` (the n_best start and end
    tokens of every window, valid spans only), ranked the same way, by start + end logit, so the
    first is the answer a ``top_k=1`` call gives. A span found in several overlapping windows
    counts once, from the window that scores it highest.

    With ``handle_impossible_answer`` the pipeline's rule decides about the empty answer: its
    score is the smallest over the windows of p_start([CLS]) * p_end([CLS]), with softmaxes over
    [CLS] and the context tokens, and it is placed among the spans by comparing that with each
    span's probability under the same softmaxes.
    """
    best: dict[tuple[int, int], tuple[float, int, int, int]] = {}
    for f in windows:
        offsets = feats.offsets[f]
        s_log, e_log = np.asarray(starts[f], dtype=np.float32), np.asarray(ends[f], dtype=np.float32)
        context = [t for t, o in enumerate(offsets) if o is not None]
        if not context:
            continue
        k = min(n_best, len(s_log))
        s_top = [t for t in np.argsort(-s_log, kind="stable")[:k].tolist() if offsets[t] is not None]
        e_top = [t for t in np.argsort(-e_log, kind="stable")[:k].tolist() if offsets[t] is not None]
        for s in s_top:
            for e in e_top:
                if not 0 <= e - s < settings.max_answer_length:
                    continue
                span = (offsets[s][0], offsets[e][1])
                logit = float(s_log[s] + e_log[e])
                if span not in best or logit > best[span][0]:
                    best[span] = (logit, f, s, e)
    ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[1][1], item[0]))
    results = []
    for (start, end), (_logit, f, s, e) in ranked[: settings.top_k]:
        score = _span_probability(feats.offsets[f], starts[f], ends[f], s, e)
        entry = {"answer": example.context[start:end], "score": score, "start": int(start), "end": int(end)}
        if settings.handle_impossible_answer:
            entry["_with_cls"] = _span_probability(feats.offsets[f], starts[f], ends[f], s, e, with_cls=True)
        results.append(entry)
    if settings.handle_impossible_answer:
        null = min((_null_probability(feats.offsets[f], starts[f], ends[f]) for f in windows), default=1.0)
        at = next((i for i, r in enumerate(results) if r["_with_cls"] < null), len(results))
        results.insert(at, {"answer": "", "score": null, "start": 0, "end": 0})
        results = results[: settings.top_k]
        for r in results:
            r.pop("_with_cls", None)
    if not results:  # no valid span in any window (a context of characters the tokenizer drops)
        results = [{"answer": "", "score": 0.0, "start": 0, "end": 0}]
    return results


def _cls_index(offsets: Sequence) -> int:
    """[CLS] (or <s>) is the first token of a right-padded window; this project never left-pads answers' windows."""
    return 0 if offsets and offsets[0] is None else next((t for t, o in enumerate(offsets) if o is None), 0)


def _null_probability(offsets: Sequence, start_logits: np.ndarray, end_logits: np.ndarray) -> float:
    context = np.array([t for t, o in enumerate(offsets) if o is not None] + [_cls_index(offsets)])
    cls = _cls_index(offsets)
    return float(np.exp(_log_softmax_at(start_logits, context, cls) + _log_softmax_at(end_logits, context, cls)))


def _span_probability(
    offsets: Sequence, start_logits: np.ndarray, end_logits: np.ndarray, s: int, e: int, with_cls: bool = False
) -> float:
    """Softmax over the window's context tokens only (and [CLS] with ``with_cls``, as the pipeline did), for start and end separately; their product."""
    tokens = [t for t, o in enumerate(offsets) if o is not None]
    context = np.array(tokens + [_cls_index(offsets)] if with_cls else tokens)
    return float(np.exp(_log_softmax_at(start_logits, context, s) + _log_softmax_at(end_logits, context, e)))


def _log_softmax_at(logits: np.ndarray, context: np.ndarray, token: int) -> float:
    values = logits[context].astype(np.float64)
    top = values.max()
    return float(logits[token] - top - np.log(np.exp(values - top).sum()))
