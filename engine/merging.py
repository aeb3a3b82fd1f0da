"""What happens to the tokens a layer drops: discarded (Drop-and-Restore), or merged into what stays.

``drop`` is the engine's default: a dropped token neither attends nor is attended to again, and
its last state is restored at its position before the span head. The merge rules keep a summary
of what dropped tokens said for the layers that follow, while still restoring every dropped
position from its own last state (the span head's inputs are the same as under ``drop`` for them):

* ``merge-nearest`` folds each dropped token into the kept token whose key (all heads, at the
  dropping layer) is most similar by cosine; the kept slot's state becomes the count-weighted mean
  of the states it holds (ToMe's merge), so the kept token's own state is mixed too.
* ``merge-window`` folds each dropped token into one summary slot per window of
  :data:`WINDOW` consecutive positions; summary slots are extra rows that run through every later
  layer (queries, FFN) and are never restored, so kept tokens' own states stay their own.

Either way attention to a slot holding ``c`` tokens gets ``log c`` added to its score
(proportional attention): a slot is attended as if its ``c`` tokens were still there.

A merged state mixes a dropped token's input to the dropping layer with the slot's output of it,
as restore mixes layers: that is the price of computing nothing for the dropped token.
Element-wise work (the weighted sums) is not counted as FLOPs, as everywhere in
``dynlen.engine.costs``; the similarity products and the summary slots' layers are.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the configuration reads this registry, and must not need torch to be imported
    import torch

from dynlen.errors import UserError

WINDOW = 32  # positions per summary slot under merge-window


class Retention:
    """One rule for dropped tokens: its name in a configuration, the state a forward keeps for it,
    and what it costs beyond dropping. ``drop`` itself: nothing kept, nothing added."""

    name = "drop"
    help = "dropped tokens leave for good; restored from their last state before the span head"

    def state(self, hidden: torch.Tensor, width: int) -> NearestMerge | WindowMerge | None:
        """The forward's state, made at its first dropping layer from that layer's input (None: drop)."""
        return None

    def summary_slots(self, length: int) -> int:
        """Summary slots an example of ``length`` real tokens carries after its first dropping layer."""
        return 0

    def merge_flops(self, score_flops: Callable[[int, int], int], n_in: int, n_out: int) -> int:
        """Matrix products of the merge at one dropping layer (``score_flops``: the family's attention scores)."""
        return 0


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


RETENTIONS: dict[str, Retention] = {r.name: r for r in (Retention(), NearestRetention(), WindowRetention())}
DEFAULT_RETENTION = "drop"


def register_retention(retention: Retention) -> Retention:
    """Add ``retention`` under its name (a benchmark may register a variant); a name is taken once."""
    from dynlen.engine.precision import PRECISIONS

    if not isinstance(retention, Retention):
        raise TypeError(f"{type(retention).__name__} is not a Retention")
    if retention.name in RETENTIONS or retention.name in PRECISIONS or "/" in retention.name:
        raise ValueError(f"retention name {retention.name!r} is taken or not a plain word")
    RETENTIONS[retention.name] = retention
    return retention


def get_retention(name: str) -> Retention:
    if name not in RETENTIONS:
        raise UserError(f"unknown retention {name!r}; choose one of {', '.join(RETENTIONS)}")
    return RETENTIONS[name]


# --- the forward's state -----------------------------------------------------------------------
def _dropped(slots: torch.Tensor, slot_real: torch.Tensor | None, valid: torch.Tensor | None, n_in: int):
    """(batch, n_in) True for the real slots a layer dropped."""
    import torch

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
        import torch.nn.functional as F

        from dynlen.engine.adaptive import _take_rows

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
        import torch

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
