"""The evaluator: one model x data, ready to measure many configurations (EM/F1, exact FLOPs, latency).

A :class:`QARunner` tokenises once and keeps its padded batches, so evaluating another
configuration only re-runs the model -- the property the search depends on. It runs the model
on the CPU or a CUDA GPU (``device``); logits always come back to the CPU, where answers are
extracted and scored.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from dynlen.bench.device import resolve_device, to_device
from dynlen.bench.features import Features, cached_features, collate, length_sorted_batches
from dynlen.bench.inference import batched_logits
from dynlen.bench.latency import LatencyResult, contenders, device_synchronizer, interleaved_batch_timings, ratio
from dynlen.bench.measurement import Measurement
from dynlen.bench.model_io import bert_base_qa, check_vocabulary_fits, load_qa_model, load_tokenizer
from dynlen.bench.squad import SquadData
from dynlen.bench.uncertainty import per_question_f1
from dynlen.engine.adaptive import LengthAdaptiveQA
from dynlen.engine.config import LengthConfig
from dynlen.engine.costs import FlopReport, flop_report, mean_tokens_per_layer
from dynlen.engine.precision import get_precision

# contender -> its ratio's key in the latency record, timed when a configuration runs below float32
SAME_PRECISION = {
    "keep_all_same_precision": "speedup_vs_keep_all_same_precision",
    "bert_base_same_precision": "speedup_vs_bert_base_same_precision",
}


@dataclass
class EvalResult:
    """One evaluation pass: the configuration's measurement and the answers behind it."""

    measurement: Measurement  # accuracy, FLOPs, tokens kept, counts; no latency (QARunner.latency times it)
    answers: dict[str, dict]
    seconds: float
    per_question_f1: list[float] | None = None  # official F1 of each question, in the data's order

    @property
    def exact_match(self) -> float:
        return self.measurement.exact_match

    @property
    def f1(self) -> float:
        return self.measurement.f1

    @property
    def tokens_kept_per_layer(self) -> list[float]:
        return self.measurement.tokens_kept_per_layer

    @property
    def questions(self) -> int:
        return self.measurement.questions

    @property
    def features(self) -> int:
        return self.measurement.features

    @property
    def questions_per_second(self) -> float:
        return self.questions / self.seconds if self.seconds else float("inf")


class QARunner:
    """One model and one SQuAD set, tokenised once, ready to evaluate many configurations."""

    def __init__(
        self,
        model_name: str,
        data: SquadData,
        batch_size: int = 32,
        threads: int | None = None,
        model=None,
        tokenizer=None,
        progress: bool = True,
        device: str | torch.device = "cpu",
        load_options: dict | None = None,
    ):
        """``device``: 'cpu' (the default, as before), 'cuda' or 'auto'; the model is moved there.

        ``load_options``: ``revision``, ``trust_remote_code``, ``token`` and ``dtype`` for loading
        ``model_name`` (see :func:`bench.model_io.load_qa_model`).
        """
        if threads:
            torch.set_num_threads(threads)
        self.device = resolve_device(device)
        self.model_name = model_name
        self.data = data
        self.progress = progress
        options = dict(load_options or {})
        dtype = options.pop("dtype", None)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_name, **options)
        self.model = model if model is not None else load_qa_model(model_name, dtype=dtype, **options)
        check_vocabulary_fits(self.tokenizer, self.model, model_name)
        self.model.to(self.device)
        self.model.eval()
        self.adaptive = LengthAdaptiveQA(self.model, sep_token_id=self.tokenizer.sep_token_id)
        self.shape = self.adaptive.cost_shape()
        self.features: Features = cached_features(data, self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.batch_size = batch_size
        self._batches = [
            (idx, collate(self.features, idx, self.pad_id))
            for idx in length_sorted_batches(self.features.lengths, batch_size)
        ]

    @property
    def num_layers(self) -> int:
        return self.adaptive.num_layers

    @property
    def questions(self) -> int:
        return len(self.data.examples)

    def logits(
        self, config: LengthConfig, desc: str = "evaluating"
    ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """Per-feature start/end logits (unpadded) and the tokens each layer kept per feature."""
        config.check_layers(self.num_layers, self.model_name)
        bar = tqdm(self._batches, desc=desc, unit="batch", disable=not self.progress, leave=False)
        return batched_logits(self.adaptive, self.features, bar, config, self.device)

    def evaluate(self, config: LengthConfig, desc: str = "evaluating") -> EvalResult:
        from dynlen.bench.postprocess import predict_answers
        from dynlen.bench.scoring import squad_scores

        started = time.perf_counter()
        starts, ends, kept = self.logits(config, desc)
        answers = predict_answers(self.data.examples, self.features, starts, ends)
        seconds = time.perf_counter() - started
        predictions = {qid: a["text"] for qid, a in answers.items()}
        scores = squad_scores(predictions, self.data.examples)
        measurement = Measurement.from_flops(
            self.flops(config),
            self.flops(config, padded=True),
            exact_match=scores["exact_match"],
            f1=scores["f1"],
            tokens_kept_per_layer=kept.mean(axis=1).tolist(),
            questions=self.questions,
            features=len(self.features),
            config=config,
        )
        return EvalResult(
            measurement=measurement,
            answers=answers,
            seconds=seconds,
            per_question_f1=per_question_f1(predictions, self.data.examples).round(3).tolist(),
        )

    def flops(self, config: LengthConfig, padded: bool = False) -> FlopReport:
        return flop_report(
            self.shape,
            config,
            self.features.lengths,
            self.questions,
            padded=padded,
            probe_flops=self.adaptive.probe_flops,
        )

    def mean_tokens(self, config: LengthConfig) -> list[float]:
        return mean_tokens_per_layer(config, self.features.lengths)

    def latency_sample(self, count: int) -> list[int]:
        """Features spread evenly over the length distribution, so the sample looks like the set."""
        order = sorted(range(len(self.features)), key=lambda i: self.features.lengths[i])
        count = max(1, min(count, len(order)))
        step = len(order) / count
        return [order[int(step * k + step / 2)] for k in range(count)]

    def latency(
        self,
        config: LengthConfig,
        sample: int = 16,
        batch_size: int = 1,
        repeats: int = 5,
        warmup: int = 1,
        with_bert_base: bool = True,
        bert_base=None,
        with_stock: bool = False,
    ) -> LatencyResult:
        """Time the configuration against this engine's keep-all (and BERT-base, the stock model) on the same batches.

        Keep-all runs through the same engine and kernels as the configuration, so the ratio is
        what dropping tokens buys, and keep-all against itself is 1. ``with_stock`` also times the
        stock Hugging Face forward of the same model (what a user switching from it sees).
        Batches are on the runner's device before the clock starts; on a GPU every call is
        synchronized, so each contender is charged for its own kernels.
        """
        picks = self.latency_sample(sample)
        batches = [
            to_device(collate(self.features, chunk, self.pad_id), self.device)
            for chunk in (picks[i : i + batch_size] for i in range(0, len(picks), batch_size))
        ]
        keep_all = LengthConfig.keep_all(self.num_layers)
        named: dict = {"config": (self.adaptive, config), "keep_all": (self.adaptive, keep_all)}
        if with_stock:
            named["stock"] = self.model
        lowered = config.precision != keep_all.precision
        if lowered:  # the same model at the same precision, so "what length buys" is stated apart from precision
            named["keep_all_same_precision"] = (self.adaptive, keep_all.with_precision(config.precision))
        if with_bert_base:
            reference = bert_base if bert_base is not None else bert_base_qa()
            named["bert_base"] = reference.to(self.device)
            if lowered:
                dtype = get_precision(config.precision).dtype
                named["bert_base_same_precision"] = copy.deepcopy(reference).to(self.device, dtype)
        with torch.inference_mode():
            timings = interleaved_batch_timings(
                contenders(**named),
                batches,
                repeats=repeats,
                warmup=warmup,
                synchronize=device_synchronizer(self.device),
                progress=f"timing {', '.join(named)}" if self.progress else None,
            )
        extra = {"keep_all_ms_per_feature": 1000 * timings["keep_all"].median / len(picks)}
        for name, key in SAME_PRECISION.items():
            if name in timings:
                extra[key] = ratio(timings[name], timings["config"]).as_dict()
        if with_stock:
            extra["speedup_vs_stock"] = ratio(timings["stock"], timings["config"]).as_dict()
            extra["stock_ms_per_feature"] = 1000 * timings["stock"].median / len(picks)
        per_feature = [1000 * seconds / len(picks) for seconds in timings["config"].samples]
        return LatencyResult(
            batch_size=batch_size,
            features=len(picks),
            repeats=repeats,
            ms_per_feature=1000 * timings["config"].median / len(picks),
            ms_per_feature_min=min(per_feature),
            ms_per_feature_max=max(per_feature),
            vs_keep_all=ratio(timings["keep_all"], timings["config"]),
            vs_bert_base=ratio(timings["bert_base"], timings["config"]) if with_bert_base else None,
            extra=extra,
        )


def measure(
    runner: QARunner,
    config: LengthConfig,
    timed: bool,
    latency_sample: int,
    latency_batch_size: int,
    latency_repeats: int,
    desc: str = "evaluating",
) -> tuple[Measurement, list[float]]:
    """EM/F1 and exact FLOPs of one configuration on the runner's split, latency vs keep-all when
    ``timed``; and each question's F1, for paired intervals."""
    result = runner.evaluate(config, desc=desc)
    measurement = result.measurement
    if timed:
        latency = runner.latency(
            config, sample=latency_sample, batch_size=latency_batch_size, repeats=latency_repeats, with_bert_base=False
        )
        measurement = measurement.with_latency(latency)
    return measurement, list(result.per_question_f1 or [])
