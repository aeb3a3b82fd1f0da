"""Where a configuration's batch-1 latency goes beyond its FLOPs: choosing the tokens, or running fewer.

Four forwards of the same dev features, timed interleaved on every feature in one run:

* ``keep_all`` -- the engine keeping every token (the reference of every ratio);
* ``engine`` -- the configuration as users run it (its policy, probes, gathers, Drop-and-Restore);
* ``free_scores`` -- the same engine and token counts under a policy whose scores cost nothing
  (it keeps the leading tokens, question included), so the difference to ``engine`` is the policy's
  own scoring, e.g. the look-ahead probes;
* ``floor`` -- the same token counts with choosing them free altogether: each layer keeps a prefix of
  its rows (slices, no scores, no gathers, no restore buffer; queries only for the kept rows where
  the family and the policy allow, as the engine; the span head reads the last layer's rows padded
  with zeros). Its logits mean nothing; its time is what the kept token counts cost on this machine
  once selection costs nothing, the bound that engineering the selection can reach.

Batch 1, one thread count; the answer says how much of the gap between the FLOPs speedup and
the latency speedup is the selection's and how much the smaller GEMMs'. Writes ``selection_cost.json``
to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from dynlen.bench import harness
from dynlen.bench.features import collate
from dynlen.bench.latency import interleaved_batch_timings, ratio
from dynlen.bench.model_io import quiet_libraries
from dynlen.bench.runner import QARunner
from dynlen.bench.squad import limit_examples, load_squad
from dynlen.engine.adaptive import LengthAdaptiveQA
from dynlen.engine.config import LengthConfig, keep_counts_batch, resolve_config
from dynlen.engine.significance import POLICIES, SelectionInputs, SignificancePolicy, get_policy, register_policy
from dynlen.errors import UserError

DEFAULT_CONFIG = "ratios:1,1,0.7,0.5,0.35,0.25@lookahead+question"


class LeadingTokens(SignificancePolicy):
    """Benchmark-only policy: the earlier a token, the higher its score (nothing is read)."""

    name = "bench-leading"

    def scores(self, inputs: SelectionInputs) -> torch.Tensor:
        return -inputs.positions.to(inputs.hidden.dtype)


QUESTIONS = 300  # the first dev questions; their features are the timed sample


def build_parser() -> argparse.ArgumentParser:
    parser = harness.parser(__doc__, "model", "data", "threads", out="runs/selection_cost", questions=QUESTIONS)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="length configuration (default: %(default)s)")
    parser.add_argument(
        "--features", type=int, default=48, help="features timed, spread over the length range (default: %(default)s)"
    )
    parser.add_argument(
        "--repeats", type=int, default=9, help="timed rounds after one warm-up round (default: %(default)s)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return harness.run(run, args, argv, __file__)


def floor_forward(engine: LengthAdaptiveQA, config: LengthConfig, batch: dict) -> torch.Tensor:
    """The configuration's token counts with prefixes for kept tokens: no scores, gathers or restore (batch 1)."""
    ad = engine.adapter
    ids = batch["input_ids"]
    width = ids.shape[1]
    counts = [row[0] for row in keep_counts_batch(config, [width])]
    hidden = ad.embed(ids, batch.get("token_type_ids"))
    current = width
    # as the engine: queries for the kept rows only, unless the policy reads every query's attention
    project_late = ad.late_query and not get_policy(config.significance).needs_attention
    for layer, kept in zip(ad.layers, counts):
        late = project_late and kept < current
        inputs = ad.project_qkv(layer, hidden, query=not late)
        carry = tuple(t[:, :kept] for t in inputs.carry)
        query = ad.project_query(layer, carry) if late else inputs.query[:, :, :kept]
        context = torch.nn.functional.scaled_dot_product_attention(query, inputs.key, inputs.value, scale=ad.scaling)
        merged = context.transpose(1, 2).reshape(1, kept, -1)
        hidden = ad.finish_layer(layer, merged, carry)
        current = kept
    padded = hidden.new_zeros(1, width, hidden.shape[-1])
    padded[:, :current] = hidden
    start, _ = ad.span_head(padded)
    return start


def run(args: argparse.Namespace, figures: harness.Figures) -> None:
    if args.features < 1 or args.repeats < 1:
        raise UserError("--features and --repeats must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_libraries()
    runner = QARunner(args.model, limit_examples(load_squad(args.data), QUESTIONS), progress=False)
    config = resolve_config(args.config, runner.num_layers)
    config.check_layers(runner.num_layers, args.model)  # one line each, before any timing
    runner.adaptive.check_policy(config.significance, config.keep_question)
    if LeadingTokens.name not in POLICIES:
        register_policy(LeadingTokens())
    free = config.with_selection(LeadingTokens.name, config.keep_question)
    keep_all = LengthConfig.keep_all(runner.num_layers)
    picks = runner.latency_sample(args.features)
    batches = [collate(runner.features, [i], runner.pad_id) for i in picks]
    engine = runner.adaptive

    def forward(cfg: LengthConfig):
        return lambda b: engine(b["input_ids"], b["attention_mask"], b.get("token_type_ids"), cfg)

    named = {
        "keep_all": forward(keep_all),
        "engine": forward(config),
        "free_scores": forward(free),
        "floor": lambda b: floor_forward(engine, config, b),
    }
    with torch.inference_mode():
        timings = interleaved_batch_timings(named, batches, repeats=args.repeats, warmup=1, progress="timing")
    flops = runner.flops(config).speedup_vs_keep_all
    print(
        f"model {args.model}, {args.config}, {len(picks)} dev features at batch 1, {torch.get_num_threads()} threads; "
        f"FLOPs speedup {flops:.2f}x"
    )
    rows = {}
    for name in ("engine", "free_scores", "floor"):
        r = ratio(timings["keep_all"], timings[name])
        ms = 1000 * timings[name].median / len(picks)
        rows[name] = {"ms_per_feature": ms, "speedup_vs_keep_all": r.as_dict(), "fidelity": r.median / flops}
        figures[f"{name}_latency_speedup_vs_keep_all"] = r.median
        print(f"  {name:12s} {ms:6.2f} ms/feature  latency speedup {r}  fidelity {r.median / flops:.2f}")
    keep_ms = 1000 * timings["keep_all"].median / len(picks)
    print(f"  {'keep_all':12s} {keep_ms:6.2f} ms/feature")
    figures["flops_speedup_vs_keep_all"] = flops
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        report = {
            "model": args.model,
            "config": config.label(),
            "features": len(picks),
            "batch_size": 1,
            "threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "flops_speedup_vs_keep_all": flops,
            "keep_all_ms_per_feature": keep_ms,
            "contenders": rows,
        }
        (out / "selection_cost.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out / 'selection_cost.json'}")


if __name__ == "__main__":
    sys.exit(main())
