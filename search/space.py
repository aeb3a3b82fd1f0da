"""The search space: each layer keeps a share of the previous layer's tokens.

Sampling shares of the *previous* layer makes every sampled configuration non-increasing by
construction, so no trial is wasted on an invalid one. Shares lie on a 0.05 grid, which keeps
the published constant-ratio baselines inside the space and lets repeats be recognised.
"""

from __future__ import annotations

import optuna

from bench.config import LengthConfig, cumulative_ratios

STEP = 0.05
LOWEST_SHARE = 0.25
BASELINE_SHARES = (0.9, 0.8, 0.7, 0.6, 0.5)


def param_name(layer: int) -> str:
    return f"keep_{layer + 1:02d}"


def config_from_shares(shares: list[float]) -> LengthConfig:
    return cumulative_ratios(shares)


def sample_config(trial: optuna.Trial, num_layers: int, lowest: float = LOWEST_SHARE) -> LengthConfig:
    shares = [trial.suggest_float(param_name(i), lowest, 1.0, step=STEP) for i in range(num_layers)]
    return config_from_shares(shares)


def baseline_params(num_layers: int, shares: tuple[float, ...] = BASELINE_SHARES) -> dict[str, dict[str, float]]:
    """Keep-all and constant-ratio configurations (every layer from the 2nd keeps the same share)."""
    out = {"keep-all": {param_name(i): 1.0 for i in range(num_layers)}}
    for share in shares:
        params = {param_name(0): 1.0}
        params.update({param_name(i): share for i in range(1, num_layers)})
        out[f"constant-{share:.2f}"] = params
    return out
