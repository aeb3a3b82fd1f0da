"""Merge rules for dropped tokens, measured against dropping and set aside (docs/rejected.md).

Not registered by default: a configuration names them (``…@lookahead+question/merge-window``)
once :func:`register_merges` has run, as ``benchmarks/retention.py`` and ``benchmarks/precision.py``
do to measure them. Each dropped token is folded into the most similar kept token
(``merge-nearest``, ToMe's merge: the kept token's own state is mixed too), or into one summary
slot per :data:`WINDOW` positions (``merge-window``: extra rows through every later layer, never
restored). A slot holding c tokens is attended with log c added to its score (proportional
attention); ``merge-window-flat`` drops that bias. A merged state mixes a dropped token's input to
the dropping layer with the slot's output of it, as restore mixes layers. Weighted sums are
element-wise and not counted as FLOPs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from dynlen.engine.adaptive import _take_rows
from dynlen.engine.merging import RETENTIONS, Retention, register_retention

WINDOW = 32  # positions per summary slot


def _dropped(slots: torch.Tensor, slot_real: torch.Tensor | None, valid: torch.Tensor | None, n_in: int):
    """(batch, n_in) True for the real slots a layer dropped."""
    kept = torch.zeros(slots.shape[0], n_in, dtype=torch.bool, device=slots.device)
    kept.scatter_(1, slots, True if slot_real is None else slot_real)
    return ~kept if valid is None else valid & ~kept


def _weighted_mean(state, count, add, count_add):
    """(count * state + add) / (count + count_add), 0 where a slot holds nothing."""
    total = count + count_add
    merged = (state * count[..., None] + add) / total.clamp_min(1e-12)[..., None]
    return merged, total


def _masked(bias, valid):
    return bias if valid is None else bias.masked_fill(~valid, float("-inf"))


class NearestMerge:
    """Per-slot token counts that follow the kept slots; dropped tokens fold into the nearest kept one."""

    extra = None  # no summary rows

    def __init__(self, hidden: torch.Tensor) -> None:
        self.counts = hidden.new_ones(hidden.shape[:2])

    def key_bias(self, valid: torch.Tensor | None, width: int) -> torch.Tensor:
        """(batch, slots) added to every query's score of each key: log of the tokens it holds, -inf for padding."""
        return _masked(self.counts.log(), valid)

    def after_drop(self, hidden, key, slots, slot_real, valid, positions, out, out_extra) -> torch.Tensor:
        """The kept slots' states (``out``, batch x kept x hidden) with the dropped ones folded in."""
        b, _, n_in, _ = key.shape
        keys = F.normalize(key.transpose(1, 2).reshape(b, n_in, -1).float(), dim=-1)
        similarity = keys @ _take_rows(keys, slots, dim=1).transpose(1, 2)  # (batch, n_in, kept)
        if slot_real is not None:
            similarity.masked_fill_(~slot_real[:, None, :], float("-inf"))
        target = similarity.argmax(dim=-1)
        weight = self.counts * _dropped(slots, slot_real, valid, n_in).to(self.counts.dtype)
        add = out.new_zeros(out.shape).scatter_add_(
            1, target[..., None].expand(-1, -1, out.shape[-1]), hidden.to(out.dtype) * weight[..., None]
        )
        count_add = weight.new_zeros(out.shape[:2]).scatter_add_(1, target, weight)
        counts = _take_rows(self.counts, slots, dim=1)
        if slot_real is not None:
            counts = counts * slot_real.to(counts.dtype)
        merged, self.counts = _weighted_mean(out, counts, add, count_add)
        return merged


class WindowMerge:
    """Summary slots, one per ``window`` positions, appended to the real slots once a token is merged.

    ``extra`` (batch, summary slots, hidden) is None until the first drop: the engine runs it
    through every later layer beside the real slots and hands its output back.
    """

    def __init__(self, hidden: torch.Tensor, width: int, window: int, proportional: bool = True) -> None:
        self.window, self.proportional = window, proportional
        self.extra: torch.Tensor | None = None
        self.counts = hidden.new_zeros(hidden.shape[0], math.ceil(width / window))

    def key_bias(self, valid: torch.Tensor | None, width: int) -> torch.Tensor | None:
        """(batch, ``width`` real slots + summary slots): 0 for real slots, log count for summaries;
        -inf for padding and empty summaries. None while there is nothing to mask or weigh."""
        if self.extra is None:
            return None if valid is None else _masked(self.counts.new_zeros(valid.shape), valid)
        real = _masked(self.counts.new_zeros(self.counts.shape[0], width), valid)
        held = self.counts if self.proportional else self.counts.clamp_max(1.0)  # flat: one token's weight
        return torch.cat([real, held.log()], dim=1)

    def after_drop(self, hidden, key, slots, slot_real, valid, positions, out, out_extra) -> torch.Tensor:
        """``out`` unchanged; the dropped tokens' input states folded into their windows' summary slots."""
        weight = _dropped(slots, slot_real, valid, hidden.shape[1]).to(self.counts.dtype)
        window = positions // self.window
        states = hidden.new_zeros(*self.counts.shape, hidden.shape[-1]) if out_extra is None else out_extra
        add = states.new_zeros(states.shape).scatter_add_(
            1, window[..., None].expand(-1, -1, hidden.shape[-1]), hidden.to(states.dtype) * weight[..., None]
        )
        count_add = self.counts.new_zeros(self.counts.shape).scatter_add_(1, window, weight)
        self.extra, self.counts = _weighted_mean(states, self.counts, add, count_add)
        return out


class NearestRetention(Retention):
    name = "merge-nearest"
    help = "each dropped token is folded into its most similar kept token (key cosine)"

    def state(self, hidden: torch.Tensor, width: int) -> NearestMerge:
        return NearestMerge(hidden)

    def merge_flops(self, score_flops: Callable[[int, int], int], n_in: int, n_out: int) -> int:
        """Key cosines of every incoming token against every kept one: what attention scores of that shape cost."""
        return score_flops(n_in, n_out)


class WindowRetention(Retention):
    name = "merge-window"
    help = f"dropped tokens are folded into one summary slot per {WINDOW} positions"

    def state(self, hidden: torch.Tensor, width: int) -> WindowMerge:
        return WindowMerge(hidden, width, WINDOW)

    def summary_slots(self, length: int) -> int:
        return math.ceil(length / WINDOW)


class FlatWindow(WindowRetention):
    """``merge-window`` without proportional attention: a summary slot weighs as one token. Benchmark only."""

    name = "merge-window-flat"
    help = "merge-window with every summary slot attended as one token"

    def state(self, hidden: torch.Tensor, width: int) -> WindowMerge:
        return WindowMerge(hidden, width, WINDOW, proportional=False)


def register_merges() -> None:
    """The merge rules under their names, once per process (a configuration then names them in its tail)."""
    for rule in (NearestRetention(), WindowRetention(), FlatWindow()):
        if rule.name not in RETENTIONS:
            register_retention(rule)
