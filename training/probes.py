"""Train a QA model's look-ahead probes (``dynlen.engine.probes``) with its encoder frozen.

Each probe learns, from its layer's input hidden states, the full model's *final* start/end
distributions (KL divergence, no labels needed), so the probes rank tokens by what the last layer
will want. The encoder runs once over the training features (keep-all, no gradients), its hidden
states are kept in memory as float16, and the probes train on them for a few passes: minutes on a
2-core CPU for a 6-layer model. Only SQuAD *train* data is used, never dev.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from dynlen.bench.features import build_features, collate
from dynlen.bench.model_io import (
    check_config_json,
    check_model_source,
    check_vocabulary_fits,
    load_qa_model,
    load_tokenizer,
)
from dynlen.bench.squad import SquadData, load_squad
from dynlen.engine.probes import CONFIG_KEY, DEFAULT_WIDTH, LookaheadProbes
from dynlen.errors import UserError
from dynlen.options import flag, option
from dynlen.training.recipe import without_retired

FULL_TRAIN_SET = "../shared/data/squad/train-v1.1.json"  # the probes sample it; the model's own recipe may use less


@dataclass(frozen=True)
class ProbeRecipe:
    """Everything the probes depend on; stored in the model's config entry, so a re-run is idempotent."""

    train: str = option(FULL_TRAIN_SET, "SQuAD 1.1 training JSON (never the dev set)")
    features: int = option(3000, "training features sampled", cli=False)
    width: int = option(DEFAULT_WIDTH, "probe hidden width (0: linear)", cli=False)
    first_layer: int = option(
        1, "first probed layer, 0-based (layer 0 reads the embeddings, which have not seen the question)", cli=False
    )
    epochs: int = option(4, "passes over the sampled features", cli=False)
    learning_rate: float = option(2e-3, "probe learning rate", cli=False)
    batch_size: int = option(32, "features per step", cli=False)
    seed: int = option(0, "seeds the feature sample, its order and the probes' initial weights", cli=False)

    # What the options this version no longer offers always do: the probes learn the model's own
    # final distributions as they are (no temperature, no gold-span term) from its states alone.
    RETIRED = {"match_heads": 0, "temperature": 1.0, "gold_weight": 0.0}

    def check(self) -> None:
        for name in ("features", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{flag(ProbeRecipe, name)} must be at least 1, got {getattr(self, name)}")
        for name in ("width", "first_layer"):
            if getattr(self, name) < 0:
                raise UserError(f"{flag(ProbeRecipe, name)} must be 0 or more, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise UserError(f"{flag(ProbeRecipe, 'learning_rate')} must be positive, got {self.learning_rate:g}")

    def same_as(self, stored: object) -> bool:
        """Whether a stored recipe is this one, reading options it lacks as their defaults."""
        if not isinstance(stored, dict):
            return False
        current = without_retired(stored, self.RETIRED)
        if current is None:
            return False
        try:
            return asdict(ProbeRecipe(**current)) == asdict(self)
        except TypeError:  # an option this version no longer knows
            return False


def _masked_log_softmax(logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(~valid, torch.finfo(logits.dtype).min).log_softmax(dim=-1)


@dataclass
class _Batch:
    hidden: torch.Tensor  # (layers, batch, tokens, hidden) float16
    valid: torch.Tensor  # (batch, tokens)
    start: torch.Tensor  # (batch, tokens) target log-probabilities
    end: torch.Tensor


def _sample(data: SquadData, count: int, seed: int) -> SquadData:
    """``count`` questions drawn at random (seeded) from the whole file, so every article is represented."""
    examples = list(data.examples)
    random.Random(seed).shuffle(examples)
    return SquadData(examples[:count], data.source, f"{data.fingerprint}-probe-sample{count}-{seed}")


def collect(model: nn.Module, tokenizer, data: SquadData, recipe: ProbeRecipe, layers: list[int]) -> list[_Batch]:
    """The frozen model's per-layer input states and final span distributions, batched by length."""
    feats = build_features(_sample(data, recipe.features, recipe.seed).examples, tokenizer)
    order = sorted(range(min(recipe.features, len(feats))), key=lambda i: len(feats.input_ids[i]))
    batches = []
    with torch.inference_mode():
        for k in tqdm(range(0, len(order), recipe.batch_size), desc="encoding train features", unit="batch"):
            chunk = order[k : k + recipe.batch_size]
            b = collate(feats, chunk, tokenizer.pad_token_id or 0)
            out = model(**b, output_hidden_states=True)
            valid = b["attention_mask"].bool()
            hidden = torch.stack([out.hidden_states[i] for i in layers]).half()
            start = _masked_log_softmax(out.start_logits.float(), valid)
            end = _masked_log_softmax(out.end_logits.float(), valid)
            batches.append(_Batch(hidden, valid, start, end))
    return batches


def _kl(target: torch.Tensor, logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(target || softmax(logits)) over the real tokens."""
    log_p = _masked_log_softmax(logits, valid)
    return (target.exp() * (target - log_p)).masked_fill(~valid, 0.0).sum(dim=-1).mean()


def fit(probes: LookaheadProbes, batches: list[_Batch], recipe: ProbeRecipe) -> list[float]:
    """Train every layer's probe on its own states; returns the last pass's KL per layer (nats)."""
    torch.manual_seed(recipe.seed)
    optimizer = torch.optim.AdamW(probes.parameters(), lr=recipe.learning_rate, weight_decay=0.01)
    steps = recipe.epochs * len(batches)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.learning_rate, total_steps=steps, pct_start=0.1)
    rng = random.Random(recipe.seed)
    last = [0.0] * len(probes.layer_ids)
    probes.train()
    bar = tqdm(total=steps, desc="training probes", unit="step")
    for _ in range(recipe.epochs):
        totals = [0.0] * len(probes.layer_ids)
        for k in rng.sample(range(len(batches)), len(batches)):
            batch = batches[k]
            loss = torch.zeros(())
            for j, layer in enumerate(probes.layer_ids):
                logits = probes(layer, batch.hidden[j].float())
                kl = _kl(batch.start, logits[..., 0], batch.valid) + _kl(batch.end, logits[..., 1], batch.valid)
                loss = loss + kl
                totals[j] += float(kl.detach())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update()
        last = [t / len(batches) for t in totals]
        bar.set_postfix(kl=" ".join(f"{x:.2f}" for x in last))
    bar.close()
    return last


def train_probes(model_dir: str, recipe: ProbeRecipe, retrain: bool = False, out: str | None = None) -> dict:
    """Train and save the probes into ``model_dir``, or into ``out``: a new folder that gets a copy of the
    model and its tokenizer beside the probes, for a model whose own folder is read-only or on the hub.
    A folder whose probes came from this recipe is left alone."""
    recipe.check()
    folder = Path(out or model_dir)
    check_probe_target(model_dir, folder, copy=out is not None)
    done = _already_trained(folder, recipe, retrain)
    if done is not None:
        return done
    started = time.perf_counter()
    data = load_squad(recipe.train)
    tokenizer, model = load_tokenizer(model_dir), load_qa_model(model_dir).eval()
    check_vocabulary_fits(tokenizer, model, str(model_dir))
    num_layers = model.config.num_hidden_layers
    if recipe.first_layer >= num_layers:
        raise UserError(
            f"{flag(ProbeRecipe, 'first_layer')} {recipe.first_layer} is past the model's {num_layers} layers"
        )
    layers = list(range(recipe.first_layer, num_layers))
    batches = collect(model, tokenizer, data, recipe, layers)
    torch.manual_seed(recipe.seed)  # the probes' initial weights too, so one recipe gives one set of probes
    probes = LookaheadProbes(model.config.hidden_size, layers, recipe.width)
    kl = fit(probes, batches, recipe)
    provenance = {
        "recipe": asdict(recipe),
        "kl_nats_per_layer": [round(x, 4) for x in kl],
        "minutes": round((time.perf_counter() - started) / 60, 2),
    }
    if out is not None:
        provenance["probed_model"] = model_dir
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    probes.save(folder, provenance)
    print(
        f"{folder}: look-ahead probes for layers {layers[0] + 1}-{layers[-1] + 1} saved; final KL per layer "
        + ", ".join(f"{x:.2f}" for x in kl)
        + f" nats; {provenance['minutes']} min"
    )
    if out is not None:
        print(f"{folder} is {model_dir} with its probes: search or serve it with --model {folder}")
    return provenance


def check_probe_target(model_dir: str, folder: Path, copy: bool) -> None:
    """Refuse, before anything loads, a folder the probes cannot be saved into."""
    if not copy:
        if not (folder / "config.json").is_file():
            raise UserError(
                f"{folder} is not a model folder (no config.json); probes are saved beside the weights, "
                "or give --out FOLDER for a copy of a hub or read-only model with its probes"
            )
        check_config_json(folder / "config.json")
        if not os.access(folder, os.W_OK):
            raise UserError(f"{folder} is not writable; give --out FOLDER for a copy of the model with its probes")
        return
    check_model_source(model_dir)
    if folder.exists() and any(folder.iterdir()) and not (folder / "config.json").is_file():
        raise UserError(f"--out {folder} exists and holds no model; give a new folder")
    if folder.resolve() == Path(model_dir).resolve():
        raise UserError("--out is the model's own folder; leave --out out to save the probes there")


def _already_trained(folder: Path, recipe: ProbeRecipe, retrain: bool) -> dict | None:
    """The stored probe entry when ``folder`` already has probes this run would not replace, else None."""
    config = folder / "config.json"
    if not config.is_file():
        return None
    stored = json.loads(config.read_text()).get(CONFIG_KEY, {})
    have_weights = (folder / "lookahead_probes.safetensors").is_file()
    if recipe.same_as(stored.get("recipe")) and have_weights:
        print(f"{folder}: look-ahead probes already trained with this recipe; nothing to do")
        return stored
    if stored.get("trained_with") == "lengthdrop" and have_weights and not retrain:
        print(
            f"{folder}: look-ahead probes were trained with the model (LengthDrop); nothing to do (--retrain replaces them)"
        )
        return stored
    return None
