"""The held-out half: which configurations are re-scored on it, and the cache of their scores.

Only held-out numbers are reported. The search-split frontier (at most ``--max-rescore`` points,
every one near keep-all's F1 first) and every baseline are measured again on the other
article-level half, each with the paired interval of its F1 minus keep-all's on the same questions.
"""

from __future__ import annotations

import optuna

from dynlen.bench.measurement import Measurement
from dynlen.bench.model_io import bert_base_qa
from dynlen.bench.runner import QARunner, measure
from dynlen.bench.uncertainty import paired_interval
from dynlen.engine.config import LengthConfig
from dynlen.search.frontier import pareto_front
from dynlen.search.records import TrialPoint
from dynlen.search.settings import SearchSettings

# Search-split F1 below keep-all's within which every frontier point is re-scored (up to --max-rescore).
NEAR_KEEP_ALL_F1 = 3.0


def spread(front: list[TrialPoint], most: int) -> list[TrialPoint]:
    """At most ``most`` points evenly spaced along a sorted frontier, both ends included.

    On a small search split, F1 noise makes many near-identical configurations non-dominated;
    re-scoring all of them would cost more than the search itself.
    """
    if len(front) <= most:
        return front
    if most <= 0:
        return []
    if most == 1:
        return [front[-1]]
    picks = sorted({round(i * (len(front) - 1) / (most - 1)) for i in range(most)})
    return [front[i] for i in picks]


def points_to_rescore(
    points: list[TrialPoint], cost: str, most: int = 16, near: float = NEAR_KEEP_ALL_F1
) -> list[TrialPoint]:
    """The search-split frontier (feasible only, at most ``most`` points) plus every baseline.

    Every frontier point within ``near`` F1 of keep-all on the search split comes first: that is
    where "within 1 F1 of keep-all" is decided on held-out, and a few hundred search questions
    leave each point's F1 uncertain by more than a point, so the search split cannot be trusted
    to rank them. The rest of the frontier, mostly the long tail of heavy drops that a sampler
    explores densely, is thinned evenly to the places left. Thinning the whole frontier evenly
    instead spends most places on that tail and can skip the one point that matters.
    """
    key = "flops_speedup_vs_keep_all" if cost == "flops" else "latency_speedup_vs_keep_all"
    whole = pareto_front(points, key, split="search")
    keep_all = [p.search.f1 for p in points if p.baseline == "keep-all" and p.search and p.search.f1 is not None]
    top = keep_all[0] if keep_all else max((p.search.f1 for p in whole), default=0.0)
    close = [p for p in whole if p.search.f1 >= top - near]
    rest = [p for p in whole if p.search.f1 < top - near]
    front = spread(close, most) + spread(rest, most - len(close))
    for p in front:
        p.on_search_frontier = True
    chosen = {p.number: p for p in front}
    for p in points:
        if p.baseline:
            chosen.setdefault(p.number, p)
    return sorted(chosen.values(), key=lambda p: p.number)


class HeldOutScorer:
    """Re-scores configurations on the held-out split; the scores are kept in the study.

    The study is where the identity of a run is checked, so scores cached there can never come
    from another split size, seed or model; and every machine sharing a server study reuses them.
    Optuna freezes a finished trial's attributes, so they are study user attributes keyed by the
    configuration's label (``heldout:<label>``, a measurement's record form), copied into each
    trial's record in trials.json.
    """

    KEEP_ALL_VS_BASE = "heldout:keep_all_vs_bert_base"

    def __init__(self, settings: SearchSettings, runner: QARunner, study: optuna.Study):
        self.settings = settings
        self.runner = runner
        self.study = study
        self.cache = {k: v for k, v in study.user_attrs.items() if k.startswith(("heldout:", "heldout-f1:"))}

    def keep_all_vs_bert_base(self) -> float:
        """Latency of BERT-base / keep-all on the held-out timing sample, measured once per run."""
        if self.KEEP_ALL_VS_BASE not in self.cache:
            keep_all = LengthConfig.keep_all(self.runner.num_layers)
            lat = self.runner.latency(
                keep_all,
                sample=self.settings.latency_sample,
                batch_size=self.settings.latency_batch_size,
                repeats=self.settings.latency_repeats,
                bert_base=bert_base_qa(),
            )
            self._store(self.KEEP_ALL_VS_BASE, lat.vs_bert_base.median)
        return self.cache[self.KEEP_ALL_VS_BASE]

    def _store(self, key: str, value) -> None:
        self.cache[key] = value
        self.study.set_user_attr(key, value)

    def score(self, config: LengthConfig) -> Measurement:
        """Held-out measurement with the paired 95% interval of the F1 difference to keep-all.

        Keep-all drops nothing, so one key serves it under every policy; each configuration's
        per-question F1 is kept too (``heldout-f1:<label>``), so intervals survive a resume.
        """
        keep_all = LengthConfig.keep_all(self.runner.num_layers)
        reference = config.is_keep_all and config.precision == keep_all.precision  # keep-all below fp32 is a point
        label = keep_all.label() if reference else config.label()
        key = f"heldout:{label}"
        if key in self.cache:
            return Measurement.from_record(self.cache[key], config)
        s = self.settings
        scores, per_question = measure(
            self.runner, config, True, s.latency_sample, s.latency_batch_size, s.latency_repeats, f"held-out {label}"
        )
        scores.latency_speedup_vs_bert_base = scores.latency_speedup_vs_keep_all * self.keep_all_vs_bert_base()
        self._store(f"heldout-f1:{label}", per_question)
        if reference:
            scores.f1_delta_low = scores.f1_delta_high = 0.0
        else:
            base = self.cache.get(f"heldout-f1:{keep_all.label()}")
            if base is None:
                self.score(keep_all)
                base = self.cache[f"heldout-f1:{keep_all.label()}"]
            scores.f1_delta_low, scores.f1_delta_high = paired_interval(per_question, base)
        self._store(key, scores.to_record())
        return scores
