"""The search space: each layer keeps a share of the previous layer's tokens.

Sampling shares of the *previous* layer makes every sampled configuration non-increasing by
construction, so no trial is wasted on an invalid one. Shares lie on a 0.05 grid, which keeps
the published constant-ratio baselines inside the space and lets repeats be recognised.
"""

from __future__ import annotations

from collections.abc import Collection

import optuna

from dynlen.engine.config import DEFAULT_SIGNIFICANCE, LengthConfig, apply_tail, cumulative_ratios, parse_selection
from dynlen.engine.precision import DEFAULT_PRECISION, resolve_precision
from dynlen.errors import UserError

STEP = 0.05
LOWEST_SHARE = 0.25
# The encoder's last layer computes final states only for the tokens an answer can start or end at
# (a kept question is not protected there: nothing reads it after), so it may keep far fewer
LAST_LAYER_LOWEST_SHARE = 0.1
BASELINE_SHARES = (0.9, 0.8, 0.7, 0.6, 0.5)
# Starting points queued beside the baselines: every token through the first third of the layers,
# then a constant share per layer, and the last layer its answer candidates only. Measured on the
# search split, such shapes hold F1 far better per FLOP than constant ratios, and a 100-trial search
# from constant ratios alone did not reach them (docs/results.md)
LATE_SHARES = (0.8, 0.7, 0.6)
LATE_LAST_SHARE = 0.15
SELECTION_PARAM = "significance"


def parse_selections(spec: str | None) -> tuple[str, ...]:
    """'lookahead+question' or a comma list of such: one is fixed, several become a categorical dimension."""
    from dynlen.engine.significance import get_policy

    names = tuple(part.strip() for part in (spec or DEFAULT_SIGNIFICANCE).split(",") if part.strip())
    if not names:
        raise UserError("--significance needs at least one policy, e.g. attention or lookahead+question")
    for name in names:
        get_policy(parse_selection(name)[0])  # one line naming the known policies when unknown
    return names


def parse_precisions(spec: str | None, device: str = "cpu") -> tuple[str, ...]:
    """'fp32', 'bf16', 'auto' or a comma list of them, float32 first: several become a searched dimension."""
    names = [resolve_precision(part.strip(), device) for part in (spec or DEFAULT_PRECISION).split(",") if part.strip()]
    unique = list(dict.fromkeys(names))
    return tuple(sorted(unique, key=lambda name: name != DEFAULT_PRECISION))


def search_tails(significance: str | None, precision: str | None) -> tuple[str, ...]:
    """Every (selection, precision) a run searches, as a label's tail ('lookahead+question/bf16').

    One categorical dimension covers both, so a policy at bf16 competes with the same policy at
    float32 on the same frontier; the first tail is float32 when the run measures it, so keep-all at
    float32 stays the reference every speedup is against.
    """
    tails = []
    for precision_name in parse_precisions(precision):
        for selection in parse_selections(significance):
            tails.append(selection if precision_name == DEFAULT_PRECISION else f"{selection}/{precision_name}")
    return tuple(tails)


def param_name(layer: int) -> str:
    return f"keep_{layer + 1:02d}"


def config_from_shares(shares: list[float]) -> LengthConfig:
    return cumulative_ratios(shares)


def sample_config(
    trial: optuna.Trial,
    num_layers: int,
    lowest: float = LOWEST_SHARE,
    selections: tuple[str, ...] = (DEFAULT_SIGNIFICANCE,),
    probed_layers: Collection[int] | None = None,
) -> LengthConfig:
    """Per-layer shares, and the significance policy when the run searches over several.

    Under a policy that reads look-ahead probes, a layer without a probe (``probed_layers`` lists
    those with one; the embeddings' layer has none by default) keeps every token: it is not sampled.
    """
    chosen = selections[0] if len(selections) == 1 else trial.suggest_categorical(SELECTION_PARAM, list(selections))
    selected = apply_tail(LengthConfig.keep_all(num_layers), chosen)
    from dynlen.engine.significance import get_policy

    fixed = set()
    if probed_layers is not None and get_policy(selected.significance).needs_probes:
        fixed = {i for i in range(num_layers) if i not in probed_layers}
    shares = [
        1.0 if i in fixed else trial.suggest_float(param_name(i), lowest_share(i, num_layers, lowest), 1.0, step=STEP)
        for i in range(num_layers)
    ]
    config = config_from_shares(shares).with_selection(selected.significance, selected.keep_question)
    return config.with_precision(selected.precision)


def lowest_share(layer: int, num_layers: int, lowest: float = LOWEST_SHARE) -> float:
    """The smallest share of the previous layer's tokens ``layer`` may keep: lower for the last layer."""
    return min(lowest, LAST_LAYER_LOWEST_SHARE) if layer == num_layers - 1 else lowest


def baseline_params(
    num_layers: int,
    shares: tuple[float, ...] = BASELINE_SHARES,
    selections: tuple[str, ...] = (DEFAULT_SIGNIFICANCE,),
) -> dict[str, dict[str, float | str]]:
    """Keep-all and constant-ratio configurations (every layer from the 2nd keeps the same share).

    With several policies searched, each constant ratio is queued once per policy (keep-all once
    per precision: it drops nothing, so the policy does not matter; float32 keep-all is ``keep-all``).
    """
    out: dict[str, dict[str, float | str]] = {"keep-all": {param_name(i): 1.0 for i in range(num_layers)}}
    if len(selections) > 1:
        out["keep-all"][SELECTION_PARAM] = selections[0]
    first_of_precision = {}
    for tail in selections:
        first_of_precision.setdefault(tail.partition("/")[2], tail)
    for precision, tail in first_of_precision.items():
        if precision:
            out[f"keep-all/{precision}"] = {**out["keep-all"], SELECTION_PARAM: tail}
    for share in shares:
        params: dict[str, float | str] = {param_name(0): 1.0}
        params.update({param_name(i): share for i in range(1, num_layers)})
        out.update(_per_selection(f"constant-{share:.2f}", params, selections))
    return out


def late_params(
    num_layers: int,
    shares: tuple[float, ...] = LATE_SHARES,
    selections: tuple[str, ...] = (DEFAULT_SIGNIFICANCE,),
) -> dict[str, dict[str, float | str]]:
    """Search seeds of the late-drop family (``LATE_SHARES``), once per policy searched; not baselines.

    The first third of the layers (at least one) keeps every token, each later layer keeps
    ``share`` of the previous one's, and the last layer ``LATE_LAST_SHARE`` of them.
    """
    full = max(1, num_layers // 3)
    out: dict[str, dict[str, float | str]] = {}
    if num_layers - full < 2:  # too few layers for a family distinct from the constant ratios
        return out
    for share in shares:
        params: dict[str, float | str] = {param_name(i): 1.0 for i in range(full)}
        params.update({param_name(i): share for i in range(full, num_layers - 1)})
        params[param_name(num_layers - 1)] = LATE_LAST_SHARE
        out.update(_per_selection(f"late-{share:.2f}", params, selections))
    return out


def _per_selection(
    name: str, params: dict[str, float | str], selections: tuple[str, ...]
) -> dict[str, dict[str, float | str]]:
    """One queued trial of ``params``, or one per policy (named ``name@policy``) when several are searched."""
    if len(selections) == 1:
        return {name: params}
    return {f"{name}@{selection}": {**params, SELECTION_PARAM: selection} for selection in selections}
