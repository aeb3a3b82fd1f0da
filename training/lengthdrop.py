"""LengthDrop training (Length-Adaptive Transformer, Kim & Cho 2021): ``dynlen lengthdrop``.

A model fine-tuned at full length degrades quickly when later layers see fewer tokens, so the
search finds little worth keeping. LengthDrop continues fine-tuning with randomly shortened
forward passes so that one set of weights works across many length configurations.

Every step follows the sandwich rule with in-place distillation: the full model learns from
the labels (plus, optionally, a larger teacher), and the smallest sub-model and a few random
ones learn to match the full model's own start/end distributions. Their losses are summed into
one loss, so one backward pass and one optimizer step serve them all.

The run is a ``transformers.Trainer`` (:mod:`training.trainer`, shared with standard
fine-tuning) whose :meth:`LengthDropLoss.compute_loss` is the sandwich step: AdamW without decay
on biases and norms, the linear schedule, clipping at norm 1, bf16 mixed precision where the
hardware has it and the checkpoints in OUT/checkpoints all come from the Trainer. A killed run
re-run with the same options resumes from the last checkpoint with the same batches, the same
dropout and the same sub-models (drawn from (seed, step) alone), so the end result equals an
uninterrupted run. An output folder whose ``training.json`` records the same recipe is left alone.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dynlen.atomic import writable_folder, write_text_atomic
from dynlen.bench.features import Features, cached_features
from dynlen.bench.model_io import check_vocabulary_fits, load_qa_model, load_tokenizer
from dynlen.bench.squad import load_squad
from dynlen.engine.adaptive import LengthAdaptiveQA, reached_last_layer
from dynlen.engine.config import LengthConfig, cumulative_ratios, parse_selection
from dynlen.engine.probes import CONFIG_KEY as PROBES_CONFIG_KEY
from dynlen.engine.probes import DEFAULT_WIDTH, LookaheadProbes, load_probes
from dynlen.engine.significance import SELECTION_HELP
from dynlen.errors import UserError
from dynlen.options import flag, int_at_least, option, same_option
from dynlen.training.recipe import (
    TrainingRecipe,
    already_built,
    attention_dropout_option,
    check_attention_dropout,
    training_device,
)
from dynlen.training.trainer import (
    checkpoint_folder,
    final_loss,
    last_checkpoint,
    make_trainer,
    remove_checkpoints,
    resolve_precision,
    training_arguments,
)

MIN_RATIO = 1e-6  # LengthConfig needs ratios > 0 even after rounding
MAX_FILE_BYTES = 16 * 1024 * 1024  # every file of the saved model folder should stay below this
# While training, the probes ride on the model as a submodule, so that the Trainer's optimizer,
# checkpoints and exact resume cover them; they are detached before the model is saved.
PROBES_ATTR = "dynlen_lookahead_probes"
# The probe supervision the command line picks under a look-ahead policy (``--probe-supervision auto``):
# 0.5 measured flatter than 0 and than 1.0 (docs/results.md, "Token retention"). The recipe's own
# default stays 0, what models trained before the option did.
LOOKAHEAD_SUPERVISION = 0.5
# The run length the command line trains by default (``--max-steps``): 600 steps of 16 features on
# the full train set, about 35 min on a 2-core bf16 CPU, the run of the best measured LengthDrop
# model. A step count rather than an epoch share, so the default does not depend on how many
# features the train set makes.
DEFAULT_MAX_STEPS = 600
AUTO_SUPERVISION = "auto"


def weight_or_auto(text: str) -> float | str:
    """``--probe-supervision``: a weight, or ``auto`` (resolved by the command once the selection is known)."""
    if text == AUTO_SUPERVISION:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a weight such as 0 or 0.5, or 'auto'") from None


@dataclass(frozen=True)
class LengthDropRecipe(TrainingRecipe):
    """Everything that determines the trained weights (the idempotence and resume key).

    The fields it shares with standard fine-tuning are :class:`~training.recipe.TrainingRecipe`'s.
    """

    # About 600 steps of 16 on the full train set, the run ``DEFAULT_MAX_STEPS`` sets on the command
    # line; trained by epochs when no step count is given. Twice the steps with larger drops was no
    # flatter (docs/results.md).
    epochs: float = same_option(TrainingRecipe, "epochs", 0.11)
    learning_rate: float = same_option(TrainingRecipe, "learning_rate", 5e-5)
    teacher: str | None = option(
        None,
        "larger fine-tuned QA model with the same tokenizer; adds KL to its predictions (temperature 1) to the "
        "full model's loss (default: none)",
    )
    bound: float = option(0.2, "largest share of the previous layer's tokens a layer may drop, in [0, 1)")
    num_sub_models: int = option(2, "random sub-models per step, besides the full and the smallest one")
    # The paper's weight is 1. In short runs from a fine-tuned model the sub-models' terms pull the
    # encoder's full-length behaviour down (docs/results.md); a smaller weight trades drop cost for
    # keep-all accuracy.
    sub_model_weight: float = option(1.0, "weight of each sub-model's KL to the full model against the task loss")
    max_steps: int | None = option(
        None,
        "optimiser steps: the run's length and its learning-rate schedule, in place of --epochs (part of the "
        f"recipe; 0: train --epochs instead) (default: {DEFAULT_MAX_STEPS} unless --epochs is given)",
        type=int_at_least(0, " (0: train --epochs instead)"),
    )
    # With a look-ahead policy the probes are created and trained in the same run (KL to the full
    # model's span distributions, on its layer inputs, detached unless probe_supervision > 0), so the
    # encoder learns to answer from the tokens the probes keep.
    significance: str = option(
        "attention",
        "token selection the sub-models train under (a look-ahead one trains the model's probes in the same run): "
        f"{SELECTION_HELP}, so the model trains under the selection it is served with",
    )
    probe_width: int = option(DEFAULT_WIDTH, "hidden units per look-ahead probe", cli=False)
    probe_learning_rate: float = option(2e-3, "the probes' peak learning rate", cli=False)
    probe_first_layer: int = option(
        1, "first layer with a probe (layer 0 reads the embeddings, which have not seen the question)", cli=False
    )
    # 0: the probes read detached states, so they learn to read the encoder and the encoder never
    # learns to be read. > 0: the KL also reaches the layers below each probe, scaled by this weight
    # (deep supervision), so early layers learn to show the answer the last layer will give, which
    # is what the first drops are chosen by.
    probe_supervision: float = option(
        0.0,
        "weight of the probes' KL in the encoder's gradient (0: probes read detached states); auto: "
        f"{LOOKAHEAD_SUPERVISION:g} under a look-ahead policy (the best measured), 0 otherwise",
        type=weight_or_auto,
    )
    # What the options this version no longer offers always do, for reading stored recipes
    # (``training.recipe.same_recipe``): each sub-model's KL covers only the positions it kept to
    # the last layer (restored states then get no gradient; it measured better than every position),
    # the probes start from the start model's saved ones when they fit, no layer is bypassed, and
    # the smallest sub-model is the sandwich's own.
    RETIRED = {"sub_model_loss": "kept", "probe_init": "saved", "layerdrop": 0.0, "target_config": None}

    def check(self) -> None:
        """Reject options that would only fail (or silently do nothing) hours later, naming each by its flag."""
        name = functools.partial(flag, LengthDropRecipe)
        if not 0.0 <= self.bound < 1.0:
            raise UserError(
                f"{name('bound')} must be in [0, 1): the share of tokens a layer may drop; got {self.bound:g}"
            )
        check_attention_dropout(self.attention_dropout)
        for field_name in (
            "sub_model_weight",
            "num_sub_models",
            "probe_width",
            "probe_first_layer",
            "probe_supervision",
        ):
            if getattr(self, field_name) < 0:
                raise UserError(f"{name(field_name)} must be 0 or more; got {getattr(self, field_name):g}")
        if self.batch_size < 1:
            raise UserError(f"{name('batch_size')} must be at least 1; got {self.batch_size}")
        if self.epochs <= 0 and not self.max_steps:
            raise UserError(f"{name('epochs')} must be positive; got {self.epochs:g}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError(f"{name('max_steps')} must be at least 1; got {self.max_steps}")
        for field_name in ("learning_rate", "probe_learning_rate"):
            if getattr(self, field_name) <= 0:
                raise UserError(f"{name(field_name)} must be positive; got {getattr(self, field_name):g}")
        from dynlen.engine.significance import POLICIES

        policy, _ = parse_selection(self.significance)
        if policy not in POLICIES:
            raise UserError(
                f"{name('significance')} {self.significance!r}: unknown policy; choose one of "
                f"{', '.join(sorted(POLICIES))} (optionally with +question)"
            )
        if self.probe_supervision and not self.trains_probes:
            raise UserError(
                f"{name('probe_supervision')} needs look-ahead probes to supervise: train under a lookahead policy "
                f"({name('significance')} lookahead+question)"
            )

    @property
    def trains_probes(self) -> bool:
        """Whether the sub-models select with look-ahead probes, which this run then trains."""
        return "lookahead" in parse_selection(self.significance)[0]


# --- sub-model sampling ---------------------------------------------------------------------
def smallest_config(num_layers: int, bound: float, full_layers: int = 0) -> LengthConfig:
    """The lower slice of the sandwich: every layer keeps (1 - bound) of what the previous one kept.

    The first ``full_layers`` layers keep every token (layers the look-ahead probes do not cover).
    """
    return cumulative_ratios([1.0] * full_layers + [1.0 - bound] * (num_layers - full_layers), MIN_RATIO)


def random_config(num_layers: int, bound: float, rng: random.Random, full_layers: int = 0) -> LengthConfig:
    """A LengthDrop sample: each layer keeps a uniform share in [1 - bound, 1] of the previous layer."""
    shares = [rng.uniform(1.0 - bound, 1.0) for _ in range(num_layers)]
    return cumulative_ratios([1.0] * full_layers + shares[full_layers:], MIN_RATIO)


def sub_model_configs(
    num_layers: int, bound: float, count: int, seed: int, step: int, full_layers: int = 0
) -> list[LengthConfig]:
    """The smallest sub-model plus ``count`` random ones.

    Drawn from (seed, step) alone, so a resumed run redraws exactly the sub-models it lost.
    """
    rng = random.Random(f"lengthdrop:{seed}:{step}")
    lower = smallest_config(num_layers, bound, full_layers)
    return [lower] + [random_config(num_layers, bound, rng, full_layers) for _ in range(count)]


# --- losses ---------------------------------------------------------------------------------
def mask_padding(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Padding must get no probability mass; half of the dtype's minimum stays finite after log_softmax."""
    return logits.masked_fill(~attention_mask.bool(), torch.finfo(logits.dtype).min / 2)


def span_task_loss(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    attention_mask: torch.Tensor,
    start_positions: torch.Tensor,
    end_positions: torch.Tensor,
) -> torch.Tensor:
    """Mean of the start and end cross-entropies, as the stock QA head computes it, with padding excluded."""
    start = F.cross_entropy(mask_padding(start_logits, attention_mask), start_positions)
    end = F.cross_entropy(mask_padding(end_logits, attention_mask), end_positions)
    return (start + end) / 2


def span_kl(
    student: tuple[torch.Tensor, torch.Tensor],
    teacher: tuple[torch.Tensor, torch.Tensor],
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """KL(teacher || student) of the start and end distributions, averaged; the teacher gets no gradient."""
    total = student[0].new_zeros(())
    for s_logits, t_logits in zip(student, teacher):
        log_student = F.log_softmax(mask_padding(s_logits, attention_mask), dim=-1)
        target = F.softmax(mask_padding(t_logits.detach(), attention_mask), dim=-1)
        total = total + F.kl_div(log_student, target, reduction="batchmean")
    return total / 2


# --- one step -------------------------------------------------------------------------------
@dataclass
class StepLosses:
    """The parts of one step's loss, detached: logged by the Trainer and recorded in training.json."""

    task: torch.Tensor
    teacher_kl: torch.Tensor | None = None
    sub_kl: list[torch.Tensor] = field(default_factory=list)
    probe_kl: torch.Tensor | None = None


def teacher_logits(teacher: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's start/end logits, cloned out of inference mode so the KL can keep them for backward."""
    with torch.inference_mode():
        out = teacher(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
        )
    return out.start_logits.clone(), out.end_logits.clone()


def sandwich_loss(
    qa: LengthAdaptiveQA,
    batch: dict[str, torch.Tensor],
    configs: Sequence[LengthConfig],
    teacher: nn.Module | None = None,
    probes: LookaheadProbes | None = None,
    sub_model_weight: float = 1.0,
    probe_supervision: float = 0.0,
) -> tuple[torch.Tensor, StepLosses]:
    """The full model's task loss (plus its KL to the teacher) plus each sub-model's KL to the full model.

    Each sub-model's KL counts ``sub_model_weight`` times (the logged ``sub_kl`` stay unweighted).
    It covers only the positions the sub-model computed on through its last layer, against the
    full model's distribution renormalised over them, so restored states get no gradient: a dropped
    token's logits come from its restored early-layer state, and matching them pulls the early
    layers and the span head towards answering from shallow states, which the full model then pays
    for (docs/results.md, "Why keep-all falls").

    The sub-models' target is the full model's detached logits, so the gradient of the sum is
    the sum of the separate backward passes of the paper's training loop. All forwards' graphs
    are alive until the caller's backward: more memory than one backward per forward, though
    every sub-model runs on fewer tokens than the full model.

    With ``probes``, the full pass also returns every layer's input and each probe adds its KL to
    the full model's detached span distributions: the probes learn to predict the answer, and
    their ranking (not differentiable) steers the sub-models. The states they read are detached
    at ``probe_supervision`` 0; above 0 the KL reaches the encoder too, scaled by it.
    """
    inputs = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    mask = batch["attention_mask"]
    if probes is None:
        full = qa(*inputs)
    else:  # the stock forward: keep-all gives the same logits, and it hands out the layer inputs
        full = qa.model(input_ids=inputs[0], attention_mask=mask, token_type_ids=inputs[2], output_hidden_states=True)
    task = span_task_loss(full.start_logits, full.end_logits, mask, batch["start_positions"], batch["end_positions"])
    loss, losses = task, StepLosses(task=task.detach())
    if probes is not None:
        probe_kl = probe_loss(probes, full.hidden_states, (full.start_logits, full.end_logits), mask, probe_supervision)
        loss = loss + probe_kl
        losses.probe_kl = probe_kl.detach()
    if teacher is not None:
        kd = span_kl((full.start_logits, full.end_logits), teacher_logits(teacher, batch), mask)
        loss = loss + kd
        losses.teacher_kl = kd.detach()
    target = (full.start_logits.detach(), full.end_logits.detach())
    for config in configs:
        out = qa(*inputs, config=config, trace=True)
        covered = reached_last_layer(out, mask)
        kl = span_kl((out.start_logits, out.end_logits), target, covered)
        loss = loss + sub_model_weight * kl
        losses.sub_kl.append(kl.detach())
    return loss, losses


def probe_loss(
    probes: LookaheadProbes,
    hidden_states: Sequence[torch.Tensor],
    target: tuple[torch.Tensor, torch.Tensor],
    attention_mask: torch.Tensor,
    supervision: float = 0.0,
) -> torch.Tensor:
    """Sum over the probed layers of KL(full model's span distributions || the probe's).

    The probes get the whole gradient; the states they read pass ``supervision`` times it on to the
    encoder (0: detached).
    """
    total = target[0].new_zeros((), dtype=torch.float32)
    for layer in probes.layer_ids:
        logits = probes(layer, scale_gradient(hidden_states[layer], supervision))
        total = total + span_kl((logits[..., 0].float(), logits[..., 1].float()), target, attention_mask)
    return total


def scale_gradient(tensor: torch.Tensor, weight: float) -> torch.Tensor:
    """``tensor`` unchanged in the forward; the gradient flowing back through it is multiplied by ``weight``."""
    if weight == 0:
        return tensor.detach()
    if weight == 1:
        return tensor
    frozen = tensor.detach()
    return frozen + weight * (tensor - frozen)


class LengthDropLoss:
    """The sandwich step as a Trainer's loss; :func:`lengthdrop_trainer` mixes it into ``transformers.Trainer``.

    ``compute_loss`` draws the step's sub-models from (seed, global step), runs them and the full
    model through :class:`~dynlen.engine.adaptive.LengthAdaptiveQA` on the Trainer's model under its
    autocast, and returns :func:`sandwich_loss`. The parts of the loss are logged next to the
    Trainer's ``loss``: ``task_loss``, ``sub_model_kl`` (mean over the sub-models) and ``teacher_kl``.
    """

    loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides it over accumulation steps

    def __init__(
        self,
        *args,
        recipe: LengthDropRecipe,
        teacher: nn.Module | None = None,
        sep_token_id: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.recipe, self.teacher, self.sep_token_id = recipe, teacher, sep_token_id
        self._qa: LengthAdaptiveQA | None = None
        self._window: dict[str, tuple[torch.Tensor, int]] = {}  # sums and counts since the last log

    def adaptive(self, model: nn.Module) -> LengthAdaptiveQA:
        """The length-adaptive view of the (unwrapped) model being trained; it shares the model's weights."""
        inner = self.accelerator.unwrap_model(model)
        if self._qa is None or self._qa.model is not inner:
            probes = getattr(inner, PROBES_ATTR, None)
            self._qa = LengthAdaptiveQA(inner, kernels=False, probes=probes, sep_token_id=self.sep_token_id)
        return self._qa

    def create_optimizer(self, model=None):
        """The Trainer's AdamW, with the probes (if any) in a group of their own at the probe learning rate."""
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        probes = getattr(self.accelerator.unwrap_model(self.model), PROBES_ATTR, None)
        if probes is None:
            return optimizer
        ids = {id(p) for p in probes.parameters()}
        for group in optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in ids]
        optimizer.add_param_group(
            {"params": list(probes.parameters()), "lr": self.recipe.probe_learning_rate, "weight_decay": 0.01}
        )
        return optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        qa, r, step = self.adaptive(model), self.recipe, self.state.global_step
        policy, keep_question = parse_selection(r.significance)
        full_layers = r.probe_first_layer if r.trains_probes else 0  # no probe there: nothing to select by
        configs = [
            c.with_selection(policy, keep_question)
            for c in sub_model_configs(qa.num_layers, r.bound, r.num_sub_models, r.seed, step, full_layers)
        ]
        with self.accelerator.autocast():
            loss, losses = sandwich_loss(
                qa, inputs, configs, self.teacher, qa.probes, r.sub_model_weight, r.probe_supervision
            )
        self._remember(losses)
        return (loss, losses) if return_outputs else loss

    def _remember(self, losses: StepLosses) -> None:
        parts = {"task_loss": losses.task}
        if losses.sub_kl:
            parts["sub_model_kl"] = torch.stack(losses.sub_kl).mean()
        if losses.teacher_kl is not None:
            parts["teacher_kl"] = losses.teacher_kl
        if losses.probe_kl is not None:
            parts["probe_kl"] = losses.probe_kl
        for key, value in parts.items():
            total, count = self._window.get(key, (0.0, 0))
            self._window[key] = (total + value.float(), count + 1)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            for key, (total, count) in self._window.items():
                logs[key] = round((total / count).item(), 4)
            self._window = {}
        super().log(logs, start_time)


@functools.cache
def lengthdrop_trainer() -> type:
    """``transformers.Trainer`` with LengthDrop's loss, assembled on first use: importing the Trainer takes seconds."""
    from transformers import Trainer

    return type("LengthDropTrainer", (LengthDropLoss, Trainer), {"__doc__": LengthDropLoss.__doc__})


def last_logged(trainer, key: str) -> float | None:
    """The last value the Trainer logged under ``key`` (a mean over its logging window)."""
    values = [entry[key] for entry in trainer.state.log_history if key in entry]
    return values[-1] if values else None


# --- teacher --------------------------------------------------------------------------------
def check_same_vocab(student_tokenizer, teacher_tokenizer, teacher_name: str) -> None:
    """Distillation compares distributions position by position, which only means something on identical tokens."""
    student, teacher = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if student == teacher:
        return
    only_student = len(student.keys() - teacher.keys())
    only_teacher = len(teacher.keys() - student.keys())
    moved = sum(1 for token in student.keys() & teacher.keys() if student[token] != teacher[token])
    raise UserError(
        f"teacher {teacher_name} uses a different vocabulary than the student ({len(teacher)} vs {len(student)} "
        f"tokens; {only_student} only in the student, {only_teacher} only in the teacher, {moved} with other ids). "
        "Distillation compares start/end distributions token by token, so the teacher must share the student's "
        "tokenizer: pick a teacher fine-tuned from the same tokenizer family"
    )


def load_teacher(name: str, device: torch.device) -> nn.Module:
    """The frozen teacher, in eval mode (check its vocabulary first with :func:`check_same_vocab`)."""
    teacher = load_qa_model(name).to(device).eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


# --- the run --------------------------------------------------------------------------------
def _warn_big_files(out: Path) -> None:
    """save_pretrained cannot split one tensor, so a large embedding matrix can exceed the limit: say so."""
    for path in sorted(out.iterdir()):
        if path.is_file() and path.stat().st_size > MAX_FILE_BYTES:
            print(
                f"warning: {path} is {path.stat().st_size / 2**20:.1f} MiB (one tensor larger than a shard)",
                file=sys.stderr,
            )


def attach_probes(model: nn.Module, recipe: LengthDropRecipe) -> tuple[LookaheadProbes, str]:
    """Probes for layers ``probe_first_layer``.. of ``model``, riding on the model; and where they came from.

    With probes saved with the start model that cover exactly these layers at this width, training
    starts from those (``"saved"``: their ranking is sensible from the first step, so the
    sub-models never train on randomly chosen tokens); otherwise from new probes seeded by the
    recipe (``"fresh"``).
    """
    layers = model.config.num_hidden_layers
    if recipe.probe_first_layer >= layers:
        raise UserError(
            f"{flag(LengthDropRecipe, 'probe_first_layer')} {recipe.probe_first_layer} is past the model's {layers} layers"
        )
    wanted = list(range(recipe.probe_first_layer, layers))
    saved = load_probes(model)
    if saved is not None and saved.layer_ids == wanted and saved.width == recipe.probe_width:
        probes, origin = saved.float(), "saved"
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            probes = LookaheadProbes(model.config.hidden_size, wanted, recipe.probe_width)
        origin = "fresh"
    model.add_module(PROBES_ATTR, probes)
    return probes, origin


def _finish(out: Path, recipe: LengthDropRecipe, model: nn.Module, tokenizer, info: dict) -> None:
    """Model first, then its probes, training.json next (it marks the folder complete), checkpoints removed last."""
    model.eval()
    probes = getattr(model, PROBES_ATTR, None)
    if probes is not None:
        delattr(model, PROBES_ATTR)
    if hasattr(model.config, PROBES_CONFIG_KEY):  # the start model's probes do not fit the new weights
        delattr(model.config, PROBES_CONFIG_KEY)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size="15MB")
    tokenizer.save_pretrained(out)
    if probes is not None:
        probes.save(out, {"trained_with": "lengthdrop", "final_probe_kl": info.get("final_probe_kl")})
    write_text_atomic(
        out / "training.json", json.dumps({"recipe": asdict(recipe), "method": "lengthdrop", **info}, indent=2)
    )
    remove_checkpoints(out)
    _warn_big_files(out)


def _load_features(recipe: LengthDropRecipe, tokenizer) -> Features:
    data = load_squad(recipe.train)
    feats = cached_features(data, tokenizer, recipe.max_length, recipe.stride, with_labels=True)
    if len(feats) == 0:
        raise UserError(f"{recipe.train} gave no training features")
    return feats


def _one_process() -> None:
    """The sub-models run beside DistributedDataParallel's forward, which would leave their gradients unsynced."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        raise UserError(
            f"LengthDrop trains in one process (this launch has {world}); run it without torchrun or accelerate launch"
        )


def train_lengthdrop(recipe: LengthDropRecipe, out: Path, save_every: int = 200, threads: int | None = None) -> Path:
    """Train on ``transformers.Trainer`` (resuming from OUT/checkpoints, or skipping when built) and save a HF folder."""
    recipe.check()
    if save_every < 1:
        raise UserError(f"save_every must be at least 1; got {save_every}")
    if already_built(out, recipe):
        remove_checkpoints(out)
        print(f"{out} already holds a model trained with this recipe; nothing to do (delete it to rebuild)")
        return out
    _one_process()
    writable_folder(out)  # checkpoints go there: a read-only or full disk is found now, not after the first save
    device = training_device()
    precision = resolve_precision(recipe.precision, device)
    if threads:
        torch.set_num_threads(threads)
    tokenizer = load_tokenizer(recipe.base)
    if recipe.teacher:
        check_same_vocab(tokenizer, load_tokenizer(recipe.teacher), recipe.teacher)
    dropout = attention_dropout_option(recipe.base, recipe.attention_dropout)
    model = load_qa_model(
        recipe.base, config_options=dropout
    )  # first: a model or its saved probes that cannot load fail before encoding
    check_vocabulary_fits(tokenizer, model, recipe.base)
    folder = checkpoint_folder(out, recipe)
    probe_origin = attach_probes(model, recipe)[1] if recipe.trains_probes else None
    feats = _load_features(recipe, tokenizer)
    teacher = load_teacher(recipe.teacher, device) if recipe.teacher else None
    args = training_arguments(folder, recipe, precision, device, recipe.max_steps, save_every)
    trainer = make_trainer(
        model,
        args,
        feats,
        tokenizer.pad_token_id or 0,
        lengthdrop_trainer(),
        recipe=recipe,
        teacher=teacher,
        sep_token_id=tokenizer.sep_token_id,
    )
    resume = last_checkpoint(folder)
    print(
        f"LengthDrop on {recipe.base}: {len(feats)} features, {precision} on {device}, "
        "full model + smallest + "
        f"{recipe.num_sub_models} random sub-models per step (bound {recipe.bound:g}, "
        f"selecting by {recipe.significance}"
        + (f", probes ({probe_origin}) trained alongside" if probe_origin else "")
        + ")"
        + (f", teacher {recipe.teacher}" if teacher is not None else "")
        + (f"; resuming from {resume}" if resume else ""),
        flush=True,
    )
    started = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    minutes = (time.time() - started) / 60
    info = {
        "precision": precision,
        "steps": trainer.state.global_step,
        "features": len(feats),
        "minutes_this_run": round(minutes, 1),
        "resumed_from": Path(resume).name if resume else None,
        "samples_per_second": round(result.metrics.get("train_samples_per_second", 0.0), 2),
        "device": str(device),
        "final_loss": final_loss(trainer),
        "final_task_loss": last_logged(trainer, "task_loss"),
        "final_sub_model_kl": last_logged(trainer, "sub_model_kl"),
    }
    if teacher is not None:
        info["final_teacher_kl"] = last_logged(trainer, "teacher_kl")
    if recipe.trains_probes:
        info["final_probe_kl"] = last_logged(trainer, "probe_kl")
        info["probes_started_from"] = probe_origin
    _finish(out, recipe, trainer.model.float(), tokenizer, info)
    print(f"saved {out} after {trainer.state.global_step} steps ({minutes:.1f} min in this run)", flush=True)
    return out
