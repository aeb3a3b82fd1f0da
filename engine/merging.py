"""What happens to the tokens a layer drops: a registry of retention rules, ``drop`` the one built in.

``drop`` (Drop-and-Restore): a dropped token neither attends nor is attended to again, and its
last state is restored at its position before the span head. A rule that merges instead keeps
what dropped tokens said for the later layers, through the state its :meth:`Retention.state`
makes at the forward's first dropping layer, which the engine asks three things:

* ``extra``: summary rows (batch, slots, hidden) that attend and are computed on beside the real
  slots in every later layer (None: none yet); the engine hands each layer's output of them back;
* ``key_bias(valid, width)``: (batch, width + summary slots) added to every query's attention
  scores, e.g. the log of the tokens a slot holds (proportional attention), -inf where masked;
* ``after_drop(hidden, key, slots, slot_real, valid, positions, out, out_extra)``: the kept slots'
  states once the layer's dropped tokens are folded in (every dropping layer but the encoder's last).

Dropped positions are restored from their own last state under every rule. The FLOPs a rule adds
(its summary slots' layers, its matrix products) are counted by ``dynlen.engine.costs`` through
:meth:`Retention.summary_slots` and :meth:`Retention.merge_flops`. Two merge rules, into the most
similar kept token and into one summary slot per window of positions, were measured against
dropping and bought nothing (``docs/rejected.md``): they live in ``dynlen.engine.merge_rules``,
registered only by ``register_merges()`` (the benchmarks that measure them call it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the configuration reads this registry, and must not need torch to be imported
    import torch

from dynlen.errors import UserError


class Retention:
    """One rule for dropped tokens: its name in a configuration, the state a forward keeps for it,
    and what it costs beyond dropping. ``drop`` itself: nothing kept, nothing added."""

    name = "drop"
    help = "dropped tokens leave for good; restored from their last state before the span head"

    def state(self, hidden: torch.Tensor, width: int) -> object | None:
        """The forward's state (see the module's docstring), made at its first dropping layer from that layer's
        input (``hidden``; ``width`` the input's padded length). None: the layer only drops."""
        return None

    def summary_slots(self, length: int) -> int:
        """Summary slots an example of ``length`` real tokens carries after its first dropping layer."""
        return 0

    def merge_flops(self, score_flops: Callable[[int, int], int], n_in: int, n_out: int) -> int:
        """Matrix products of the merge at one dropping layer (``score_flops``: the family's attention scores)."""
        return 0


RETENTIONS: dict[str, Retention] = {"drop": Retention()}
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
        raise UserError(
            f"unknown retention {name!r}; choose one of {', '.join(RETENTIONS)} (the merge rules measured in "
            "docs/rejected.md need dynlen.engine.merge_rules.register_merges() first)"
        )
    return RETENTIONS[name]
