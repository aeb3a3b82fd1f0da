"""Pick, for a budget, the configuration with the highest held-out F1 from a finished run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from dynlen.atomic import write_text_atomic
from dynlen.engine.config import LengthConfig
from dynlen.errors import UserError
from dynlen.search.budget import Budget
from dynlen.search.records import TrialPoint, read_run


class NothingMeetsBudget(UserError):
    """No re-scored configuration of the run meets the budget."""


def choose(run_dir: Path, budget: Budget | None) -> tuple[TrialPoint, dict]:
    """The best held-out configuration meeting ``budget``, and the JSON record describing it."""
    info, points = read_run(run_dir)
    scored = [p for p in points if p.heldout is not None]
    if not scored:
        raise UserError(f"{run_dir} has no held-out scores; re-run `make pareto RUN={run_dir.name}`")
    meeting = [p for p in scored if budget is None or budget.is_met(p.heldout)]
    if not meeting:
        closest = min(scored, key=lambda p: budget.violation(p.heldout))
        raise NothingMeetsBudget(
            f"no configuration of {run_dir} meets {budget} on the held-out split; closest: {closest.label} "
            f"({budget.name} = {budget.value(closest.heldout):.3g}, F1 {closest.heldout.f1:.2f})"
        )
    best = max(meeting, key=lambda p: (p.heldout.f1, p.heldout.flops_speedup_vs_keep_all))
    record = {
        "config": best.config,
        "label": best.label,
        "model": info.model,
        "weights_sha": _weights_sha(info.model),  # the Answerer refuses this choice for other weights
        "num_layers": best.length_config.num_layers,
        "run": str(run_dir),
        "budget": str(budget) if budget else None,
        "heldout_split": info.heldout_split,
        "heldout": best.heldout.to_record(),
        "trial": best.number,
    }
    return best, record


def _weights_sha(model: str) -> str | None:
    """The run's model's weights fingerprint, when the model can be loaded here (None otherwise)."""
    from dynlen.bench.model_io import load_qa_model, weights_fingerprint

    try:
        return weights_fingerprint(load_qa_model(model))
    except UserError:
        return None


# the self-contained modeling file an export carries, and the class its auto_map names
MODELING_FILE = Path(importlib.util.find_spec("dynlen.bench.modeling_dynlen").origin)
REMOTE_CLASS = "DynlenBertForQuestionAnswering"


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
    else:
        print(
            f"note: {out} loads as the stock model outside dynlen: the self-contained drop runs "
            f"BERT-layout models under attention or lookahead selection, not {model.config.model_type} "
            f"under {LengthConfig.from_dict(record['config']).selection}"
        )
    return out


def serves_itself(model, config: dict) -> bool:
    """Whether the export's own modeling file (``bench/modeling_dynlen.py``) can run this model and selection."""
    selection = LengthConfig.from_dict(config)
    return model.config.model_type == "bert" and selection.significance in ("attention", "lookahead")
