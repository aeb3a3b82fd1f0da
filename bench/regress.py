"""CI guard: the speedups of the committed reference configurations must not regress.

Runs without the trained model: a random model of the default model's shape costs the same
FLOPs and time. FLOPs are counted by ``FlopCounterMode`` on the model as it runs (so a bug
that stops tokens from really leaving the tensors shows up), and must match the committed
values exactly; latency speedup over keep-all is measured interleaved in one run and may
fall at most the latency tolerance (15%) below the committed value. The reference here is the model's stock
forward, not the engine's keep-all: a kernel that stops loading, or a slower keep-all path, then shows
up as a fall too, where a ratio between two engine runs could hide it.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from dynlen.atomic import write_text_atomic
from dynlen.bench.latency import contenders, interleaved_batch_timings, ratio
from dynlen.bench.model_io import random_bert_qa
from dynlen.engine.adaptive import LengthAdaptiveQA
from dynlen.engine.config import LengthConfig
from dynlen.engine.probes import DEFAULT_WIDTH, LookaheadProbes
from dynlen.errors import UserError

# The committed baseline sits beside the guard; nothing here writes under results/.
BASELINE = Path(__file__).with_name("speedup-baseline.json")
DEFAULT_SHAPE = {"layers": 6, "hidden": 384, "heads": 12, "ffn": 1536, "vocab": 30522}


@dataclass(frozen=True)
class Measured:
    label: str
    flops_speedup: float
    latency_speedup: float | None


SEP = 102  # BERT's [SEP]: ends the question segment that '+question' policies keep
QUESTION_TOKENS = 14


def fixed_inputs(count: int, vocab: int, seed: int = 0) -> list[torch.Tensor]:
    """Deterministic [CLS] question [SEP] context [SEP] sequences with SQuAD-like lengths (100 to 384 tokens)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(100, 385, (count,), generator=g).tolist()
    out = []
    for n in lengths:
        ids = torch.cat([torch.tensor([[101]]), torch.randint(1000, vocab, (1, n - 1), generator=g)], dim=1)
        ids[0, QUESTION_TOKENS + 1] = ids[0, -1] = SEP
        out.append(ids)
    return out


def random_probes(shape: dict, seed: int = 0) -> LookaheadProbes:
    """Look-ahead probes of the default width for every layer but the first: they cost what trained ones cost."""
    torch.manual_seed(seed)
    return LookaheadProbes(shape["hidden"], list(range(1, shape["layers"])), DEFAULT_WIDTH).eval()


def counted_flops(model: LengthAdaptiveQA, inputs: list[torch.Tensor], config: LengthConfig) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        for ids in inputs:
            model(ids, torch.ones_like(ids), None, config=config, attention="eager")
    return counter.get_total_flops()


def measure(
    configs: dict[str, LengthConfig], shape: dict, features: int, repeats: int, latency: bool
) -> list[Measured]:
    model = random_bert_qa(shape)
    probes = random_probes(shape)
    adaptive = LengthAdaptiveQA(model, probes=probes, sep_token_id=SEP)
    # FlopCounterMode cannot see inside the native kernel
    counting = LengthAdaptiveQA(model, kernels=False, probes=probes, sep_token_id=SEP)
    inputs = fixed_inputs(features, shape["vocab"])
    keep_all = LengthConfig.keep_all(adaptive.num_layers)
    base_flops = counted_flops(counting, inputs, keep_all)
    out = []
    for label, config in tqdm(configs.items(), desc="re-measuring the baseline", unit="config", file=sys.stderr):
        flops_speedup = base_flops / counted_flops(counting, inputs, config)
        lat = None
        if latency:
            timed = contenders(config=(adaptive, config), stock=model)
            with torch.inference_mode():
                t = interleaved_batch_timings(timed, [{"input_ids": ids} for ids in inputs], repeats=repeats, warmup=1)
            lat = ratio(t["stock"], t["config"]).median
        out.append(Measured(label, flops_speedup, lat))
    return out


def machine_id() -> str:
    """The CPU model and torch's thread count: what a latency ratio depends on besides the code.

    The reference is the stock forward, whose speed against the engine's kernels differs by CPU
    (a baseline from one CPU read 1.08x at constant 0.9 where another reads 1.35x), so a latency
    floor only binds on the machine kind that measured it.
    """
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"


def load_baseline(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"no committed speedup baseline at {path}; create it with `make regress-update`")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{path} is damaged ({exc}); restore it from git or rebuild it with `make regress-update`"
        ) from None


def check(baseline: dict, repeats: int, tolerance: float, latency: bool) -> tuple[bool, str]:
    """Compare fresh measurements with the committed ones; returns (passed, readable table)."""
    configs = {e["label"]: LengthConfig.from_dict(e["config"]) for e in baseline["entries"]}
    measured_on, here = baseline.get("machine"), machine_id()
    foreign = latency and measured_on is not None and measured_on != here
    latency = latency and not foreign
    fresh = {m.label: m for m in measure(configs, baseline["shape"], baseline["features"], repeats, latency)}
    lines = []
    if foreign:
        lines.append(
            f"latency not compared: the baseline was measured on {measured_on}, this is {here} "
            "(FLOPs still must match; `make regress-update` here makes a latency baseline for this machine)"
        )
    lines += [
        f"{'configuration':44} {'FLOPs x (committed -> now)':>28} {'latency x (committed -> now, floor)':>40}  verdict"
    ]
    passed = True
    for entry in baseline["entries"]:
        now = fresh[entry["label"]]
        flops_ok = abs(now.flops_speedup - entry["flops_speedup"]) <= 1e-9 * entry["flops_speedup"]
        floor = entry["latency_speedup"] * (1 - tolerance)
        lat_ok = (not latency) or now.latency_speedup >= floor
        verdict = (
            "ok"
            if flops_ok and lat_ok
            else "REGRESSED" + (" (FLOPs)" if not flops_ok else "") + (" (latency)" if not lat_ok else "")
        )
        passed &= flops_ok and lat_ok
        lat_text = (
            f"{entry['latency_speedup']:.3f} -> {now.latency_speedup:.3f} (>= {floor:.3f})"
            if latency
            else "not measured"
        )
        lines.append(
            f"{entry['label'][:44]:44} {entry['flops_speedup']:>12.6f} -> {now.flops_speedup:<12.6f} {lat_text:>40}  {verdict}"
        )
    return passed, "\n".join(lines)


def update(
    configs: dict[str, LengthConfig], path: Path, features: int, repeats: int, shape: dict | None = None, runs: int = 3
) -> None:
    """Write the baseline; each latency is the median over ``runs`` whole measurements.

    One run's reading of a configuration can sit 10% above its usual value on a noisy machine,
    and a baseline that high makes every later check flaky; the median of a few runs does not.
    """
    if runs < 1:
        raise UserError(f"--runs must be at least 1; got {runs}")
    shape = shape or DEFAULT_SHAPE
    sessions = [measure(configs, shape, features, repeats, latency=True) for _ in range(runs)]
    latency = {
        label: statistics.median(m.latency_speedup for s in sessions for m in s if m.label == label)
        for label in configs
    }
    payload = {
        "about": "speedups over keep-all of the reference configurations on a random model of the default "
        f"shape; FLOPs counted by FlopCounterMode (exact), latency interleaved median, median of {runs} "
        "runs (make regress)",
        "machine": machine_id(),
        "shape": shape,
        "features": features,
        "entries": [
            {
                "label": m.label,
                "config": configs[m.label].to_dict(),
                "flops_speedup": m.flops_speedup,
                "latency_speedup": latency[m.label],
            }
            for m in sessions[0]
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")
