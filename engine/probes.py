"""Look-ahead probes: one small span head per layer, read before the layer decides what to keep.

A probe maps a layer's input hidden states to start/end logits and is trained (``training.probes``)
to match the full model's *final* start/end distributions, so it says early which tokens the last
layer will want. It is a few thousand parameters a layer, stored next to the model's weights:

* ``lookahead_probes.safetensors`` -- the probe weights, one ``layers.<i>.*`` group per layer;
* an entry ``dynlen_lookahead`` in the model's ``config.json`` (``{"hidden": 64, "layers": [...]}``),
  which transformers keeps as an attribute of ``model.config``, so the probes load with the model
  from the same folder and a model without them is recognised before any forward.

The probes' matrix products are counted in the FLOPs (``flops``), so a policy that reads them pays
for them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from dynlen.atomic import write_text_atomic
from dynlen.errors import UserError

WEIGHTS_FILE = "lookahead_probes.safetensors"
CONFIG_KEY = "dynlen_lookahead"
DEFAULT_WIDTH = 64  # hidden units per probe: 1.4% of a MiniLM layer's FLOPs per token


class _Probe(nn.Module):
    """hidden -> 2 logits through one GELU layer (``width`` > 0) or a single linear map."""

    def __init__(self, hidden_size: int, width: int):
        super().__init__()
        if width:
            self.net = nn.Sequential(nn.Linear(hidden_size, width), nn.GELU(), nn.Linear(width, 2))
        else:
            self.net = nn.Linear(hidden_size, 2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net(hidden)

    def input_linears(self) -> tuple[nn.Linear, ...]:
        """The maps that read the hidden states: the engine may run them inside the layer's q/k/v GEMM."""
        return (self.net[0],) if isinstance(self.net, nn.Sequential) else (self.net,)

    def from_inputs(self, projected: Sequence[torch.Tensor]) -> torch.Tensor:
        """The logits from ``input_linears``' outputs: what ``forward`` computes after them."""
        (first,) = projected
        return self.net[2](self.net[1](first)) if isinstance(self.net, nn.Sequential) else first

    def output_map(self) -> nn.Linear | None:
        """The map after the exact GELU (what the native selection kernel computes), or None for a linear probe."""
        if isinstance(self.net, nn.Sequential) and self.net[1].approximate == "none":
            return self.net[2]
        return None


class LookaheadProbes(nn.Module):
    """Per-layer probes; ``probes(layer, hidden)`` gives (batch, tokens, 2) start/end logits.

    ``layers`` lists the encoder layers (0-based) that have a probe; layer 0 reads the embeddings,
    which know nothing of the question, so training starts at layer 1 by default.
    """

    def __init__(self, hidden_size: int, layers: list[int], width: int = 64):
        super().__init__()
        self.hidden_size, self.width, self.layer_ids = hidden_size, width, list(layers)
        self.layers = nn.ModuleDict({str(i): _Probe(hidden_size, width) for i in self.layer_ids})

    def has(self, layer: int) -> bool:
        return str(layer) in self.layers

    def require(self, layer: int) -> None:
        """One line naming the layer when it has no probe."""
        if not self.has(layer):
            raise UserError(
                f"the look-ahead probes have no probe for layer {layer + 1} (they cover layers "
                f"{', '.join(str(i + 1) for i in self.layer_ids)}); keep every token at that layer or retrain "
                "the probes with `make probes`"
            )

    def forward(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """(batch, tokens, 2) start/end logits."""
        self.require(layer)
        return self.layers[str(layer)](hidden)

    def input_linears(self, layer: int) -> tuple[nn.Linear, ...]:
        """The linears of ``layer``'s probe that read the hidden states: the engine may run them in the layer's projection."""
        return self.layers[str(layer)].input_linears()

    def output_map(self, layer: int) -> nn.Linear | None:
        """The output map of ``layer``'s probe when it is ``input_linears`` -> exact GELU -> this map, else None.

        Then the rest of the probe after its first map, and the selection, can run in one native call.
        """
        return self.layers[str(layer)].output_map()

    def from_inputs(self, layer: int, projected: Sequence[torch.Tensor]) -> torch.Tensor:
        """(batch, tokens, 2) logits from the outputs of ``input_linears(layer)``, computed by the caller."""
        return self.layers[str(layer)].from_inputs(projected)

    def flops(self, tokens: int) -> int:
        """FLOPs (2 x MACs) of one probe on one example's ``tokens`` tokens."""
        if not self.width:
            return 2 * tokens * self.hidden_size * 2
        return 2 * tokens * (self.hidden_size * self.width + self.width * 2)

    def description(self) -> dict:
        return {
            "hidden": self.width,
            "layers": self.layer_ids,
            "hidden_size": self.hidden_size,
        }

    def save(self, folder: str | Path, provenance: dict | None = None) -> None:
        """Weights beside the model plus the ``config.json`` entry that announces them."""
        from safetensors.torch import save_file

        folder = Path(folder)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, str(folder / WEIGHTS_FILE))
        config_path = folder / "config.json"
        config = json.loads(config_path.read_text())
        config[CONFIG_KEY] = {**self.description(), **(provenance or {})}
        write_text_atomic(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def probes_entry(model: nn.Module) -> dict | None:
    """The model's ``dynlen_lookahead`` config entry, or None when it was saved without probes."""
    entry = getattr(model.config, CONFIG_KEY, None)
    return entry if isinstance(entry, dict) else None


def saved_with_probes(name: str) -> bool:
    """Whether the model folder or hub id ``name`` announces look-ahead probes, read from its config alone."""
    folder = Path(name)
    if folder.is_dir():
        config = folder / "config.json"
        return config.is_file() and isinstance(json.loads(config.read_text()).get(CONFIG_KEY), dict)
    try:
        from transformers import AutoConfig

        return isinstance(getattr(AutoConfig.from_pretrained(name), CONFIG_KEY, None), dict)
    except (OSError, ValueError):  # unreachable or not a model: loading it later says why in one line
        return False


AUTO_SIGNIFICANCE = "auto"
WITH_PROBES = "lookahead+question"  # the best measured policy (docs/results.md, "Token retention")
WITHOUT_PROBES = "attention"


def auto_significance(name: str) -> tuple[str, str]:
    """The policy ``auto`` means for the model ``name``, and why, read from its config alone.

    A model saved with look-ahead probes selects by them with the question kept; one without them
    by attention received. Search and LengthDrop both resolve ``auto`` here, so a model is searched
    under the selection it was trained for.
    """
    if saved_with_probes(name):
        return WITH_PROBES, "the model has look-ahead probes"
    return WITHOUT_PROBES, (
        "the model has no look-ahead probes, so tokens are ranked by attention received, which keeps less "
        f"at the same F1; train its probes in minutes with `dynlen probes --model {name}` (make probes MODEL={name}; "
        "--out FOLDER for a read-only or hub model, then search --model FOLDER)"
    )


def load_probes(model: nn.Module, folder: str | Path | None = None) -> LookaheadProbes | None:
    """The probes saved with ``model`` (its ``name_or_path`` folder unless ``folder``), or None.

    A config entry without the weights file is an error, not a silent fallback: the model would
    otherwise run another significance policy than the one asked for.
    """
    entry = probes_entry(model)
    if entry is None:
        return None
    where = Path(folder or getattr(model, "name_or_path", "") or "")
    path = where / WEIGHTS_FILE
    if not path.is_file():
        path = _hub_file(str(where)) or path
    if not path.is_file():
        raise UserError(
            f"{where} announces look-ahead probes in config.json but {WEIGHTS_FILE} is missing; "
            "retrain them with `make probes MODEL=<folder>` or copy the file back"
        )
    from safetensors.torch import load_file

    if entry.get("match_heads"):
        raise UserError(
            f"{where}'s look-ahead probes match tokens against the question, which this version no longer runs; "
            "retrain them with `dynlen probes --retrain --model <folder>`"
        )
    layers = [int(i) for i in entry["layers"]]
    probes = LookaheadProbes(int(entry["hidden_size"]), layers, int(entry["hidden"]))
    probes.load_state_dict(load_file(str(path)))
    parameter = next(model.parameters())
    return probes.to(device=parameter.device, dtype=parameter.dtype).eval()


def _hub_file(name: str) -> Path | None:
    """The probes file of a hub model, where the hub is reachable (None offline or for a folder)."""
    if not name or Path(name).exists():
        return None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(name, WEIGHTS_FILE))
    except Exception:  # offline, no such file, or no such repository: the caller says what is missing
        return None
