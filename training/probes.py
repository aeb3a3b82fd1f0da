"""Train a QA model's look-ahead probes (``dynlen.engine.probes``) with its encoder frozen.

Each probe learns, from its layer's input hidden states, the full model's *final* start/end
distributions (KL divergence, no labels needed), so the probes rank tokens by what the last layer
will want. The encoder runs once over the training features (keep-all, no gradients), its hidden
states are kept in memory as float16, and the probes train on them for a few passes: minutes on a
2-core CPU for a 6-layer model. Only SQuAD *train* data is used, never dev.

Two options change the target: a temperature above 1 softens the final distributions (the KL
printed is then to the softened target, so it is not comparable across temperatures), and a gold
weight adds the cross-entropy of the train set's answer span, for probes that learn the answer and
not only the model's guess of it.
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
from dynlen.bench.model_io import check_model_source, load_qa_model, load_tokenizer
from dynlen.bench.squad import SquadData, load_squad
from dynlen.engine.probes import CONFIG_KEY, DEFAULT_WIDTH, LookaheadProbes
from dynlen.engine.significance import question_segment
from dynlen.errors import UserError

FULL_TRAIN_SET = "../shared/data/squad/train-v1.1.json"  # the probes sample it; the model's own recipe may use less


@dataclass(frozen=True)
class ProbeRecipe:
    """Everything the probes depend on; stored in the model's config entry, so a re-run is idempotent."""

    train: str
    features: int = 3000
    width: int = DEFAULT_WIDTH
    match_heads: int = 0  # > 0: each probe also matches tokens against the question (dynlen.engine.probes)
    first_layer: int = 1  # layer 0 reads the embeddings, which have not seen the question
    epochs: int = 4
    learning_rate: float = 2e-3
    batch_size: int = 32
    seed: int = 0
    temperature: float = 1.0  # > 1 softens the model's final distributions the probes learn
    gold_weight: float = 0.0  # weight of the gold span's cross-entropy beside the KL (0: no labels)

    def check(self) -> None:
        for name in ("features", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.width < 0 or self.first_layer < 0 or self.match_heads < 0 or self.learning_rate <= 0:
            raise UserError("--width, --match-heads and --first-layer must be >= 0 and --lr > 0")
        if self.temperature <= 0 or self.gold_weight < 0:
            raise UserError(
                f"--temperature must be > 0 and --gold-weight >= 0, got {self.temperature} and {self.gold_weight}"
            )
        if self.match_heads and not self.width:
            raise UserError("--match-heads needs a hidden layer: pass --width > 0")

    def same_as(self, stored: object) -> bool:
        """Whether a stored recipe is this one, reading options it predates as their defaults."""
        if not isinstance(stored, dict):
            return False
        try:
            return asdict(ProbeRecipe(**stored)) == asdict(self)
        except TypeError:  # an option this version no longer knows
            return False


def _masked_log_softmax(logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(~valid, torch.finfo(logits.dtype).min).log_softmax(dim=-1)


@dataclass
class _Batch:
    hidden: torch.Tensor  # (layers, batch, tokens, hidden) float16
    valid: torch.Tensor  # (batch, tokens)
    question: torch.Tensor  # (batch, tokens) [CLS] question [SEP]
    start: torch.Tensor  # (batch, tokens) target log-probabilities
    end: torch.Tensor
    gold_start: torch.Tensor  # (batch,) the gold span's token positions ([CLS] when not in the window)
    gold_end: torch.Tensor


def _sample(data: SquadData, count: int, seed: int) -> SquadData:
    """``count`` questions drawn at random (seeded) from the whole file, so every article is represented."""
    examples = list(data.examples)
    random.Random(seed).shuffle(examples)
    return SquadData(examples[:count], data.source, f"{data.fingerprint}-probe-sample{count}-{seed}")


def collect(model: nn.Module, tokenizer, data: SquadData, recipe: ProbeRecipe, layers: list[int]) -> list[_Batch]:
    """The frozen model's per-layer input states and final span distributions, batched by length."""
    feats = build_features(_sample(data, recipe.features, recipe.seed).examples, tokenizer, with_labels=True)
    order = sorted(range(min(recipe.features, len(feats))), key=lambda i: len(feats.input_ids[i]))
    batches = []
    with torch.inference_mode():
        for k in tqdm(range(0, len(order), recipe.batch_size), desc="encoding train features", unit="batch"):
            chunk = order[k : k + recipe.batch_size]
            b = collate(feats, chunk, tokenizer.pad_token_id or 0)
            gold_start, gold_end = b.pop("start_positions"), b.pop("end_positions")
            out = model(**b, output_hidden_states=True)
            valid = b["attention_mask"].bool()
            hidden = torch.stack([out.hidden_states[i] for i in layers]).half()
            start = _masked_log_softmax(out.start_logits.float() / recipe.temperature, valid)
            end = _masked_log_softmax(out.end_logits.float() / recipe.temperature, valid)
            question = question_segment(b["input_ids"], tokenizer.sep_token_id)
            batches.append(_Batch(hidden, valid, question, start, end, gold_start, gold_end))
    return batches


def _kl(target: torch.Tensor, logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(target || softmax(logits)) over the real tokens."""
    log_p = _masked_log_softmax(logits, valid)
    return (target.exp() * (target - log_p)).masked_fill(~valid, 0.0).sum(dim=-1).mean()


def _gold(logits: torch.Tensor, batch: _Batch) -> torch.Tensor:
    """Cross-entropy of the gold start and end tokens under the probe's start and end distributions."""
    # clone: the positions were made under inference mode, which autograd refuses as an index
    start = _masked_log_softmax(logits[..., 0], batch.valid).gather(1, batch.gold_start[:, None].clone())
    end = _masked_log_softmax(logits[..., 1], batch.valid).gather(1, batch.gold_end[:, None].clone())
    return -(start + end).mean()


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
                logits = probes(layer, batch.hidden[j].float(), batch.question)
                kl = _kl(batch.start, logits[..., 0], batch.valid) + _kl(batch.end, logits[..., 1], batch.valid)
                loss = loss + kl
                if recipe.gold_weight:
                    loss = loss + recipe.gold_weight * _gold(logits, batch)
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
    num_layers = model.config.num_hidden_layers
    if recipe.first_layer >= num_layers:
        raise UserError(f"--first-layer {recipe.first_layer} is past the model's {num_layers} layers")
    layers = list(range(recipe.first_layer, num_layers))
    batches = collect(model, tokenizer, data, recipe, layers)
    torch.manual_seed(recipe.seed)  # the probes' initial weights too, so one recipe gives one set of probes
    probes = LookaheadProbes(model.config.hidden_size, layers, recipe.width, recipe.match_heads)
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
