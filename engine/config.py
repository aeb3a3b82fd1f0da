"""The length configuration: how many tokens each encoder layer keeps.

Every part of the suite speaks this one value: ``bench`` applies it, ``search`` samples
it, ``reports`` prints it, ``choose`` writes it. It is validated on construction, so an
invalid configuration never reaches a model.

Two forms:

* ``ratios`` -- fractions of the example's real (unpadded) token count. One configuration
  fits every input length under dynamic padding.
* ``counts`` -- absolute token counts at max length 384, as the Length-Adaptive Transformer
  and Dynamic-TinyBERT publish them (e.g. 269,253,252,202,104,34). Padding is dropped first,
  so an example keeps ``min(count, tokens it still has)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from dynlen.atomic import write_text_atomic
from dynlen.engine.merging import DEFAULT_RETENTION, RETENTIONS, get_retention
from dynlen.engine.precision import DEFAULT_PRECISION, PRECISIONS, get_precision
from dynlen.errors import UserError

Kind = Literal["ratios", "counts"]
KINDS: tuple[str, ...] = ("ratios", "counts")
COUNTS_MAX_LENGTH = 384
DEFAULT_SIGNIFICANCE = "attention"


@dataclass(frozen=True)
class LengthConfig:
    """Per-layer token budget; ``values[i]`` is what layer ``i`` keeps after its self-attention."""

    kind: Kind
    values: tuple[float, ...]
    max_length: int = COUNTS_MAX_LENGTH
    significance: str = (
        DEFAULT_SIGNIFICANCE  # which tokens a layer keeps: a name in dynlen.engine.significance.POLICIES
    )
    keep_question: bool = False  # the question segment ([CLS] question [SEP]) always stays
    precision: str = DEFAULT_PRECISION  # the matrix products' precision: a name in dynlen.engine.precision.PRECISIONS
    retention: str = DEFAULT_RETENTION  # what dropped tokens leave behind: a name in dynlen.engine.merging.RETENTIONS

    def __post_init__(self) -> None:
        self._check_selection()
        if self.kind not in KINDS:
            raise UserError(f"configuration kind must be one of {KINDS}, got {self.kind!r}")
        if not self.values:
            raise UserError("a configuration needs one value per encoder layer; got none")
        values = tuple(float(v) for v in self.values) if self.kind == "ratios" else tuple(self.values)
        object.__setattr__(self, "values", values)
        for layer, value in enumerate(values, start=1):
            self._check_value(layer, value)
        for layer in range(1, len(values)):
            if values[layer] > values[layer - 1]:
                raise UserError(
                    f"layer {layer + 1} keeps {values[layer]:g}, more than layer {layer} ({values[layer - 1]:g}): "
                    "a layer cannot keep tokens the previous layer dropped; make the values non-increasing"
                )

    def _check_selection(self) -> None:
        from dynlen.engine.significance import POLICIES  # the registry imports torch; the check needs it only here

        if self.significance not in POLICIES:
            raise UserError(
                f"unknown significance policy {self.significance!r}; choose one of {', '.join(sorted(POLICIES))}"
            )
        if not isinstance(self.keep_question, bool):
            raise UserError(f"keep_question must be true or false, got {self.keep_question!r}")
        if not isinstance(self.precision, str):
            raise UserError(f"precision must be a name such as 'bf16', got {self.precision!r}")
        get_precision(self.precision)
        if not isinstance(self.retention, str):
            raise UserError(f"retention must be a name such as 'drop', got {self.retention!r}")
        get_retention(self.retention)

    def with_selection(self, significance: str, keep_question: bool) -> LengthConfig:
        """The same token budget under another significance policy."""
        return replace(self, significance=significance, keep_question=keep_question)

    def with_precision(self, precision: str) -> LengthConfig:
        """The same token budget and selection with the products at another precision."""
        return replace(self, precision=precision)

    def with_retention(self, retention: str) -> LengthConfig:
        """The same token budget, selection and precision, with dropped tokens kept as ``retention`` says."""
        return replace(self, retention=retention)

    @property
    def selection(self) -> str:
        """The policy as one word: ``attention``, ``lookahead+question``, ..."""
        return self.significance + ("+question" if self.keep_question else "")

    @property
    def tail(self) -> str:
        """What follows '@' in a label: the selection, '/precision' unless float32 and '/retention' unless drop
        (``lookahead+question/bf16``, ``attention/merge-window``)."""
        precision = "" if self.precision == DEFAULT_PRECISION else f"/{self.precision}"
        return self.selection + precision + ("" if self.retention == DEFAULT_RETENTION else f"/{self.retention}")

    def _check_value(self, layer: int, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise UserError(f"layer {layer}: {value!r} is not a number")
        if self.kind == "ratios":
            if not 0.0 < value <= 1.0:
                raise UserError(
                    f"layer {layer}: ratio {value:g} is out of range; ratios are shares of the real token "
                    "count in (0, 1], and every layer keeps at least 1 token"
                )
        else:
            if int(value) != value:
                raise UserError(f"layer {layer}: count {value!r} is not a whole number of tokens")
            if not 1 <= value <= self.max_length:
                raise UserError(
                    f"layer {layer}: count {int(value)} is out of range; counts are tokens kept at max length "
                    f"{self.max_length}, between 1 and {self.max_length}"
                )

    # --- constructors -------------------------------------------------------------------
    @classmethod
    def keep_all(cls, num_layers: int) -> LengthConfig:
        return cls("ratios", (1.0,) * num_layers)

    @classmethod
    def constant(cls, num_layers: int, ratio: float, start_layer: int = 1) -> LengthConfig:
        """Keep ``ratio`` of the previous layer's tokens at every layer from ``start_layer`` on."""
        return cumulative_ratios([ratio if layer >= start_layer else 1.0 for layer in range(1, num_layers + 1)])

    @classmethod
    def from_values(cls, values: Iterable[float], kind: str | None = None) -> LengthConfig:
        """Ratios when every value is ≤ 1 and ``kind`` is not given; counts otherwise."""
        vals = list(values)
        if kind is None:
            kind = "ratios" if vals and all(float(v) <= 1.0 for v in vals) else "counts"
        if kind == "counts":
            vals = [int(v) if float(v).is_integer() else v for v in vals]
        return cls(kind, tuple(vals))  # type: ignore[arg-type]

    @classmethod
    def parse(cls, text: str) -> LengthConfig:
        """Reads '269,253,...', 'ratios:1,0.9,...', optionally followed by '@policy' or '@policy+question',
        and then '/precision' (``ratios:1,0.9@lookahead+question/bf16``).

        ``keep-all`` is read by :func:`resolve_config`, which knows the model's depth.
        """
        text = text.strip()
        selection = None
        if "@" in text:
            text, selection = (part.strip() for part in text.split("@", 1))
        kind = None
        if ":" in text:
            kind, text = (part.strip() for part in text.split(":", 1))
            if kind not in KINDS:
                raise UserError(f"unknown configuration kind {kind!r}; write 'ratios:...' or 'counts:...'")
        try:
            values = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise UserError(
                f"cannot read configuration {text!r}: give comma-separated numbers, e.g. 269,253,252,202,104,34"
            ) from None
        for layer, value in enumerate(values, start=1):
            if math.isinf(value):  # 'inf', or a number past float range such as 1e400
                raise UserError(f"layer {layer}: {value} is not a finite number; give a ratio in (0, 1] or a count")
        config = cls.from_values(values, kind)
        return config if selection is None else apply_tail(config, selection)

    # --- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        values = [int(v) for v in self.values] if self.kind == "counts" else list(self.values)
        out: dict = {"kind": self.kind, "values": values}
        if self.kind == "counts":
            out["max_length"] = self.max_length
        if self.significance != DEFAULT_SIGNIFICANCE or self.keep_question:
            out["significance"] = self.significance
            out["keep_question"] = self.keep_question
        if self.precision != DEFAULT_PRECISION:
            out["precision"] = self.precision
        if self.retention != DEFAULT_RETENTION:
            out["retention"] = self.retention
        return out

    @classmethod
    def from_dict(cls, raw: object) -> LengthConfig:
        if isinstance(raw, dict) and "config" in raw and isinstance(raw["config"], dict):
            raw = raw["config"]  # a `choose` output or metrics.json holds the configuration under "config"
        if not isinstance(raw, dict) or "kind" not in raw or "values" not in raw:
            raise UserError(
                'a configuration file is JSON like {"kind": "ratios", "values": [1.0, 0.9, ...]} '
                'or {"kind": "counts", "values": [269, 253, ...]}'
            )
        check_config_fields(raw)
        values = raw["values"]
        config = cls(raw["kind"], tuple(values), int(raw.get("max_length", COUNTS_MAX_LENGTH)))
        config = config.with_selection(raw.get("significance", DEFAULT_SIGNIFICANCE), raw.get("keep_question", False))
        config = config.with_precision(raw.get("precision", DEFAULT_PRECISION))
        return config.with_retention(raw.get("retention", DEFAULT_RETENTION))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> LengthConfig:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"configuration file not found: {path}")
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{path} is not valid UTF-8 JSON ({exc}); save the configuration as UTF-8 JSON") from None

    # --- meaning ------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.values)

    @property
    def is_keep_all(self) -> bool:
        if self.kind == "ratios":
            return all(v >= 1.0 for v in self.values)
        return all(v >= self.max_length for v in self.values)

    def check_layers(self, num_layers: int, model_name: str = "the model") -> None:
        if self.num_layers != num_layers:
            raise UserError(
                f"the configuration has {self.num_layers} values but {model_name} has {num_layers} encoder layers; "
                f"give one value per layer"
            )

    def keep_counts(self, real_length: int) -> list[int]:
        """Tokens each layer keeps for one example with ``real_length`` unpadded tokens."""
        out, current = [], real_length
        for value in self.values:
            if self.kind == "ratios":
                want = math.ceil(value * real_length - 1e-9)
            else:
                want = int(value)
            current = max(1, min(current, want))
            out.append(current)
        return out

    def label(self, precise: bool = False) -> str:
        """'ratios:1,0.9,...' or 'counts:269,...', with '@policy[+question][/precision]' unless it is plain
        attention in float32.

        Ratios show 3 significant digits, for tables; ``precise`` writes them so that ``parse``
        gives back the same numbers, for a label that is stored and read again.
        """
        if self.kind == "counts":
            text = "counts:" + ",".join(str(int(v)) for v in self.values)
        else:
            text = "ratios:" + ",".join(str(float(v)) if precise else f"{v:.3g}" for v in self.values)
        return text if self.tail == DEFAULT_SIGNIFICANCE else f"{text}@{self.tail}"

    def __str__(self) -> str:
        return self.label()


def apply_tail(config: LengthConfig, tail: str) -> LengthConfig:
    """``config`` under what a label's '@' part names: 'lookahead+question', 'attention/bf16',
    'lookahead+question/bf16/merge-window': the selection, then a precision and a retention, each optional."""
    selection, *parts = tail.split("/")
    config = config.with_selection(*parse_selection(selection))
    precision, retention = DEFAULT_PRECISION, DEFAULT_RETENTION
    for part in (p.strip() for p in parts):
        if part in RETENTIONS:
            retention = part
        elif part in PRECISIONS:
            precision = part
        elif part:
            raise UserError(
                f"unknown precision {part!r} in {tail!r}, and no retention of that name: precisions are "
                f"{', '.join(PRECISIONS)}; retentions are {', '.join(RETENTIONS)} (the measured merge rules "
                "need dynlen.engine.merge_rules.register_merges() first)"
            )
    return config.with_precision(precision).with_retention(retention)


def parse_selection(text: str) -> tuple[str, bool]:
    """'lookahead+question' -> ('lookahead', True); 'attention' -> ('attention', False)."""
    text = text.strip()
    keep_question = text.endswith("+question")
    return (text[: -len("+question")] if keep_question else text), keep_question


# --- a configuration's cells in a CSV row (frontier.csv) ------------------------------------
def config_cells(config: LengthConfig) -> dict[str, str]:
    """The ``kind``, ``values`` and ``significance`` cells of a configuration's CSV row (values joined by ';').

    ``str()`` of a float round-trips exactly, so :func:`config_from_cells` gives back the same
    configuration, policy included: the regression guard re-measures what the report printed.
    """
    values = [int(v) for v in config.values] if config.kind == "counts" else list(config.values)
    return {"kind": config.kind, "values": ";".join(str(v) for v in values), "significance": config.tail}


def config_from_cells(row: Mapping[str, str]) -> LengthConfig:
    """The configuration a CSV row's cells describe (rows written before policies existed read as attention)."""
    config = LengthConfig.from_values([float(v) for v in row["values"].split(";")], row["kind"])
    return apply_tail(config, row.get("significance") or DEFAULT_SIGNIFICANCE)


def cumulative_ratios(shares: Sequence[float], floor: float = 0.0) -> LengthConfig:
    """Per-layer shares of the *previous* layer's tokens -> ratios of the input length.

    The search samples, and LengthDrop draws, each layer's share of what the layer before kept,
    because any shares in (0, 1] then give a non-increasing configuration. Ratios are rounded to
    6 decimals so that equal configurations get equal labels; ``floor`` keeps a long product of
    small shares from rounding to 0, which no configuration may hold.
    """
    values, keep = [], 1.0
    for share in shares:
        keep *= share
        values.append(max(floor, round(keep, 6)))
    return LengthConfig("ratios", tuple(values))


def resolve_config(spec: str | None, num_layers: int) -> LengthConfig:
    """A CLI value: empty/'keep-all', a JSON file path, or inline numbers."""
    if spec is None or spec.strip() in ("", "keep-all"):
        return LengthConfig.keep_all(num_layers)
    head, at, tail = spec.strip().partition("@")
    if head.startswith("keep-all"):  # keep-all@lookahead+question/bf16, keep-all/bf16
        head, slash, precision = head.partition("/")
        if head == "keep-all" and (at or slash):
            return apply_tail(LengthConfig.keep_all(num_layers), tail if at else f"{DEFAULT_SIGNIFICANCE}/{precision}")
    if spec.endswith(".json") or Path(spec).is_file():
        return LengthConfig.load(spec)
    return LengthConfig.parse(spec)


def keep_counts_batch(config: LengthConfig, real_lengths: Sequence[int]) -> list[list[int]]:
    """Per-layer keep counts for each example: ``[layer][example]``."""
    per_example = [config.keep_counts(n) for n in real_lengths]
    return [list(col) for col in zip(*per_example)] if per_example else [[] for _ in config.values]


def check_config_fields(raw: dict) -> None:
    """The JSON types of a configuration file's fields, checked before any arithmetic on them.

    JSON hands over what a person typed: ``Infinity``, ``"0.9"``, ``true``, ``"max_length": "abc"``
    or ``0``. Each gets one line naming the field and what it must be, instead of a ``ValueError``
    from ``float()`` or a "between 1 and 0" range message.
    """
    values = raw["values"]
    if not isinstance(values, list) or not values:
        raise UserError("configuration 'values' must be a non-empty list, one number per layer")
    for layer, value in enumerate(values, start=1):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(
                f"configuration 'values': layer {layer} is {value!r}, not a number; write it without quotes"
            )
        if not math.isfinite(value):
            raise UserError(f"configuration 'values': layer {layer} is {value}, not a finite number")
    for key, kind, example in (
        ("significance", str, '"attention"'),
        ("keep_question", bool, "true"),
        ("precision", str, '"bf16"'),
        ("retention", str, '"merge-window"'),
    ):
        if key in raw and not isinstance(raw[key], kind):
            raise UserError(f"configuration {key!r} is {raw[key]!r}, not a {kind.__name__}; write e.g. {example}")
    if "max_length" in raw:
        length = raw["max_length"]
        if isinstance(length, bool) or not isinstance(length, (int, float)) or not math.isfinite(length):
            raise UserError(f"configuration 'max_length' is {length!r}, not a whole number of tokens (e.g. 384)")
        if int(length) != length or length < 1:
            raise UserError(
                f"configuration 'max_length' is {length!r}; it must be a whole number of tokens, at least 1"
            )
