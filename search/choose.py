"""Pick, for a budget, the configuration with the highest held-out F1 from a finished run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from dynlen.atomic import write_text_atomic
from dynlen.bench.exported import LOAD_SNIPPET, PROGRAM_FILE
from dynlen.engine.config import LengthConfig
from dynlen.errors import UserError
from dynlen.search.budget import MET, UNSURE, Budget, keep_all_noise, verdict
from dynlen.search.records import RunInfo, TrialPoint, read_run


class NothingMeetsBudget(UserError):
    """No re-scored configuration of the run meets the budget."""


class TooNoisyToChoose(NothingMeetsBudget):
    """The run was timed too briefly to tell whether any configuration meets a latency budget."""


def choose(run_dir: Path, budget: Budget | None) -> tuple[TrialPoint, dict]:
    """The best held-out configuration meeting ``budget``, and the JSON record describing it.

    A latency budget counts a configuration only when its timing rounds, widened by keep-all's
    own noise against itself, clear the budget's edge; keep-all is never faster than itself.
    """
    info, points = read_run(run_dir)
    scored = [p for p in points if p.heldout is not None]
    if not scored:
        raise UserError(f"{run_dir} has no held-out scores; re-run `make pareto RUN={run_dir.name}`")
    meeting = scored if budget is None else _meeting(run_dir, budget, scored)
    best = max(meeting, key=lambda p: (p.heldout.f1, p.heldout.flops_speedup_vs_keep_all))
    record = {
        "config": best.config,
        "label": best.label,
        "model": info.model,
        "weights_sha": _weights_sha(info),  # the Answerer refuses this choice for other weights
        "num_layers": best.length_config.num_layers,
        "run": str(run_dir),
        "budget": str(budget) if budget else None,
        "heldout_split": info.heldout_split,
        "heldout": best.heldout.to_record(),
        "trial": best.number,
    }
    if info.extra.get("smoke_model"):
        record["smoke_model"] = info.extra["smoke_model"]
    return best, record


def _meeting(run_dir: Path, budget: Budget, scored: list[TrialPoint]) -> list[TrialPoint]:
    """The points that meet ``budget`` beyond doubt; one line saying why when none does."""
    keep_all = next((p.heldout for p in scored if p.baseline == "keep-all"), None)
    noise = keep_all_noise(keep_all) if budget.needs_latency else 0.0
    verdicts = {p.number: verdict(budget, p.heldout, noise, p.baseline == "keep-all") for p in scored}
    meeting = [p for p in scored if verdicts[p.number] == MET]
    if meeting:
        return meeting
    unsure = [p for p in scored if verdicts[p.number] == UNSURE]
    if unsure:
        own = keep_all.latency_speedup_vs_keep_all if keep_all else None
        raise TooNoisyToChoose(
            f"{run_dir} was timed too briefly to choose for {budget}: {len(unsure)} configuration(s) have a latency "
            f"interval that holds {budget.threshold:g} (best: {max(unsure, key=lambda p: p.heldout.f1).label}"
            + (f"; keep-all timed against itself reads {own:.2f}x" if own else "")
            + "); re-run the search with more --latency-repeats and --latency-sample, or choose on FLOPs"
        )
    closest = min(scored, key=lambda p: budget.violation(p.heldout))
    raise NothingMeetsBudget(
        f"no configuration of {run_dir} meets {budget} on the held-out split; closest: {closest.label} "
        f"({budget.name} = {budget.value(closest.heldout):.3g}, F1 {closest.heldout.f1:.2f})"
    )


def _weights_sha(info: RunInfo) -> str:
    """The run's model's weights fingerprint: recorded by the search, else read from the model now."""
    if info.extra.get("weights_sha"):
        return info.extra["weights_sha"]
    from dynlen.bench.model_io import load_qa_model, weights_fingerprint

    try:
        return weights_fingerprint(load_qa_model(info.model))
    except UserError as exc:
        raise UserError(
            f"the run's model {info.model!r} cannot be loaded here to fingerprint the choice ({exc}); "
            "run choose where the model is, or re-run the search to record it"
        ) from None


# the self-contained modeling file an export carries, and the class its auto_map names
MODELING_FILE = Path(importlib.util.find_spec("dynlen.bench.modeling_dynlen").origin)
REMOTE_CLASS = "DynlenBertForQuestionAnswering"
README_FILE = "README.md"


def write_choice(record: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")


def export_model(record: dict, out: Path) -> Path:
    """A Hugging Face folder that serves the chosen configuration with nothing else.

    The model's weights and tokenizer, its look-ahead probes when it has them, and the chosen
    configuration (policy and precision included) under ``dynlen_length_config`` in ``config.json``:
    an ``Answerer(out)`` or ``dynlen answer --model out`` applies it by default. For BERT-layout
    models under attention or look-ahead selection the folder also carries its own modeling file
    (``auto_map``), so ``from_pretrained(out, trust_remote_code=True)`` and the ``question-answering``
    pipeline run the drops without dynlen; plain ``from_pretrained`` still loads the stock model.
    """
    import shutil

    from dynlen.bench.model_io import load_qa_model, load_tokenizer
    from dynlen.engine.probes import WEIGHTS_FILE

    source = record["model"]
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; give --export a new folder")
    model, tokenizer = load_qa_model(source), load_tokenizer(source)
    model.config.dynlen_length_config = {
        "config": record["config"],
        "label": record["label"],
        "chosen_from": record["run"],
        "budget": record["budget"],
        "heldout": record["heldout"],
    }
    if getattr(model.config, "sep_token_id", None) is None:
        model.config.sep_token_id = tokenizer.sep_token_id  # the modeling file finds the question by it
    remote = serves_itself(model, record["config"])
    if remote:
        model.config.auto_map = {"AutoModelForQuestionAnswering": f"{MODELING_FILE.stem}.{REMOTE_CLASS}"}
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    probes = Path(source) / WEIGHTS_FILE
    if probes.is_file():
        shutil.copy2(probes, out / WEIGHTS_FILE)
    if remote:
        shutil.copy2(MODELING_FILE, out / MODELING_FILE.name)
        why_not = write_program(out)
    else:
        why_not = (
            f"the self-contained drop runs BERT-layout models under attention or lookahead selection, not "
            f"{model.config.model_type} under {LengthConfig.from_dict(record['config']).selection}"
        )
        print(f"note: {out} loads as the stock model outside dynlen: {why_not}")
    if why_not:
        print(f"note: no {PROGRAM_FILE} in {out}: {why_not}")
    write_readme(out, record, remote, why_not)
    readable(out)
    return out


def write_program(out: Path) -> str | None:
    """Export the folder's own remote-code model to ``out/dynlen_exported.pt2``; None, or why no program was written."""
    from dynlen.bench.exported import Unexportable, export_program
    from dynlen.bench.modeling_dynlen import DynlenBertForQuestionAnswering

    model = DynlenBertForQuestionAnswering.from_pretrained(out).eval()
    try:
        export_program(model, out / PROGRAM_FILE)
    except Unexportable as exc:
        return str(exc)
    return None


def write_readme(out: Path, record: dict, remote: bool, why_not: str | None) -> None:
    """How to load the folder three ways, so whoever receives it needs no dynlen documentation."""
    import torch

    lines = [
        f"# {Path(record['model']).name}: {record['label']}",
        "",
        f"A question-answering model with the length configuration `{record['label']}` chosen from "
        f"`{record['run']}` (budget: {record['budget'] or 'none'}); the configuration is `dynlen_length_config` "
        "in config.json.",
        "",
        "- with dynlen: `dynlen answer --model THIS_FOLDER ...` or `dynlen.bench.answer.Answerer(THIS_FOLDER)`.",
    ]
    if remote:
        lines.append(
            "- with transformers alone: `AutoModelForQuestionAnswering.from_pretrained(THIS_FOLDER, "
            "trust_remote_code=True)` runs the drops through `modeling_dynlen.py`."
        )
    if why_not:
        lines += ["", f"No `{PROGRAM_FILE}`: {why_not}."]
    else:
        lines += [
            f"- with torch alone: `{PROGRAM_FILE}` is the same drop as a `torch.export` program, saved by torch "
            f"{torch.__version__} (any batch size, 2 to {_longest(out)} tokens, any padding; padded positions read "
            "float32's minimum):",
            "",
            "```python",
            LOAD_SNIPPET,
            "```",
        ]
    write_text_atomic(out / README_FILE, "\n".join(lines) + "\n")


def _longest(folder: Path) -> int:
    """The longest input the folder's model takes (its position table)."""
    return int(json.loads((folder / "config.json").read_text())["max_position_embeddings"])


def readable(folder: Path) -> None:
    """Files others may read (0644; safetensors writes its files 0600): a model folder is meant to be shared."""
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o644)


def serves_itself(model, config: dict) -> bool:
    """Whether the export's own modeling file (``bench/modeling_dynlen.py``) can run this model and selection
    (it drops; a merging retention is served by dynlen's engine only)."""
    selection = LengthConfig.from_dict(config)
    return (
        model.config.model_type == "bert"
        and selection.significance in ("attention", "lookahead")
        and selection.retention == "drop"
    )
