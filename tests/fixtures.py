"""Tiny, self-made test material: a SQuAD-format file, a word-level vocabulary and a random BERT.

Nothing here reads ../shared, the network or a trained model.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

ARTICLES = [
    (
        "Cats",
        [
            (
                "The cat sat on the mat in the small kitchen. It was a black cat with green eyes.",
                [
                    ("q1", "Where did the cat sit?", "on the mat"),
                    ("q2", "What colour was the cat?", "black"),
                    ("q3", "What colour were the eyes of the cat?", "green"),
                ],
            ),
            (
                "A dog named Rex chased the cat across the garden every morning before school.",
                [
                    ("q4", "What was the name of the dog?", "Rex"),
                    ("q5", "When did the dog chase the cat?", "every morning before school"),
                ],
            ),
        ],
    ),
    (
        "Rivers",
        [
            (
                "The long river flows north through three countries before it reaches the cold sea.",
                [
                    ("q6", "Which way does the river flow?", "north"),
                    ("q7", "How many countries does the river cross?", "three"),
                    ("q8", "What does the river reach?", "the cold sea"),
                ],
            ),
        ],
    ),
    (
        "Stars",
        [
            (
                "Stars shine because nuclear fusion in their cores turns hydrogen into helium and light.",
                [
                    ("q9", "Why do stars shine?", "nuclear fusion"),
                    ("q10", "What does fusion turn hydrogen into?", "helium and light"),
                ],
            ),
        ],
    ),
]


def squad_dict() -> dict:
    data = []
    for title, paragraphs in ARTICLES:
        paras = []
        for context, qas in paragraphs:
            items = []
            for qid, question, answer in qas:
                start = context.find(answer)
                assert start >= 0, (qid, answer)
                items.append({"id": qid, "question": question, "answers": [{"text": answer, "answer_start": start}]})
            paras.append({"context": context, "qas": items})
        data.append({"title": title, "paragraphs": paras})
    return {"version": "1.1", "data": data}


def write_squad(path: Path) -> Path:
    path.write_text(json.dumps(squad_dict()))
    return path


def vocabulary() -> dict[str, int]:
    words: list[str] = []
    for _title, paragraphs in ARTICLES:
        for context, qas in paragraphs:
            texts = [context] + [q for _i, q, _a in qas]
            for text in texts:
                for w in re.findall(r"\w+|[^\w\s]", text.lower()):
                    if w not in words:
                        words.append(w)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return {w: i for i, w in enumerate(specials + words)}


def tiny_tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab=vocabulary())


def tiny_bert_config(num_layers: int = 4, hidden: int = 32, heads: int = 4, ffn: int = 64):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(vocabulary()),
        hidden_size=hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=512,
    )


def tiny_bert(attn: str = "sdpa", seed: int = 0, num_layers: int = 4):
    from transformers import BertForQuestionAnswering

    torch.manual_seed(seed)
    return BertForQuestionAnswering._from_config(tiny_bert_config(num_layers), attn_implementation=attn).eval()


def save_tiny_model(folder: Path, seed: int = 0) -> Path:
    """A loadable model folder (weights + tokenizer), like a user's local checkpoint."""
    tiny_bert(seed=seed).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def load_benchmark(name: str):
    """benchmarks/ is a folder of scripts, not a package: load one by path."""
    spec = importlib.util.spec_from_file_location(f"bench_script_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- training runs ------------------------------------------------------------------------------
class KilledAt(Exception):
    """Raised by :func:`kill_after` in place of a kill."""


def kill_after(module, step: int, monkeypatch) -> None:
    """Make ``module``'s next training run die right after the Trainer saved checkpoint ``step``, as a kill would."""
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise KilledAt(step)

    real = module.make_trainer

    def with_kill(*args, **kwargs):
        trainer = real(*args, **kwargs)
        trainer.add_callback(Kill())
        return trainer

    monkeypatch.setattr(module, "make_trainer", with_kill)


def model_weights(folder: Path) -> dict:
    """The state dict of the QA model saved in ``folder``."""
    from transformers import AutoModelForQuestionAnswering

    return AutoModelForQuestionAnswering.from_pretrained(folder).state_dict()


def tiny_recipe(recipe_class, model_dir: Path, squad_file: Path, **overrides):
    """A training recipe for the tiny fixture: 10 questions -> 10 features, batch 4 -> 3 steps per epoch, 6 over 2."""
    options = dict(
        base=str(model_dir),
        train=str(squad_file),
        batch_size=4,
        max_length=64,
        stride=16,
        learning_rate=1e-3,
        warmup=0.0,
        epochs=2.0,
        precision="fp32",
    )
    return recipe_class(**{**options, **overrides})


def scores_at(f1: float, speed: float):
    """A configuration's measurement at ``f1`` and FLOPs speedup ``speed`` (latency 0.8 of it), for frontier tests."""
    from dynlen.bench.measurement import Measurement

    return Measurement(
        exact_match=f1 - 8.0,
        f1=f1,
        gflops_per_question=4.0 / speed,
        flops_speedup_vs_keep_all=speed,
        flops_speedup_vs_bert_base=7.7 * speed,
        latency_speedup_vs_keep_all=speed * 0.8,
        latency_speedup_vs_bert_base=7.0 * speed * 0.8,
        latency_ms=30.0 / speed,
    )
