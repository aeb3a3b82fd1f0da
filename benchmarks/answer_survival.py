"""Why does dropping cost F1? Do the gold answer's tokens survive to the last layer?

For each held-out feature that contains its answer, run the configuration at batch 1 and record
which positions the last layer still computes on. An answer whose start and end tokens were
dropped earlier is scored from restored (less processed) hidden states. The script reports, per
model, how often the answer survives, and how often the arg-max start/end hit the gold span in
each group, so a frontier that does not move can be traced to selection (answers dropped) or to
representation (answers kept but mis-scored).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from tqdm import tqdm

from bench.adaptive import LengthAdaptiveQA
from bench.config import LengthConfig
from bench.errors import exit_status
from bench.features import build_features
from bench.model_io import DEFAULT_MODEL_DIR, STANDARD_MODEL_DIR, load_qa_model, load_tokenizer, quiet_libraries
from bench.squad import DEFAULT_DEV_SET, limit_examples, load_squad, split_by_article

CONFIGS = ["ratios:1,0.9,0.81,0.729,0.656,0.59", "ratios:1,1,1,0.8,0.72,0.468", "ratios:1,1,0.85,0.807,0.323,0.145"]


class LastKept:
    """Records the positions the latest dropping layer kept (batch 1)."""

    def __init__(self) -> None:
        self.positions: torch.Tensor | None = None
        self._original = LengthAdaptiveQA._dropping_layer

    def __enter__(self) -> LastKept:
        recorder, original = self, self._original

        def dropping(qa, layer, hidden, valid, keep, positions):
            out = original(qa, layer, hidden, valid, keep, positions)
            recorder.positions = out[1][0]
            return out

        LengthAdaptiveQA._dropping_layer = dropping
        return self

    def __exit__(self, *exc) -> None:
        LengthAdaptiveQA._dropping_layer = self._original


def survival(model_dir: str, data, spec: str, limit: int) -> dict:
    tokenizer = load_tokenizer(model_dir)
    qa = LengthAdaptiveQA(load_qa_model(model_dir))
    config = LengthConfig.keep_all(qa.num_layers) if spec == "keep-all" else LengthConfig.parse(spec)
    feats = build_features(data.examples, tokenizer, with_labels=True)
    rows = [i for i in range(len(feats)) if feats.start_positions[i] > 0][:limit]
    groups = {"kept": [0, 0], "dropped": [0, 0]}  # [features, start and end both right]
    with torch.inference_mode(), LastKept() as rec:
        for i in tqdm(rows, desc=f"{model_dir} {config.label()}", leave=False):
            ids = torch.tensor([feats.input_ids[i]])
            types = torch.tensor([feats.token_type_ids[i]])
            rec.positions = None
            out = qa(ids, torch.ones_like(ids), types, config)
            start, end = feats.start_positions[i], feats.end_positions[i]
            kept = rec.positions is None or bool((rec.positions == start).any() & (rec.positions == end).any())
            hit = int(out.start_logits[0].argmax()) == start and int(out.end_logits[0].argmax()) == end
            group = groups["kept" if kept else "dropped"]
            group[0] += 1
            group[1] += int(hit)
    total = sum(g[0] for g in groups.values())
    return {
        "model": model_dir,
        "config": config.label(),
        "features": total,
        "answer_survives": groups["kept"][0] / total,
        "span_exact_when_kept": groups["kept"][1] / max(1, groups["kept"][0]),
        "span_exact_when_dropped": groups["dropped"][1] / max(1, groups["dropped"][0]),
        "span_exact_all": (groups["kept"][1] + groups["dropped"][1]) / total,
    }


def main() -> int:
    return exit_status(_run)


def _run() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=f"{STANDARD_MODEL_DIR},{DEFAULT_MODEL_DIR}")
    parser.add_argument("--data", default=DEFAULT_DEV_SET)
    parser.add_argument("--questions", type=int, default=400, help="held-out questions to draw features from")
    parser.add_argument("--features", type=int, default=300, help="answer-bearing features per model x config")
    parser.add_argument("--configs", default=";".join(CONFIGS))
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    quiet_libraries()
    _, heldout = split_by_article(load_squad(args.data))
    data = limit_examples(heldout, args.questions)
    rows = []
    for spec in ["keep-all"] + args.configs.split(";"):
        for model_dir in args.models.split(","):
            row = survival(model_dir, data, spec, args.features)
            rows.append(row)
            print(
                f"{row['model']:34} {row['config']:38} answer survives {row['answer_survives']:.1%}  "
                f"span exact: kept {row['span_exact_when_kept']:.1%}, dropped {row['span_exact_when_dropped']:.1%}, "
                f"all {row['span_exact_all']:.1%}",
                flush=True,
            )
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    sys.exit(main())
